import * as tf from '@tensorflow/tfjs';
import { InputError } from '../../ops/index.js';
import { KVCache, type LlamaModel } from '../../models/index.js';
import { broadcast } from '../distributed/collectives.js';
import type { ProcessGroup } from '../distributed/processGroup.js';

/** Tokens per MLP chunk in the ring prefill: bounds activation memory for a long shard. */
const MLP_CHUNK = 1024;

/**
 * Runs a long prompt once over the ring: every rank takes a contiguous share of the tokens, its
 * attention goes around the ring (RingAttention), and each layer's keys and values of that share
 * are collected. They are then gathered on rank 0, which returns a KV cache of all the tokens
 * (other ranks return null) and can go on decoding alone. Every rank must pass the same tokens.
 */
export async function ringPrefill(model: LlamaModel, group: ProcessGroup, tokens: readonly number[], visionMask?: readonly boolean[]): Promise<KVCache | null> {
  const n = tokens.length;
  const size = group.size;
  if (n < 1) throw new InputError('ringPrefill: no tokens to prefill');
  if (n > model.config.maxSeqLen) throw new InputError(`the document has ${n} tokens but the model's context is ${model.config.maxSeqLen}; pass --truncate or a longer --context`);
  const local = Math.ceil(n / size);
  const lo = group.rank * local;
  // The last share is padded; pads are masked as keys and their rows dropped below.
  const ids: number[] = [];
  const mask: number[] = [];
  const vis: number[] = [];
  for (let i = lo; i < lo + local; i++) {
    ids.push(i < n ? tokens[i]! : 0);
    mask.push(i < n ? 1 : 0);
    vis.push(i < n && visionMask?.[i] ? 1 : 0);
  }
  const c = model.config;
  const row = c.numKvHeads * c.headDim;
  const mine: Float32Array[][] = Array.from({ length: c.numLayers }, () => []);
  tf.tidy(() => {
    model.hidden(tf.tensor2d([ids], [1, local], 'int32'), {
      ring: { group, layout: 'contiguous' },
      attentionMask: tf.tensor2d([mask], [1, local], 'int32'),
      ...(model.isVision ? { visionMask: tf.tensor2d([vis], [1, local], 'int32') } : {}),
      lastOnly: true,
      mlpChunkSize: MLP_CHUNK,
      onKv: (layer, k, v) => {
        mine[layer] = [k.dataSync().slice() as Float32Array, v.dataSync().slice() as Float32Array];
      },
    });
  });
  // Rank r's rows reach rank 0 by a broadcast rooted at r, one layer's k or v at a time.
  const full: Float32Array[][] = group.rank === 0 ? mine.map(() => [new Float32Array(n * row), new Float32Array(n * row)]) : [];
  for (let layer = 0; layer < c.numLayers; layer++) {
    for (const j of [0, 1]) {
      for (let r = 0; r < size; r++) {
        const data = broadcast(group, r === group.rank ? mine[layer]![j]! : new Float32Array(local * row), r);
        if (group.rank === 0) {
          const rows = Math.max(0, Math.min(local, n - r * local));
          full[layer]![j]!.set(data.subarray(0, rows * row), r * local * row);
        }
      }
      mine[layer]![j] = new Float32Array(0);
    }
    // Let the transport's events through between layers.
    await new Promise((res) => setImmediate(res));
  }
  if (group.rank !== 0) return null;
  const layers = full.map(([k, v]) => [tf.tensor4d(k!, [1, n, c.numKvHeads, c.headDim]), tf.tensor4d(v!, [1, n, c.numKvHeads, c.headDim])] as [tf.Tensor4D, tf.Tensor4D]);
  try {
    return KVCache.fromLayers(layers, { dtype: model.kvDtype, capacity: model.kvCapacity });
  } finally {
    for (const l of layers) tf.dispose(l);
  }
}
