import * as tf from '@tensorflow/tfjs';
import type { NativeAddon } from './addon.js';
import { cpuTensor, cpuValues, defineNativeKernel } from './registry.js';

/**
 * Native float32 elementwise kernels with broadcasting. The cpu backend's JS loops ran the Adam
 * update and the softmax cross-entropy of a training step at 40-300 Melem/s and dominated it.
 * Small tensors stay on the JS kernels: below a few thousand elements the call costs more.
 */

interface ElementwiseAddon extends NativeAddon {
  binary(op: number, a: Float32Array, aShape: number[], b: Float32Array, bShape: number[], outShape: number[]): Float32Array;
  unary(op: number, x: Float32Array): Float32Array;
}

const MIN_NATIVE_SIZE = 4096;
const size = (t: tf.TensorInfo) => t.shape.reduce((a, b) => a * b, 1);
const pad = (shape: number[], rank: number) => [...new Array(rank - shape.length).fill(1), ...shape];

const BINARY: [string, number][] = [['Add', 0], ['Sub', 1], ['Multiply', 2], ['RealDiv', 3]];
for (const [kernelName, op] of BINARY) {
  defineNativeKernel({
    kernelName,
    make: (addon, original) =>
      typeof addon['binary'] === 'function' && original
        ? (args) => {
            const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
            if (a.dtype !== 'float32' || b.dtype !== 'float32') return original(args);
            const outShape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
            if (outShape.reduce((x, y) => x * y, 1) < MIN_NATIVE_SIZE) return original(args);
            const av = cpuValues(args.backend, a);
            const bv = cpuValues(args.backend, b);
            // tfjs may hold float32 data in other containers (e.g. a scalar made from a JS number).
            if (!(av instanceof Float32Array) || !(bv instanceof Float32Array)) return original(args);
            const rank = outShape.length;
            const out = (addon as ElementwiseAddon).binary(op, av, pad(a.shape, rank), bv, pad(b.shape, rank), outShape);
            return cpuTensor(args.backend, outShape, out);
          }
        : null,
  });
}

const UNARY: [string, number][] = [['Exp', 0], ['Sqrt', 1], ['Neg', 2], ['Square', 3]];
for (const [kernelName, op] of UNARY) {
  defineNativeKernel({
    kernelName,
    make: (addon, original) =>
      typeof addon['unary'] === 'function' && original
        ? (args) => {
            const { x } = args.inputs as { x: tf.TensorInfo };
            const xv = x.dtype === 'float32' && size(x) >= MIN_NATIVE_SIZE ? cpuValues(args.backend, x) : null;
            if (!(xv instanceof Float32Array)) return original(args);
            return cpuTensor(args.backend, x.shape, (addon as ElementwiseAddon).unary(op, xv));
          }
        : null,
  });
}
