import * as tf from '@tensorflow/tfjs';
import { InputError } from './errors.js';
import { isNativeKernelActive } from './native/registry.js';

export interface GroupNormOptions {
  /** Apply SiLU (y * sigmoid(y)) to the normalised output, as the VQGAN does after every norm. */
  silu?: boolean;
}

/**
 * Flax nn.GroupNorm on NHWC x [B, H, W, C]: statistics per sample and group over (H, W,
 * C/groups), var = max(0, E[x^2] - E[x]^2), y = (x - mean) * rsqrt(var + eps) * scale + bias;
 * scale and bias hold C values. Natively (cpu backend) in one fused kernel with float64 sums;
 * under a gradient tape, on other backends or without the addon, as a tfjs composition.
 */
export function groupNorm(x: tf.Tensor4D, scale: tf.Tensor, bias: tf.Tensor, groups: number, eps: number, options: GroupNormOptions = {}): tf.Tensor4D {
  const silu = options.silu ?? false;
  if (x.rank !== 4) throw new InputError(`groupNorm: x must be rank 4 [B, H, W, C], got rank ${x.rank} [${x.shape}]`);
  const c = x.shape[3];
  if (!Number.isInteger(groups) || groups < 1 || c % groups !== 0) throw new InputError(`groupNorm: ${c} channels are not divisible into ${groups} groups`);
  if (scale.size !== c || bias.size !== c) throw new InputError(`groupNorm: scale [${scale.shape}] and bias [${bias.shape}] must hold ${c} values, one per channel`);
  const native = [x, scale, bias].every((t) => t.dtype === 'float32') && !tf.engine().isTapeOn() && isNativeKernelActive('LwmGroupNorm');
  if (native) return tf.engine().runKernel('LwmGroupNorm', { x, scale, bias }, { groups, eps, silu }) as tf.Tensor4D;
  return tf.tidy(() => {
    const y = groupNormTfjs(x, scale.reshape([c]), bias.reshape([c]), groups, eps);
    return silu ? (y.mul(tf.sigmoid(y)) as tf.Tensor4D) : y;
  });
}

function groupNormTfjs(x: tf.Tensor4D, scale: tf.Tensor, bias: tf.Tensor, groups: number, eps: number): tf.Tensor4D {
  const [b, h, w, c] = x.shape;
  const hw = h * w;
  const count = hw * (c / groups);
  // Sums over (H, W) and then over each group's channels as matmuls: the CPU backend reduces a
  // non-innermost axis through a transpose, which is several times slower.
  const x3 = x.reshape([b, hw, c]) as tf.Tensor3D;
  const ones = tf.ones([b, 1, hw]) as tf.Tensor3D;
  const group = tf.range(0, c, 1, 'int32').div(tf.scalar(c / groups, 'int32')).reshape([c, 1]);
  const member = tf.equal(group, tf.range(0, groups, 1, 'int32').reshape([1, groups])).cast('float32') as tf.Tensor2D; // [C, G] (oneHot needs G >= 2)
  const perGroup = (t: tf.Tensor3D) => tf.matMul(tf.matMul(ones, t).reshape([b, c]), member).div(count); // [B, G]
  const mean = perGroup(x3);
  const meanSq = perGroup(x3.square() as tf.Tensor3D);
  const variance = tf.relu(meanSq.sub(mean.square()));
  const toChannels = (t: tf.Tensor) => tf.matMul(t as tf.Tensor2D, member, false, true).reshape([b, 1, c]); // [B, 1, C]
  const y = x3.sub(toChannels(mean)).mul(toChannels(tf.rsqrt(variance.add(eps))));
  return y.reshape([b, h, w, c]).mul(scale).add(bias) as tf.Tensor4D;
}
