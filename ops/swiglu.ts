import * as tf from '@tensorflow/tfjs';
import { isNativeKernelActive } from './native/registry.js';

/** LLaMA's gated MLP activation: silu(gate) * up, elementwise (shapes equal). */
export function swiglu(gate: tf.Tensor, up: tf.Tensor): tf.Tensor {
  if (gate.dtype === 'float32' && up.dtype === 'float32' && gate.size === up.size && isNativeKernelActive('LwmSwiglu')) {
    return tf.engine().runKernel('LwmSwiglu', { gate, up }, {}) as tf.Tensor;
  }
  return tf.tidy(() => tf.mul(tf.mul(gate, tf.sigmoid(gate)), up));
}
