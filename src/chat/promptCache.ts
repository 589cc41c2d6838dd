import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { InputError } from '../../ops/index.js';
import { LowpWeight } from '../../ops/lowp.js';
import { KVCache, type LlamaModel } from '../../models/index.js';
import { readSafetensorsHeader, readTensorF32, readTensorI32, readTensorU8, writeSafetensors, type TensorToWrite } from '../checkpoint/safetensors.js';

const FORMAT = 'lwm-prompt-cache';
const VERSION = '1';

/**
 * Identifies the weights a cache was computed with: the config plus the first values of every
 * tensor (any fine-tuning step changes them), without hashing gigabytes of weights.
 */
export function modelFingerprint(model: LlamaModel): string {
  const h = createHash('sha256').update(JSON.stringify(model.config));
  for (const name of model.params.names().sort()) {
    const t = model.params.weight(name);
    let v: Float32Array;
    if (t instanceof LowpWeight) {
      // The same leading values a float32 copy of the weight would give.
      const k = t.shape[1];
      const rows = new Float32Array(Math.ceil(Math.min(256, t.size) / k) * k);
      for (let r = 0; r * k < rows.length; r++) t.row(r, rows.subarray(r * k, (r + 1) * k));
      v = rows.subarray(0, Math.min(256, t.size));
    } else {
      const head = tf.tidy(() => tf.slice(tf.reshape(t, [-1]), 0, Math.min(256, t.size)));
      v = head.dataSync() as Float32Array;
      head.dispose();
    }
    h.update(`${name}:${t.shape.join('x')}:`).update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
  }
  return h.digest('hex');
}

export interface PromptCacheContents {
  tokens: number[];
  visionMask: boolean[];
  cache: KVCache;
}

/**
 * Saves the KV cache with the tokens it holds (safetensors: k.N/v.N per layer, tokens, vision),
 * written to a temporary name and renamed, so an interrupted save never leaves a broken file.
 */
export function savePromptCache(file: string, model: LlamaModel, cache: KVCache, tokens: readonly number[], visionMask: readonly boolean[]): void {
  if (tokens.length !== cache.length || visionMask.length !== tokens.length) {
    throw new InputError(`savePromptCache: ${tokens.length} tokens and ${visionMask.length} vision flags for a cache of ${cache.length}`);
  }
  if (cache.length === 0) throw new InputError('savePromptCache: the cache is empty; there is nothing to save');
  const entries: TensorToWrite[] = [
    { name: 'tokens', shape: [tokens.length], data: () => Int32Array.from(tokens), dtype: 'I32' },
    { name: 'vision', shape: [tokens.length], data: () => Uint8Array.from(visionMask, (b) => (b ? 1 : 0)), dtype: 'U8' },
  ];
  for (let i = 0; i < cache.numLayers; i++) {
    for (const j of [0, 1]) {
      // One layer's copy at a time, so saving never doubles the cache in memory.
      const data = () => {
        const kv = cache.layer(i);
        if (!kv) throw new InputError(`savePromptCache: layer ${i} has no cached keys`);
        const out = kv[j]!.dataSync() as Float32Array;
        tf.dispose(kv);
        return out;
      };
      entries.push({ name: `${j ? 'v' : 'k'}.${i}`, shape: [1, cache.length, model.config.numKvHeads, model.config.headDim], data, dtype: 'F32' });
    }
  }
  writeSafetensors(file, entries, 'F32', { format: FORMAT, version: VERSION, model: modelFingerprint(model) });
}

/** Reads a prompt cache for this model; a file from other weights or a damaged file is refused. */
export function loadPromptCache(file: string, model: LlamaModel): PromptCacheContents {
  let header;
  try {
    header = readSafetensorsHeader(file);
  } catch (e) {
    throw new InputError(`--prompt-cache ${file}: not a readable prompt cache (${(e as Error).message}); delete it to rebuild it`);
  }
  const meta = header.metadata ?? {};
  if (meta['format'] !== FORMAT) throw new InputError(`--prompt-cache ${file}: not an lwm prompt cache; choose another file name`);
  if (meta['version'] !== VERSION) throw new InputError(`--prompt-cache ${file}: format version ${meta['version']}, this lwm reads ${VERSION}; delete it to rebuild it`);
  if (meta['model'] !== modelFingerprint(model)) throw new InputError(`--prompt-cache ${file}: it was made with other model weights; delete it or choose another file`);
  const get = (name: string) => {
    const e = header.tensors.get(name);
    if (!e) throw new InputError(`--prompt-cache ${file}: tensor '${name}' is missing; delete the file to rebuild it`);
    return e;
  };
  const tokens = Array.from(readTensorI32(get('tokens'), file));
  const visionMask = Array.from(readTensorU8(get('vision'), file), (b) => b !== 0);
  const c = model.config;
  const want = [1, tokens.length, c.numKvHeads, c.headDim];
  const layers: [tf.Tensor4D, tf.Tensor4D][] = [];
  try {
    for (let i = 0; i < c.numLayers; i++) {
      const pair = ['k', 'v'].map((p) => {
        const e = get(`${p}.${i}`);
        if (e.shape.join() !== want.join()) throw new InputError(`--prompt-cache ${file}: ${p}.${i} has shape [${e.shape}], expected [${want}]; delete the file to rebuild it`);
        return tf.tensor4d(readTensorF32(e, file), want as [number, number, number, number]);
      }) as [tf.Tensor4D, tf.Tensor4D];
      layers.push(pair);
    }
  } catch (e) {
    for (const [k, v] of layers) tf.dispose([k, v]);
    throw e;
  }
  try {
    return { tokens, visionMask, cache: KVCache.fromLayers(layers, { dtype: model.kvDtype, capacity: model.kvCapacity }) };
  } finally {
    for (const [k, v] of layers) tf.dispose([k, v]);
  }
}

/** Length of the common start of two token sequences (ids and vision flags both equal). */
export function commonPrefix(a: { tokens: readonly number[]; visionMask: readonly boolean[] }, b: { tokens: readonly number[]; visionMask: readonly boolean[] }): number {
  const n = Math.min(a.tokens.length, b.tokens.length);
  let i = 0;
  while (i < n && a.tokens[i] === b.tokens[i] && a.visionMask[i] === b.visionMask[i]) i++;
  return i;
}
