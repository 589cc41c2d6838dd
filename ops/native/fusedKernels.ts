import * as tf from '@tensorflow/tfjs';
import type { NativeAddon } from './addon.js';
import { cpuTensor, cpuValues, defineNativeKernel } from './registry.js';

/**
 * Fused RMSNorm, RoPE and SwiGLU on the cpu backend. Composed of tfjs ops each is 4-8 JS loops
 * with broadcasting (RoPE's split/concat alone took 60% of a prefill); natively one pass each.
 * The ops in ops/ call these kernels when active and fall back to the plain composition otherwise.
 */

interface FusedAddon extends NativeAddon {
  rmsnormForward(x: Float32Array, w: Float32Array, rows: number, dim: number, eps: number): Float32Array;
  rmsnormBackward(x: Float32Array, w: Float32Array, dy: Float32Array, rows: number, dim: number, eps: number): [Float32Array, Float32Array];
  rope(x: Float32Array, cos: Float32Array, sin: Float32Array, tokens: number, heads: number, dim: number, interleaved: boolean, sign: number): Float32Array;
  swigluForward(gate: Float32Array, up: Float32Array): Float32Array;
  swigluBackward(gate: Float32Array, up: Float32Array, dy: Float32Array): [Float32Array, Float32Array];
  segmentSum(x: Float32Array, segmentIds: Int32Array, n: number, inner: number, segments: number): Float32Array;
}

const has = (a: NativeAddon, fn: string) => typeof a[fn] === 'function';
const f32 = (backend: unknown, t: tf.TensorInfo) => cpuValues(backend, t) as Float32Array;

defineNativeKernel({
  kernelName: 'LwmRmsNorm',
  make: (addon) =>
    has(addon, 'rmsnormForward')
      ? ({ inputs, backend, attrs }) => {
          const { x, weight } = inputs as { x: tf.TensorInfo; weight: tf.TensorInfo };
          const dim = x.shape[x.shape.length - 1]!;
          const y = (addon as FusedAddon).rmsnormForward(f32(backend, x), f32(backend, weight), sizeOf(x) / dim, dim, (attrs as { eps: number }).eps);
          return cpuTensor(backend, x.shape, y);
        }
      : null,
  gradient: {
    kernelName: 'LwmRmsNorm',
    inputsToSave: ['x', 'weight'],
    gradFunc: (dy, saved, attrs) => {
      const [x, weight] = saved as [tf.Tensor, tf.Tensor];
      const [dx, dw] = tf.engine().runKernel('LwmRmsNormGrad', { x, weight, dy: dy as tf.Tensor }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
      return { x: () => dx!, weight: () => dw! };
    },
  },
});

defineNativeKernel({
  kernelName: 'LwmRmsNormGrad',
  make: (addon) =>
    has(addon, 'rmsnormBackward')
      ? ({ inputs, backend, attrs }) => {
          const { x, weight, dy } = inputs as { x: tf.TensorInfo; weight: tf.TensorInfo; dy: tf.TensorInfo };
          const dim = x.shape[x.shape.length - 1]!;
          const [dx, dw] = (addon as FusedAddon).rmsnormBackward(f32(backend, x), f32(backend, weight), f32(backend, dy), sizeOf(x) / dim, dim, (attrs as { eps: number }).eps);
          return [cpuTensor(backend, x.shape, dx), cpuTensor(backend, weight.shape, dw)];
        }
      : null,
});

defineNativeKernel({
  kernelName: 'LwmRope',
  make: (addon) =>
    has(addon, 'rope')
      ? ({ inputs, backend, attrs }) => {
          const { x, cos, sin } = inputs as { x: tf.TensorInfo; cos: tf.TensorInfo; sin: tf.TensorInfo };
          const [b, t, h, d] = x.shape as [number, number, number, number];
          const a = attrs as { interleaved: boolean; inverse: boolean };
          const out = (addon as FusedAddon).rope(f32(backend, x), f32(backend, cos), f32(backend, sin), b * t, h, d, a.interleaved, a.inverse ? -1 : 1);
          return cpuTensor(backend, x.shape, out);
        }
      : null,
  gradient: {
    kernelName: 'LwmRope',
    inputsToSave: ['cos', 'sin'],
    // A rotation's transpose is the rotation by the opposite angle; the angles are constants.
    gradFunc: (dy, saved, attrs) => {
      const [cos, sin] = saved as [tf.Tensor, tf.Tensor];
      const a = attrs as unknown as { interleaved: boolean; inverse: boolean };
      return {
        x: () => tf.engine().runKernel('LwmRope', { x: dy as tf.Tensor, cos, sin }, { interleaved: a.interleaved, inverse: !a.inverse }) as tf.Tensor,
        cos: () => tf.zerosLike(cos),
        sin: () => tf.zerosLike(sin),
      };
    },
  },
});

defineNativeKernel({
  kernelName: 'LwmSwiglu',
  make: (addon) =>
    has(addon, 'swigluForward')
      ? ({ inputs, backend }) => {
          const { gate, up } = inputs as { gate: tf.TensorInfo; up: tf.TensorInfo };
          return cpuTensor(backend, gate.shape, (addon as FusedAddon).swigluForward(f32(backend, gate), f32(backend, up)));
        }
      : null,
  gradient: {
    kernelName: 'LwmSwiglu',
    inputsToSave: ['gate', 'up'],
    gradFunc: (dy, saved) => {
      const [gate, up] = saved as [tf.Tensor, tf.Tensor];
      const [dg, du] = tf.engine().runKernel('LwmSwigluGrad', { gate, up, dy: dy as tf.Tensor }, {}) as tf.Tensor[];
      return { gate: () => dg!, up: () => du! };
    },
  },
});

defineNativeKernel({
  kernelName: 'LwmSwigluGrad',
  make: (addon) =>
    has(addon, 'swigluBackward')
      ? ({ inputs, backend }) => {
          const { gate, up, dy } = inputs as { gate: tf.TensorInfo; up: tf.TensorInfo; dy: tf.TensorInfo };
          const [dg, du] = (addon as FusedAddon).swigluBackward(f32(backend, gate), f32(backend, up), f32(backend, dy));
          return [cpuTensor(backend, gate.shape, dg), cpuTensor(backend, up.shape, du)];
        }
      : null,
});

// The embedding gradient (gather's gradient is an unsorted segment sum over the vocabulary).
defineNativeKernel({
  kernelName: 'UnsortedSegmentSum',
  make: (addon, original) =>
    has(addon, 'segmentSum')
      ? (args) => {
          const { inputs, backend, attrs } = args;
          const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
          const segments = (attrs as { numSegments: number }).numSegments;
          if (x.dtype !== 'float32' || segmentIds.dtype !== 'int32') return original!(args);
          const n = sizeOf(segmentIds);
          const inner = n ? sizeOf(x) / n : 0;
          const out = (addon as FusedAddon).segmentSum(f32(backend, x), cpuValues(backend, segmentIds) as Int32Array, n, inner, segments);
          return cpuTensor(backend, [segments, ...x.shape.slice(segmentIds.shape.length)], out);
        }
      : null,
});

function sizeOf(t: tf.TensorInfo): number {
  return t.shape.reduce((a, b) => a * b, 1);
}
