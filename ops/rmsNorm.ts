import * as tf from '@tensorflow/tfjs';
import { isNativeKernelActive } from './native/registry.js';

/**
 * RMSNorm as LWM and Hugging Face compute it: normalise in float32, then multiply by the weight.
 * x: [..., E], weight: [E].
 */
export function rmsNorm(x: tf.Tensor, weight: tf.Tensor, eps: number): tf.Tensor {
  if (x.dtype === 'float32' && weight.dtype === 'float32' && weight.rank === 1 && weight.shape[0] === x.shape[x.rank - 1] && isNativeKernelActive('LwmRmsNorm')) {
    return tf.engine().runKernel('LwmRmsNorm', { x, weight }, { eps }) as tf.Tensor;
  }
  return tf.tidy(() => {
    const x32 = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
    const meanSquare = tf.mean(tf.square(x32), -1, true);
    return tf.mul(tf.mul(x32, tf.rsqrt(tf.add(meanSquare, eps))), weight);
  });
}
