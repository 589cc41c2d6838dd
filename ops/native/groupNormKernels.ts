import * as tf from '@tensorflow/tfjs';
import type { NativeAddon } from './addon.js';
import { cpuTensor, cpuValues, defineNativeKernel } from './registry.js';

/**
 * LwmGroupNorm: GroupNorm (+ SiLU) over NHWC float32 in two native passes (src/groupnorm.cc).
 * ops/groupNorm.ts only runs it for float32 x with C-value scale and bias, outside gradient
 * tapes; it has no gradient (the VQGAN runs inference only), the tfjs composition does.
 */

export interface GroupNormAttrs {
  groups: number;
  eps: number;
  silu: boolean;
}

interface GroupNormAddon extends NativeAddon {
  groupNorm(x: Float32Array, scale: Float32Array, bias: Float32Array, n: number, hw: number, c: number, groups: number, eps: number, silu: boolean): Float32Array;
}

defineNativeKernel({
  kernelName: 'LwmGroupNorm',
  make: (addon) =>
    typeof addon['groupNorm'] === 'function'
      ? ({ inputs, backend, attrs }) => {
          const { x, scale, bias } = inputs as { x: tf.TensorInfo; scale: tf.TensorInfo; bias: tf.TensorInfo };
          const [n, h, w, c] = x.shape as [number, number, number, number];
          const a = attrs as unknown as GroupNormAttrs;
          // tfjs may hold float32 values in another container (e.g. a tensor made from a JS array).
          const v = (t: tf.TensorInfo) => {
            const vals = cpuValues(backend, t);
            return vals instanceof Float32Array ? vals : Float32Array.from(vals);
          };
          const y = (addon as GroupNormAddon).groupNorm(v(x), v(scale), v(bias), n, h * w, c, a.groups, a.eps, a.silu);
          return cpuTensor(backend, x.shape, y);
        }
      : null,
});
