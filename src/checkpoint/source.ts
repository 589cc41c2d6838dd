import { CheckpointError } from '../../ops/errors.js';
import { resolveConfig, type LlamaConfig } from '../../models/config.js';
import { paramSpecs } from '../../models/params.js';
import { BYTES_PER_ELEMENT, type StorageDtype } from './dtype.js';

/**
 * A model's weights under Hugging Face names and layout, whatever file format holds them: each
 * tensor is read (and widened to float32) only when asked for, so readers and writers of any
 * format meet here without a whole model in memory.
 */
export interface SourceTensor {
  name: string;
  shape: number[];
  /** How the source stores it, so a writer can keep the precision it had. */
  stored: StorageDtype;
  data: () => Float32Array;
  /** The stored bf16 bits, when stored is BF16 (lets a bf16 model load without widening). */
  bf16?: () => Uint16Array;
}

export interface ModelSource {
  config: Readonly<LlamaConfig>;
  /** In paramSpecs order. */
  tensors: SourceTensor[];
  /** A folder that may hold tokenizer files. */
  tokenizerDir?: string;
  /** The model's name for metadata: its folder or file name. */
  name: string;
  /** What it was read from, for messages: 'safetensors', 'PyTorch .bin', 'Jax params (scanned layers)'. */
  format: string;
}

export interface ContextOverrides {
  /** RoPE theta (LWM's Jax checkpoints do not store it). */
  ropeTheta?: number;
  maxSeqLen?: number;
}

export function withOverrides(c: Readonly<LlamaConfig>, o: ContextOverrides, source = 'options'): Readonly<LlamaConfig> {
  if (o.ropeTheta === undefined && o.maxSeqLen === undefined) return c;
  return resolveConfig({ ...c, ...(o.ropeTheta !== undefined ? { ropeTheta: o.ropeTheta } : {}), ...(o.maxSeqLen !== undefined ? { maxSeqLen: o.maxSeqLen } : {}) }, source);
}

/** Where a named weight of a checkpoint lives, as far as matching it to a config needs. */
export interface StoredWeight {
  shape: number[];
  dtype: string;
  file: string;
}

/**
 * Every weight the config needs, in paramSpecs order, checked for presence, shape and a float dtype
 * before anything is read; a weight the config has no place for is refused too (a converter
 * that dropped it would lose data silently). `ignore` names extras that are known to be derived.
 */
export function matchWeights<W extends StoredWeight>(
  where: string,
  weights: ReadonlyMap<string, W>,
  c: Readonly<LlamaConfig>,
  opts: { allowExtra?: boolean; ignore?: (name: string) => boolean } = {},
): { name: string; shape: number[]; weight: W & { dtype: StorageDtype } }[] {
  const specs = paramSpecs(c);
  const out = specs.map((s) => {
    const w = weights.get(s.name);
    if (!w) throw new CheckpointError(`${where}: weight '${s.name}' is missing; the checkpoint does not match its config.json`);
    if (w.shape.length !== s.shape.length || w.shape.some((d, i) => d !== s.shape[i])) {
      throw new CheckpointError(`${w.file}: '${s.name}' has shape [${w.shape.join(', ')}] but config.json implies [${s.shape.join(', ')}]`);
    }
    if (!(w.dtype in BYTES_PER_ELEMENT)) throw new CheckpointError(`${w.file}: '${s.name}' has dtype ${w.dtype}; weights must be F32, F16 or BF16`);
    return { name: s.name, shape: s.shape, weight: w as W & { dtype: StorageDtype } };
  });
  if (!opts.allowExtra) {
    const known = new Set(specs.map((s) => s.name));
    const extra = [...weights.keys()].find((n) => !known.has(n) && !opts.ignore?.(n));
    if (extra) throw new CheckpointError(`${where}: '${extra}' is not a weight of the model its config describes (layers ${c.numLayers}, vision ${c.visionVocabSize > 0}); check config.json`);
  }
  return out;
}

/** The dtype most of the source's values are stored in (matrices outweigh norm vectors). */
export function storedDtype(src: ModelSource): StorageDtype {
  const count = new Map<StorageDtype, number>();
  for (const t of src.tensors) count.set(t.stored, (count.get(t.stored) ?? 0) + t.shape.reduce((a, b) => a * b, 1));
  return [...count.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'F32';
}
