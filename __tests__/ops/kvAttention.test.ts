import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from '@jest/globals';
import { attention, attentionBf16Kv, bf16ToF32, disableNativeKernels, enableNativeKernels, f32ToBf16, isNativeKernelActive, FUSED_ATTENTION } from '../../ops/index.js';
import { initBackend } from '../../src/backend.js';
import { maxAbsDiff, randomArray } from '../helpers/tensors.js';

await initBackend();

/** Random keys/values as bf16 bits, and the same widened to float32. */
function kv(b: number, rows: number, h: number, d: number, seed: number) {
  const bits = new Uint16Array(b * rows * h * d);
  f32ToBf16(randomArray(bits.length, seed), bits);
  const wide = new Float32Array(bits.length);
  bf16ToF32(bits, wide);
  return { bits, wide };
}

describe('attention over bf16 keys and values', () => {
  // [B, Tq, rows, H, Hkv, D, queryOffset]: decode steps (one query, a few, grouped heads, a head
  // dim that is not a whole vector) and prefill chunks, with unwritten rows past the visible keys.
  const cases = [
    [1, 1, 256, 8, 8, 64, 200],
    [2, 3, 128, 8, 2, 20, 90],
    [1, 70, 200, 4, 4, 32, 60],
    [1, 128, 128, 2, 1, 16, 0],
  ] as const;
  for (const native of [true, false]) {
    it(`equals float32 attention on the widened arrays (${native ? 'native kernel' : 'plain tfjs'})`, () => {
      if (!native) disableNativeKernels();
      try {
        expect(isNativeKernelActive(FUSED_ATTENTION)).toBe(native);
        for (const [b, tq, rows, h, hkv, d, off] of cases) {
          const k = kv(b, rows, hkv, d, 2);
          const v = kv(b, rows, hkv, d, 3);
          // Rows past the last visible key hold stale values (here huge ones): they must not count.
          for (const a of [k.bits, v.bits]) for (let i = 0; i < b; i++) a.fill(0x7149, (i * rows + off + tq) * hkv * d, (i + 1) * rows * hkv * d);
          const mask = new Float32Array(b * rows).fill(1);
          if (b > 1) mask[rows + 5] = 0;
          const before = tf.memory().numTensors;
          tf.tidy(() => {
            const q = tf.tensor4d(randomArray(b * tq * h * d, 1), [b, tq, h, d]);
            const keyMask = tf.tensor2d(mask, [b, rows]);
            const got = attentionBf16Kv(q, { k: k.bits, v: v.bits, shape: [b, rows, hkv, d] }, off, keyMask);
            const n = off + tq;
            const slice = (x: Float32Array) => tf.slice(tf.tensor4d(x, [b, rows, hkv, d]), [0, 0, 0, 0], [b, n, hkv, d]) as tf.Tensor4D;
            const want = attention(q, slice(k.wide), slice(v.wide), { causal: true, queryOffset: off, keyMask: tf.slice(keyMask, [0, 0], [b, n]) as tf.Tensor2D });
            expect(got.shape).toEqual([b, tq, h, d]);
            expect(maxAbsDiff(got.dataSync(), want.dataSync())).toBeLessThan(1e-5);
          });
          expect(tf.memory().numTensors).toBe(before);
        }
      } finally {
        if (!native) enableNativeKernels();
      }
    });
  }

  it('refuses keys and values that do not match the queries', () => {
    const q = tf.zeros([1, 1, 4, 8]) as tf.Tensor4D;
    expect(() => attentionBf16Kv(q, { k: new Uint16Array(10), v: new Uint16Array(10), shape: [1, 10, 4, 8] }, 0, null)).toThrow(/does not match bf16 keys\/values/);
    expect(() => attentionBf16Kv(q, { k: new Uint16Array(320), v: new Uint16Array(320), shape: [1, 10, 4, 8] }, 10, null)).toThrow(/queries up to position 10 but only 10 key rows/);
    q.dispose();
  });
});
