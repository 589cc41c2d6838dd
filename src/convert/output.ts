import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../../ops/index.js';
import { paramName, toHfConfig, type LlamaConfig } from '../../models/index.js';
import { FORMAT_NAME, FORMAT_VERSION } from '../checkpoint/modelDir.js';
import { fsyncPath, removeStaleTemporaries } from '../checkpoint/files.js';
import { writeFileAtomic, writeSafetensorsSharded, type WriteOptions } from '../checkpoint/safetensors.js';
import type { StorageDtype } from '../checkpoint/dtype.js';
import type { ModelSource } from '../checkpoint/source.js';

/** Files next to the weights that a converted folder keeps (tokenizers, generation defaults). */
export const COPIED_FILES = ['tokenizer.json', 'tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'] as const;

export interface WriteModelOptions extends WriteOptions {
  /** 'lwm': this project's folder (vision tensors included); 'hf': a transformers LlamaForCausalLM folder. */
  layout?: 'lwm' | 'hf';
  dtype: StorageDtype;
  /** Drop the vision embedding and head ('hf' has no place for them, so it needs this for a vision model). */
  textOnly?: boolean;
  maxShardBytes?: number;
  metadata?: Record<string, string>;
}

const VISION_TENSORS: ReadonlySet<string> = new Set([paramName.visionEmbed, paramName.visionHead]);
const TORCH_DTYPE: Readonly<Record<StorageDtype, 'float32' | 'float16' | 'bfloat16'>> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16' };

/**
 * Writes a model source as a folder of config.json + safetensors shards (+ tokenizer files). It is
 * built in a hidden sibling and renamed at the end, so a failed conversion leaves no half-written
 * model; one killed outright leaves only the hidden sibling, which the next run removes.
 */
export function writeModelFolder(outDir: string, src: ModelSource, opts: WriteModelOptions): { tensors: number; bytes: number; files: string[] } {
  const layout = opts.layout ?? 'lwm';
  const vision = src.config.visionVocabSize > 0;
  if (layout === 'hf' && vision && !opts.textOnly) {
    throw new CheckpointError(`${src.name}: is an LWM vision-language model; Hugging Face LlamaForCausalLM has no vision embedding or head, so pass --text-only to export its text part`);
  }
  const drop = vision && opts.textOnly;
  const config: LlamaConfig = drop ? { ...src.config, visionVocabSize: 0 } : { ...src.config };
  const tensors = drop ? src.tensors.filter((t) => !VISION_TENSORS.has(t.name)) : src.tensors;
  const hfConfig = toHfConfig(config, TORCH_DTYPE[opts.dtype]);
  if (layout === 'hf') delete hfConfig.vision_vocab_size;
  const meta = layout === 'hf' ? { ...opts.metadata } : { lwm_format: FORMAT_NAME, lwm_format_version: FORMAT_VERSION, ...opts.metadata };

  if (fs.existsSync(outDir) && fs.readdirSync(outDir).length > 0) throw new CheckpointError(`${outDir} exists and is not empty; choose a new output folder`);
  const parent = path.dirname(path.resolve(outDir));
  fs.mkdirSync(parent, { recursive: true });
  const base = `.${path.basename(outDir)}.tmp-`;
  removeStaleTemporaries(parent, base);
  const tmp = path.join(parent, `${base}${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    const files = writeSafetensorsSharded(tmp, tensors, opts.dtype, { maxShardBytes: opts.maxShardBytes, metadata: meta, onWrite: opts.onWrite, verify: opts.verify });
    writeFileAtomic(path.join(tmp, 'config.json'), JSON.stringify(hfConfig, null, 2) + '\n');
    for (const f of src.tokenizerDir ? COPIED_FILES : []) {
      const from = path.join(src.tokenizerDir!, f);
      if (fs.existsSync(from)) {
        fs.copyFileSync(from, path.join(tmp, f));
        files.push(f);
      }
    }
    fsyncPath(tmp);
    if (fs.existsSync(outDir)) fs.rmdirSync(outDir);
    fs.renameSync(tmp, outDir);
    fsyncPath(parent);
    return { tensors: tensors.length, bytes: outputBytes(src, opts), files: ['config.json', ...files] };
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Bytes of tensor data a writer will produce (GGUF keeps 1-D weights in F32). */
export function outputBytes(src: ModelSource, opts: { dtype: StorageDtype; textOnly?: boolean; gguf?: boolean }): number {
  let n = 0;
  for (const t of src.tensors) {
    if (opts.textOnly && VISION_TENSORS.has(t.name)) continue;
    const size = opts.gguf && t.shape.length === 1 ? 4 : opts.dtype === 'F32' ? 4 : 2;
    n += t.shape.reduce((a, b) => a * b, 1) * size;
  }
  return n;
}
