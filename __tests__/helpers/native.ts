// Shared by the tests that compare a native kernel with tfjs's own.
import * as tf from '@tensorflow/tfjs';
import { expect } from '@jest/globals';
import { disableNativeKernels, enableNativeKernels } from '../../ops/native/index.js';
import { randomArray } from './tensors.js';

/** Random tensors from a running seed: each call gives new, reproducible values. */
export function randomTensors(firstSeed: number): (shape: number[]) => tf.Tensor {
  let seed = firstSeed;
  return (shape) => tf.tensor(randomArray(shape.reduce((a, b) => a * b, 1), seed++), shape);
}

/** Runs fn on the plain tfjs kernels, then switches the native ones back on. */
export function plain<T>(fn: () => T): T {
  disableNativeKernels();
  try {
    return fn();
  } finally {
    enableNativeKernels();
  }
}

/** fp32 sums in another order: within rtol of the largest reference magnitude (NaN matches NaN). */
export function expectMatch(got: tf.Tensor, want: tf.Tensor, what: string, rtol: number): void {
  expect(got.shape).toEqual(want.shape);
  expect(got.dtype).toBe(want.dtype);
  const g = got.dataSync();
  const w = want.dataSync();
  expect(g.length).toBe(w.length);
  let scale = 0;
  for (let i = 0; i < w.length; i++) scale = Math.max(scale, Math.abs(w[i]!));
  const tol = rtol * Math.max(1, scale);
  for (let i = 0; i < w.length; i++) {
    const d = Math.abs(g[i]! - w[i]!);
    if (!(d <= tol) && !(Number.isNaN(g[i]!) && Number.isNaN(w[i]!))) {
      throw new Error(`${what}: element ${i} is ${g[i]}, expected ${w[i]} (tolerance ${tol})`);
    }
  }
}
