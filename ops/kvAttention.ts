import * as tf from '@tensorflow/tfjs';
import { attention } from './attention.js';
import { bf16ToF32 } from './bf16.js';
import { InputError } from './errors.js';
import { loadAddon } from './native/addon.js';
import { attentionAddon, FUSED_ATTENTION, type AttentionAddon } from './native/attentionKernel.js';
import { isNativeKernelActive } from './native/registry.js';

/** Keys and values held as bf16 bits, [B, rows, Hkv, D] (a bf16 KV cache's buffers). */
export interface Bf16Kv {
  k: Uint16Array;
  v: Uint16Array;
  shape: [number, number, number, number];
}

/** The addon's attention when the fused kernel is enabled, else null. */
function native(): AttentionAddon | null {
  const a = isNativeKernelActive(FUSED_ATTENTION) ? loadAddon() : null;
  return a ? attentionAddon(a) : null;
}

/** The first n rows of each sequence of bf16 keys or values, widened: [B, n, Hkv, D]. */
export function widenRows(bits: Uint16Array, shape: Bf16Kv['shape'], n: number): tf.Tensor4D {
  const [b, rows, hkv, d] = shape;
  const row = hkv * d;
  const out = new Float32Array(b * n * row);
  for (let i = 0; i < b; i++) bf16ToF32(bits.subarray(i * rows * row, (i * rows + n) * row), out.subarray(i * n * row, (i + 1) * n * row));
  return tf.tensor4d(out, [b, n, hkv, d]);
}

/**
 * Causal attention of q [B, Tq, H, D] over bf16 keys and values: query i sits at position
 * queryOffset + i and sees keys j <= it (with keyMask [B, rows] > 0 when given). Rows past the
 * last visible key are never read. Natively the cache is widened block by block as it is read;
 * otherwise the visible rows are widened once and plain attention() runs on them.
 */
export function attentionBf16Kv(q: tf.Tensor4D, kv: Bf16Kv, queryOffset: number, keyMask: tf.Tensor2D | null): tf.Tensor4D {
  const [b, tq, h, d] = q.shape;
  const [bk, rows, hkv, dk] = kv.shape;
  if (bk !== b || dk !== d || h % hkv !== 0 || kv.k.length !== b * rows * hkv * d || kv.v.length !== kv.k.length) {
    throw new InputError(`attentionBf16Kv: q [${q.shape}] does not match bf16 keys/values [${kv.shape}]`);
  }
  if (queryOffset + tq > rows) throw new InputError(`attentionBf16Kv: queries up to position ${queryOffset + tq - 1} but only ${rows} key rows`);
  const nat = native();
  if (nat) {
    // One sequence: hand over only the rows up to the last query (a preallocated cache may be
    // far longer), so a prefill chunk does not pack rows nobody can see.
    const n = b === 1 ? queryOffset + tq : rows;
    const mask = keyMask ? (keyMask.dataSync() as Float32Array).subarray(0, b * n) : null;
    const len = b * n * hkv * d;
    const [o] = nat.attentionForward(q.dataSync() as Float32Array, kv.k.subarray(0, len) as unknown as Float32Array, kv.v.subarray(0, len) as unknown as Float32Array, null, null, [b, tq, n, h, hkv, d], {
      causal: true,
      queryOffset,
      keyMask: mask,
    });
    return tf.tensor4d(o, [b, tq, h, d]);
  }
  return tf.tidy(() => {
    const n = queryOffset + tq;
    const km = keyMask ? (tf.slice(keyMask, [0, 0], [b, n]) as tf.Tensor2D) : undefined;
    return attention(q, widenRows(kv.k, kv.shape, n), widenRows(kv.v, kv.shape, n), { causal: true, queryOffset, keyMask: km });
  });
}
