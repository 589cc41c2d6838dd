import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { CheckpointError, ConfigError } from '../../ops/errors.js';
import { fromHfConfig, toHfConfig, type LlamaConfig } from '../../models/config.js';
import { LlamaModel } from '../../models/llama.js';
import { isLinearWeight, ParamStore, paramSpecs, type Weight } from '../../models/params.js';
import { readTensorBf16, readTensorF32, readWeightIndex, writeFileAtomic, writeSafetensorsSharded } from './safetensors.js';
import { LowpWeight } from '../../ops/lowp.js';
import { matchWeights, withOverrides, type ContextOverrides, type ModelSource } from './source.js';

/**
 * This project's checkpoint format: a folder with a Hugging Face-style `config.json` (plus
 * `vision_vocab_size`) and safetensors weights under Hugging Face names, single or sharded.
 */

export const FORMAT_NAME = 'lwm';
export const FORMAT_VERSION = '1';

export function readModelConfig(dir: string): Readonly<LlamaConfig> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw new CheckpointError(`${dir}: no such model folder; pass the folder that holds config.json and *.safetensors`);
  }
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) {
    throw new CheckpointError(`${dir}: missing config.json; this is not a model folder (convert LWM releases with \`lwm convert\`)`);
  }
  return fromHfConfig(readJsonObject(file), file);
}

/** A config file's JSON object, or a one-line ConfigError naming the file. */
export function readJsonObject(file: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    throw new ConfigError(`${file}: not valid JSON`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new ConfigError(`${file}: must hold a JSON object`);
  return json as Record<string, unknown>;
}

/** A folder of config.json + safetensors (this project's format, or a Hugging Face LlamaForCausalLM). */
export function safetensorsSource(dir: string, overrides: ContextOverrides = {}, opts: { allowExtra?: boolean } = {}): ModelSource {
  const config = withOverrides(readModelConfig(dir), overrides);
  const index = readWeightIndex(dir);
  const tensors = matchWeights(dir, index, config, { allowExtra: opts.allowExtra ?? true, ignore: (n) => n.endsWith('rotary_emb.inv_freq') }).map(({ name, shape, weight }) => ({
    name,
    shape,
    stored: weight.dtype,
    data: () => readTensorF32(weight, weight.file),
    ...(weight.dtype === 'BF16' ? { bf16: () => readTensorBf16(weight, weight.file) } : {}),
  }));
  return { config, tensors, tokenizerDir: dir, name: path.basename(path.resolve(dir)), format: 'safetensors' };
}

export type WeightDtype = 'f32' | 'bf16' | 'int8';

export interface LoadOptions extends ContextOverrides {
  /**
   * How linear-layer weights are held: f32 (default; trainable), or bf16 / int8 (inference only:
   * half or a quarter of the memory). Embeddings and norms stay float32.
   */
  dtype?: WeightDtype;
}

/** Loads a model folder; every weight is checked against the config before any is read. */
export function loadModel(dir: string, opts: LoadOptions = {}): LlamaModel {
  const src = safetensorsSource(dir, opts);
  const dtype = opts.dtype ?? 'f32';
  if (!['f32', 'bf16', 'int8'].includes(dtype)) throw new ConfigError(`weight dtype must be f32, bf16 or int8, got ${JSON.stringify(dtype)}`);
  const map = new Map<string, Weight>();
  try {
    for (const t of src.tensors) {
      if (dtype === 'f32' || !isLinearWeight(t.name, t.shape)) map.set(t.name, tf.tensor(t.data(), t.shape, 'float32'));
      else if (dtype === 'bf16' && t.bf16) map.set(t.name, LowpWeight.fromBf16(t.bf16(), [t.shape[0]!, t.shape[1]!]));
      else if (dtype === 'int8' && t.bf16) map.set(t.name, LowpWeight.int8FromBf16(t.bf16(), [t.shape[0]!, t.shape[1]!]));
      else map.set(t.name, LowpWeight.fromFloat32(t.data(), [t.shape[0]!, t.shape[1]!], dtype));
    }
  } catch (err) {
    for (const t of map.values()) t.dispose();
    throw err;
  }
  return new LlamaModel(src.config, new ParamStore(map));
}

export interface SaveOptions {
  dtype?: 'F32' | 'BF16';
  maxShardBytes?: number;
}

/** Writes config.json and the weights; each file lands atomically. */
export function saveModel(dir: string, model: LlamaModel, opts: SaveOptions = {}): string[] {
  const dtype = opts.dtype ?? 'F32';
  fs.mkdirSync(dir, { recursive: true });
  const specs = paramSpecs(model.config);
  const files = writeSafetensorsSharded(
    dir,
    specs.map((s) => ({ name: s.name, shape: s.shape, data: () => model.params.get(s.name).dataSync() as Float32Array })),
    dtype,
    { maxShardBytes: opts.maxShardBytes, metadata: { lwm_format: FORMAT_NAME, lwm_format_version: FORMAT_VERSION } },
  );
  writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify(toHfConfig(model.config, dtype === 'BF16' ? 'bfloat16' : 'float32'), null, 2) + '\n');
  return ['config.json', ...files];
}
