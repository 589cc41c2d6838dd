import * as tf from '@tensorflow/tfjs';
import { InputError } from './errors.js';
import { FUSED_ATTENTION, fusedAttention } from './native/attentionKernel.js';
import { isNativeKernelActive } from './native/registry.js';

export interface AttentionOptions {
  /** Key j is visible to query i only if j <= queryOffset + i. Default true. */
  causal?: boolean;
  /** Index of the first query among the keys (the KV-cache length before this step). Default kLen - qLen. */
  queryOffset?: number;
  /** [B, Tk], 1 where a key may be attended, 0 for padding. */
  keyMask?: tf.Tensor2D;
  /** [B, Tq] int32: packed documents attend only within their own segment. */
  segmentIds?: tf.Tensor2D;
  /** [B, Tk] segment ids of the keys; defaults to segmentIds when Tq == Tk. */
  kvSegmentIds?: tf.Tensor2D;
  /** Queries per block: bounds the score matrix to blockSize x Tk. 0 = all at once. */
  blockSize?: number;
  /** Default 1/sqrt(D). */
  scale?: number;
}

/**
 * Multi-head (and grouped-query) scaled dot-product attention, the one place the model attends.
 * q: [B, Tq, H, D]; k, v: [B, Tk, Hkv, D] with H a multiple of Hkv (query head h reads kv head
 * floor(h / (H / Hkv)), as Hugging Face's repeat_kv). Returns [B, Tq, H, D].
 * Softmax in float32; a query with no visible key gets a zero output, never NaN.
 */
export function attention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: AttentionOptions = {}): tf.Tensor4D {
  const [b, tq, h, d] = q.shape;
  const [bk, tk, hkv, dk] = k.shape;
  if (bk !== b || dk !== d || v.shape[0] !== b || v.shape[1] !== tk || v.shape[2] !== hkv || v.shape[3] !== d) {
    throw new InputError(`attention: q ${shape(q)}, k ${shape(k)}, v ${shape(v)} do not agree; expected q [B,Tq,H,D], k and v [B,Tk,Hkv,D]`);
  }
  if (h % hkv !== 0) throw new InputError(`attention: ${h} query heads is not a multiple of ${hkv} kv heads`);
  const queryOffset = opts.queryOffset ?? tk - tq;
  const block = opts.blockSize && opts.blockSize > 0 ? opts.blockSize : tq;
  const kvSeg = opts.kvSegmentIds ?? (opts.segmentIds && tq === tk ? opts.segmentIds : undefined);
  if (opts.segmentIds && !kvSeg) throw new InputError('attention: segmentIds given with Tq != Tk; pass kvSegmentIds for the keys too');
  if (isNativeKernelActive(FUSED_ATTENTION) && q.dtype === 'float32' && k.dtype === 'float32' && v.dtype === 'float32') {
    // Same semantics, fused: no [Tq, Tk] score tensor, and its own gradient kernel.
    return tf.tidy(() => fusedAttention(q, k, v, { causal: opts.causal ?? true, queryOffset, scale: opts.scale, keyMask: opts.keyMask, segmentIds: opts.segmentIds, kvSegmentIds: kvSeg }).out);
  }
  return tf.tidy(() => {
    const scale = opts.scale ?? 1 / Math.sqrt(d);
    const group = h / hkv;
    const kT = tf.transpose(k, [0, 2, 1, 3]); // [B, Hkv, Tk, D]
    const vT = tf.transpose(v, [0, 2, 1, 3]);
    const outs: tf.Tensor[] = [];
    for (let start = 0; start < tq; start += block) {
      const n = Math.min(block, tq - start);
      const qb = tf.slice(q, [0, start, 0, 0], [b, n, h, d]);
      // Group query heads under their kv head so one batched matmul serves grouped-query attention.
      const qg = tf.reshape(tf.transpose(qb, [0, 2, 1, 3]), [b, hkv, group * n, d]);
      const scores = tf.reshape(tf.mul(tf.matMul(qg, kT, false, true), scale), [b, hkv, group, n, tk]);
      const mask = visibility(b, n, tk, start + queryOffset, opts, kvSeg, start);
      const masked = mask ? tf.where(mask, scores, tf.fill(scores.shape, -Infinity)) : scores;
      const rowMax = tf.max(masked, -1, true);
      const anyVisible = tf.isFinite(rowMax); // IsFinite has a (zero) gradient; comparisons like Greater have none
      const safeMax = tf.where(anyVisible, rowMax, tf.zerosLike(rowMax));
      const p = tf.exp(tf.sub(masked, safeMax));
      const den = tf.sum(p, -1, true);
      // den is 0 only for a query with no visible key; dividing by 1 there keeps its output and gradient 0.
      const probs = tf.div(p, tf.where(anyVisible, den, tf.onesLike(den)));
      const o = tf.matMul(tf.reshape(probs, [b, hkv, group * n, tk]), vT); // [B, Hkv, G*n, D]
      outs.push(tf.transpose(tf.reshape(o, [b, h, n, d]), [0, 2, 1, 3]));
    }
    return (outs.length === 1 ? outs[0]! : tf.concat(outs, 1)) as tf.Tensor4D;
  });
}

/** Boolean [B|1, 1, 1, n, Tk] of visible keys for queries start..start+n-1, or null when all are visible. */
function visibility(
  b: number,
  n: number,
  tk: number,
  firstQueryIndex: number,
  opts: AttentionOptions,
  kvSeg: tf.Tensor2D | undefined,
  start: number,
): tf.Tensor | null {
  let mask: tf.Tensor | null = null;
  const and = (m: tf.Tensor) => {
    mask = mask ? tf.logicalAnd(mask, m) : m;
  };
  if (opts.causal ?? true) {
    const qi = tf.reshape(tf.range(firstQueryIndex, firstQueryIndex + n, 1, 'int32'), [n, 1]);
    const kj = tf.reshape(tf.range(0, tk, 1, 'int32'), [1, tk]);
    and(tf.reshape(tf.lessEqual(kj, qi), [1, 1, 1, n, tk]));
  }
  if (opts.keyMask) {
    and(tf.reshape(tf.greater(opts.keyMask, 0), [b, 1, 1, 1, tk]));
  }
  if (opts.segmentIds && kvSeg) {
    const qs = tf.reshape(tf.slice(opts.segmentIds, [0, start], [b, n]), [b, 1, 1, n, 1]);
    const ks = tf.reshape(kvSeg, [b, 1, 1, 1, tk]);
    and(tf.equal(qs, ks));
  }
  return mask;
}

function shape(t: tf.Tensor): string {
  return `[${t.shape.join(', ')}]`;
}
