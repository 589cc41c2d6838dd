import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../../ops/index.js';
import { toHfConfig, type LlamaConfig } from '../../models/index.js';
import { FORMAT_NAME, FORMAT_VERSION } from '../checkpoint/modelDir.js';
import { writeFileAtomic, writeSafetensorsSharded, type TensorToWrite } from '../checkpoint/safetensors.js';

/**
 * Writes a converted model folder (weights, config.json, optional extra files copied from a
 * source folder). It is built in a hidden sibling and renamed at the end, so a failed or killed
 * conversion leaves no half-written model; an existing non-empty folder is refused.
 */
export function writeConvertedModel(
  outDir: string,
  tensors: TensorToWrite[],
  config: Readonly<LlamaConfig>,
  dtype: 'F32' | 'BF16',
  opts: { maxShardBytes?: number; metadata?: Record<string, string>; copy?: { from: string; files: readonly string[] } } = {},
): void {
  if (fs.existsSync(outDir) && fs.readdirSync(outDir).length > 0) throw new CheckpointError(`${outDir} exists and is not empty; choose a new output folder`);
  const parent = path.dirname(path.resolve(outDir));
  fs.mkdirSync(parent, { recursive: true });
  const tmp = path.join(parent, `.${path.basename(outDir)}.tmp-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    writeSafetensorsSharded(tmp, tensors, dtype, { maxShardBytes: opts.maxShardBytes, metadata: { lwm_format: FORMAT_NAME, lwm_format_version: FORMAT_VERSION, ...opts.metadata } });
    writeFileAtomic(path.join(tmp, 'config.json'), JSON.stringify(toHfConfig(config, dtype === 'BF16' ? 'bfloat16' : 'float32'), null, 2) + '\n');
    for (const f of opts.copy?.files ?? []) {
      const src = path.join(opts.copy!.from, f);
      if (fs.existsSync(src)) fs.copyFileSync(src, path.join(tmp, f));
    }
    if (fs.existsSync(outDir)) fs.rmdirSync(outDir);
    fs.renameSync(tmp, outDir);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
