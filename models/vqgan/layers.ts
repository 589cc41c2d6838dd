import * as tf from '@tensorflow/tfjs';

/**
 * Flax nn.GroupNorm on NHWC: statistics per sample and group over (H, W, C/groups), in float32,
 * var = max(0, E[x^2] - E[x]^2); y = (x - mean) * rsqrt(var + eps) * scale + bias.
 */
export function groupNorm(x: tf.Tensor4D, scale: tf.Tensor, bias: tf.Tensor, groups: number, eps: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w, c] = x.shape;
    const hw = h * w;
    const count = hw * (c / groups);
    // Sums over (H, W) and then over each group's channels as matmuls: the CPU backend reduces a
    // non-innermost axis through a transpose, which is several times slower.
    const x3 = x.reshape([b, hw, c]) as tf.Tensor3D;
    const ones = tf.ones([b, 1, hw]) as tf.Tensor3D;
    const member = tf.oneHot(tf.range(0, c, 1, 'int32').div(tf.scalar(c / groups, 'int32')), groups).cast('float32') as tf.Tensor2D; // [C, G]
    const perGroup = (t: tf.Tensor3D) => tf.matMul(tf.matMul(ones, t).reshape([b, c]), member).div(count); // [B, G]
    const mean = perGroup(x3);
    const meanSq = perGroup(x3.square() as tf.Tensor3D);
    const variance = tf.relu(meanSq.sub(mean.square()));
    const toChannels = (t: tf.Tensor) => tf.matMul(t as tf.Tensor2D, member, false, true).reshape([b, 1, c]); // [B, 1, C]
    const y = x3.sub(toChannels(mean)).mul(toChannels(tf.rsqrt(variance.add(eps))));
    return y.reshape([b, h, w, c]).mul(scale).add(bias) as tf.Tensor4D;
  });
}

/** Flax nn.Conv: NHWC, kernel (kh, kw, in, out), cross-correlation, plus bias. */
export function conv2d(x: tf.Tensor4D, kernel: tf.Tensor, bias: tf.Tensor, stride: 1 | 2, padding: 'same' | 'valid'): tf.Tensor4D {
  return tf.tidy(() => tf.conv2d(x, kernel as tf.Tensor4D, stride, padding).add(bias) as tf.Tensor4D);
}

/** LWM's Downsample without its conv: zero-pad one row at the bottom and one column at the right. */
export function padBottomRight(x: tf.Tensor4D): tf.Tensor4D {
  return tf.pad(x, [
    [0, 0],
    [0, 1],
    [0, 1],
    [0, 0],
  ]);
}

/** jax.image.resize(method='nearest') to (2H, 2W): every pixel repeated in a 2x2 block. */
export function upsampleNearest2x(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w, c] = x.shape;
    return x
      .reshape([b, h, 1, w, 1, c])
      .tile([1, 1, 2, 1, 2, 1])
      .reshape([b, 2 * h, 2 * w, c]) as tf.Tensor4D;
  });
}

/**
 * LWM's VectorQuantizer (lookup of the nearest codebook row). `z` is [..., D], `codebook` [n, D].
 * Distances d = |z|^2 + |e|^2 - 2 z.e (no normalisation); index = argmin with ties going to the
 * lowest index (jnp.argmin's first minimum), computed without relying on a backend's argMin.
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
      .sub(tf.matMul(flat, codebook, false, true).mul(2));
    const isMin = dist.equal(dist.min(1, true)).cast('int32');
    // Where isMin: the column index, elsewhere n; the row minimum is the first minimum.
    const iota = tf.range(0, n, 1, 'int32').reshape([1, n]);
    const nT = tf.scalar(n, 'int32');
    const idx = iota.sub(nT).mul(isMin).add(nT).min(1);
    const codes = idx.reshape(z.shape.slice(0, -1));
    const quantized = tf.gather(codebook, idx).reshape(z.shape);
    return { codes, quantized };
  });
}
