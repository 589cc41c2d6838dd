import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from '@jest/globals';
import { applyRope, rmsNorm, ropeAngles, ropeFrequencies, swiglu } from '../../../ops/index.js';
import { disableNativeKernels, enableNativeKernels, isNativeKernelActive, loadAddon } from '../../../ops/native/index.js';
import { expectNoLeaks, maxAbsDiff, randomArray } from '../../helpers/tensors.js';

/** Runs fn with the plain tfjs kernels, then with the native ones; returns both results' values. */
function both(fn: () => tf.Tensor | tf.Tensor[]): [Float32Array[], Float32Array[]] {
  const run = () => {
    const r = fn();
    return (Array.isArray(r) ? r : [r]).map((t) => t.dataSync() as Float32Array);
  };
  disableNativeKernels();
  const plain = run();
  enableNativeKernels();
  expect(isNativeKernelActive('LwmRope')).toBe(true); // never compare plain with plain by accident
  const native = run();
  return [plain, native];
}

function expectSame([plain, native]: [Float32Array[], Float32Array[]], tol: number): void {
  expect(native).toHaveLength(plain.length);
  plain.forEach((p, i) => expect(maxAbsDiff(native[i]!, p)).toBeLessThan(tol));
}

const addon = loadAddon();
(addon ? describe : describe.skip)('fused native kernels equal the plain tfjs composition', () => {
  afterAll(() => disableNativeKernels());

  it('registers RMSNorm, RoPE and SwiGLU', () => {
    enableNativeKernels();
    for (const k of ['LwmRmsNorm', 'LwmRope', 'LwmSwiglu']) expect(isNativeKernelActive(k)).toBe(true);
  });

  for (const shape of [[1, 1, 8], [2, 7, 64], [3, 33, 100]] as const) {
    it(`rmsNorm ${JSON.stringify(shape)}: values and gradients`, () => {
      const e = shape[2];
      const x = tf.tensor(randomArray(shape[0] * shape[1] * e, 1).map((v) => v * 3), [...shape]);
      const w = tf.tensor1d(randomArray(e, 2));
      const dy = tf.tensor(randomArray(x.size, 3), [...shape]);
      expectSame(both(() => rmsNorm(x, w, 1e-6)), 1e-5);
      expectSame(both(() => tf.grads((a, b) => tf.sum(tf.mul(rmsNorm(a!, b!, 1e-6), dy)))([x, w])), 1e-4);
    });
  }

  for (const layout of ['rotate-half', 'interleaved'] as const) {
    it(`RoPE (${layout}) at large positions: values and gradients`, () => {
      const [b, t, h, d] = [2, 5, 3, 16];
      const x = tf.tensor4d(randomArray(b * t * h * d, 4), [b, t, h, d]);
      const pos = tf.tensor2d([[0, 1, 2, 1000, 99999], [7, 8, 9, 10, 11]], [b, t], 'int32');
      const angles = ropeAngles(pos, ropeFrequencies(d, 5e7));
      const dy = tf.tensor4d(randomArray(x.size, 5), [b, t, h, d]);
      expectSame(both(() => applyRope(x, angles, layout)), 1e-6);
      expectSame(both(() => tf.grad((a) => tf.sum(tf.mul(applyRope(a as tf.Tensor4D, angles, layout), dy)))(x)), 1e-6);
    });
  }

  it('swiglu: values and gradients, including large |gate|', () => {
    const gate = tf.tensor2d(randomArray(6 * 37, 6).map((v) => v * 30), [6, 37]);
    const up = tf.tensor2d(randomArray(6 * 37, 7), [6, 37]);
    const dy = tf.tensor2d(randomArray(6 * 37, 8), [6, 37]);
    expectSame(both(() => swiglu(gate, up)), 1e-5);
    expectSame(both(() => tf.grads((g, u) => tf.sum(tf.mul(swiglu(g!, u!), dy)))([gate, up])), 1e-5);
  });

  it('do not leak tensors', async () => {
    enableNativeKernels();
    const x = tf.randomNormal([2, 3, 4, 8]) as tf.Tensor4D;
    const w = tf.ones([8]);
    const a = ropeAngles(tf.zeros([2, 3], 'int32'), ropeFrequencies(8, 1e4));
    await expectNoLeaks(() => {
      rmsNorm(x, w, 1e-6).dispose();
      applyRope(x, a).dispose();
      swiglu(x, x).dispose();
      tf.dispose(tf.grads((v) => tf.sum(swiglu(rmsNorm(applyRope(v as tf.Tensor4D, a), w, 1e-6), v!)))([x]));
    });
    tf.dispose([x, w, a.cos, a.sin]);
  });
});
