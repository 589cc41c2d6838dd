import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from '@jest/globals';
import { disableNativeKernels, enableNativeKernels, isNativeKernelActive, loadAddon } from '../../../ops/native/index.js';
import { expectNoLeaks, maxAbsDiff, randomArray } from '../../helpers/tensors.js';

function both(fn: () => tf.Tensor | tf.Tensor[]): [Float32Array[], Float32Array[]] {
  const run = () => {
    const r = fn();
    return (Array.isArray(r) ? r : [r]).map((t) => Float32Array.from(t.dataSync()));
  };
  disableNativeKernels();
  const plain = run();
  enableNativeKernels();
  expect(isNativeKernelActive('Multiply')).toBe(true);
  return [plain, run()];
}

const t = (shape: number[], seed: number, scale = 1) => tf.tensor(randomArray(shape.reduce((a, b) => a * b, 1), seed).map((v) => v * scale), shape);

(loadAddon() ? describe : describe.skip)('native elementwise kernels equal the plain tfjs kernels', () => {
  afterAll(() => disableNativeKernels());

  const cases: [string, number[], number[]][] = [
    ['same shape', [64, 100], [64, 100]],
    ['row broadcast', [64, 100], [100]],
    ['column broadcast', [64, 100], [64, 1]],
    ['scalar', [64, 100], []],
    ['both broadcast, rank 3 vs 2', [4, 1, 2048], [7, 1]],
    ['scalar first', [], [70, 90]],
  ];
  for (const [name, as, bs] of cases) {
    it(`add, sub, mul, div: ${name}`, () => {
      const a = t(as, 1);
      const b = t(bs, 2).add(3); // keep divisors away from 0
      const [plain, native] = both(() => [tf.add(a, b), tf.sub(a, b), tf.mul(a, b), tf.div(a, b), tf.div(b, a.add(5))]);
      plain.forEach((p, i) => expect(maxAbsDiff(native[i]!, p)).toBeLessThan(1e-5));
    });
  }

  it('exp, sqrt, neg, square, including inf/NaN inputs', () => {
    const x = tf.tensor(Float32Array.from({ length: 5000 }, (_, i) => (i === 0 ? Infinity : i === 1 ? NaN : i === 2 ? -1 : (i % 200) / 20 - 5)));
    const [plain, native] = both(() => [tf.exp(x), tf.sqrt(x), tf.neg(x), tf.square(x)]);
    plain.forEach((p, i) => {
      for (let j = 0; j < p.length; j++) {
        if (Number.isNaN(p[j])) expect(native[i]![j]).toBeNaN();
        else if (!Number.isFinite(p[j]!)) expect(native[i]![j]).toBe(p[j]);
        else expect(Math.abs(native[i]![j]! - p[j]!)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(p[j]!)));
      }
    });
  });

  it('int32 and small tensors go to the JS kernels and stay exact', () => {
    const ai = tf.tensor1d(Array.from({ length: 5000 }, (_, i) => i), 'int32');
    const [plain, native] = both(() => [tf.add(ai, ai), tf.mul(t([3], 4), t([3], 5))]);
    plain.forEach((p, i) => expect(maxAbsDiff(native[i]!, p)).toBe(0));
  });

  it('embedding gradient (UnsortedSegmentSum) equals the JS kernel, repeated and out-of-range ids included', () => {
    const table = t([50, 16], 6);
    const ids = tf.tensor2d([[3, 3, 7, 49], [0, 3, 12, 7]], [2, 4], 'int32');
    const dy = t([2, 4, 16], 7);
    const [plain, native] = both(() => tf.grad((w) => tf.sum(tf.mul(tf.gather(w, ids), dy)))(table));
    expect(maxAbsDiff(native[0]!, plain[0]!)).toBeLessThan(1e-6);
    const seg = tf.tensor1d([0, 5, -1, 2], 'int32');
    const [p2, n2] = both(() => tf.unsortedSegmentSum(t([4, 3], 8), seg, 4));
    expect(maxAbsDiff(n2[0]!, p2[0]!)).toBeLessThan(1e-6);
  });

  it('does not leak tensors', async () => {
    enableNativeKernels();
    const a = t([64, 100], 9);
    const two = tf.scalar(2);
    await expectNoLeaks(() => tf.dispose([tf.add(a, a), tf.exp(a), tf.div(a, two)]));
    tf.dispose([a, two]);
  });
});
