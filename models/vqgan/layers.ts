import * as tf from '@tensorflow/tfjs';

/** Flax nn.GroupNorm (optionally followed by SiLU), fused natively on the cpu backend. */
export { groupNorm } from '../../ops/groupNorm.js';

export type ConvPadding = 'same' | 'valid' | tf.backend_util.ExplicitPadding;

/**
 * Flax nn.Conv: NHWC, kernel (kh, kw, in, out), cross-correlation, plus bias. The bias rides in
 * the fused conv (natively: in the GEMM's epilogue) instead of a separate full-tensor Add.
 */
export function conv2d(x: tf.Tensor4D, kernel: tf.Tensor, bias: tf.Tensor, stride: 1 | 2, padding: ConvPadding): tf.Tensor4D {
  return tf.fused.conv2d({ x, filter: kernel as tf.Tensor4D, strides: stride, pad: padding, bias });
}

/**
 * LWM's Downsample padding as conv padding: the stride-2 VALID conv of padBottomRight(x) equals
 * the conv of x with these pads (the padded zeros are read in place, not copied).
 */
export const BOTTOM_RIGHT_PADDING: tf.backend_util.ExplicitPadding = [
  [0, 0],
  [0, 1],
  [0, 1],
  [0, 0],
];

/** LWM's Downsample without its conv: zero-pad one row at the bottom and one column at the right. */
export function padBottomRight(x: tf.Tensor4D): tf.Tensor4D {
  return tf.pad(x, BOTTOM_RIGHT_PADDING);
}

/**
 * jax.image.resize(method='nearest') to (2H, 2W): every pixel repeated in a 2x2 block. TF's
 * legacy nearest resize reads source row floor(r / 2), exactly that; tfjs' JS kernel for it was
 * ~15x faster than a reshape + tile, and on the cpu backend it is a native copy.
 */
export function upsampleNearest2x(x: tf.Tensor4D): tf.Tensor4D {
  return tf.image.resizeNearestNeighbor(x, [2 * x.shape[1], 2 * x.shape[2]]);
}

/**
 * LWM's VectorQuantizer (lookup of the nearest codebook row). `z` is [..., D], `codebook` [n, D].
 * Distances d = |z|^2 + |e|^2 - 2 z.e (no normalisation); index = argmin with ties going to the
 * lowest index (jnp.argmin's first minimum).
 * Returns int32 codes of shape z.shape[:-1] and the rows they pick (shape of z).
 */
export function vectorQuantize(z: tf.Tensor, codebook: tf.Tensor2D): { codes: tf.Tensor; quantized: tf.Tensor } {
  return tf.tidy(() => {
    const d = z.shape[z.shape.length - 1]!;
    const n = codebook.shape[0];
    const flat = z.reshape([-1, d]) as tf.Tensor2D;
    const dist = flat
      .square()
      .sum(1, true)
      .add(codebook.square().sum(1).reshape([1, n]))
      .sub(tf.matMul(flat, codebook, false, true).mul(2)) as tf.Tensor2D;
    const idx = tf.getBackend() === 'cpu' ? tf.argMin(dist, 1) : firstArgMin(dist);
    const codes = idx.reshape(z.shape.slice(0, -1));
    const quantized = tf.gather(codebook, idx).reshape(z.shape);
    return { codes, quantized };
  });
}

/**
 * Row-wise argmin of [m, n] taking the first minimum, without a backend's argMin, whose ties are
 * unspecified. (The cpu backend's is a first-minimum scan: 6 ms instead of 0.9 s for 256 x 8192.)
 */
export function firstArgMin(dist: tf.Tensor2D): tf.Tensor1D {
  const n = dist.shape[1];
  const isMin = dist.equal(dist.min(1, true)).cast('int32');
  // Where isMin: the column index, elsewhere n; the row minimum is the first minimum.
  const iota = tf.range(0, n, 1, 'int32').reshape([1, n]);
  const nT = tf.scalar(n, 'int32');
  return iota.sub(nT).mul(isMin).add(nT).min(1);
}
