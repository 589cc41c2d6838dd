import * as tf from '@tensorflow/tfjs';
import { isNativeKernelActive } from './native/registry.js';

/**
 * Which dimensions rotate together. LWM's Jax code pairs adjacent dimensions (2i, 2i+1);
 * Hugging Face checkpoints pair i with i + D/2 ("rotate half"), their q/k rows being permuted
 * to match. Using one layout with the other's weights gives fluent-looking nonsense.
 */
export type RopeLayout = 'rotate-half' | 'interleaved';

/**
 * freq[i] = 1 / theta^(2i/D), i < D/2, in float32 arithmetic as LWM's `precompute_freqs_cis`
 * (the exponent is rounded to float32 before the power).
 */
export function ropeFrequencies(headDim: number, theta: number): Float32Array {
  const half = headDim / 2;
  const freq = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround(Math.fround(2 * i) / headDim);
    freq[i] = Math.fround(1 / Math.fround(Math.pow(theta, exponent)));
  }
  return freq;
}

/**
 * cos and sin of the rotation angles for the given positions: [..., D/2] each.
 * The angle p * freq is rounded to float32 before cos/sin, as LWM's table is: at position 1M
 * and theta 5e7 a bf16 or fp16 angle would be useless, so this always runs in float32.
 */
export function ropeAngles(positions: tf.Tensor, freq: Float32Array): { cos: tf.Tensor; sin: tf.Tensor } {
  return tf.tidy(() => {
    const p = tf.expandDims(tf.cast(positions, 'float32'), -1);
    const angle = tf.mul(p, tf.tensor1d(freq));
    return { cos: tf.cos(angle), sin: tf.sin(angle) };
  });
}

/**
 * Rotates q or k. x: [B, T, H, D]; angles: ropeAngles of the tokens' positions ([B, T, D/2]),
 * computed once per forward pass and shared by every layer.
 */
export function applyRope(x: tf.Tensor4D, angles: { cos: tf.Tensor; sin: tf.Tensor }, layout: RopeLayout = 'rotate-half'): tf.Tensor4D {
  const [bx, tx] = x.shape;
  if (x.dtype === 'float32' && angles.cos.shape[0] === bx && angles.cos.shape[1] === tx && isNativeKernelActive('LwmRope')) {
    const { cos, sin } = angles;
    return tf.engine().runKernel('LwmRope', { x, cos, sin }, { interleaved: layout === 'interleaved', inverse: false }) as tf.Tensor4D;
  }
  return tf.tidy(() => {
    const [b, t, h, d] = x.shape;
    const half = d / 2;
    const c = tf.expandDims(angles.cos, 2); // [B, T, 1, D/2]
    const s = tf.expandDims(angles.sin, 2);
    if (layout === 'rotate-half') {
      const [x1, x2] = tf.split(x, 2, 3);
      return tf.concat([tf.sub(tf.mul(x1!, c), tf.mul(x2!, s)), tf.add(tf.mul(x2!, c), tf.mul(x1!, s))], 3) as tf.Tensor4D;
    }
    const pairs = tf.reshape(x, [b, t, h, half, 2]);
    const [even, odd] = tf.split(pairs, 2, 4).map((p) => tf.squeeze(p, [4]));
    const outEven = tf.sub(tf.mul(even!, c), tf.mul(odd!, s));
    const outOdd = tf.add(tf.mul(even!, s), tf.mul(odd!, c));
    return tf.reshape(tf.stack([outEven, outOdd], 4), [b, t, h, d]) as tf.Tensor4D;
  });
}
