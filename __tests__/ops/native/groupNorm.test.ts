import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { groupNorm } from '../../../ops/index.js';
import { InputError } from '../../../ops/errors.js';
import { disableNativeKernels, enableNativeKernels, isNativeKernelActive, loadAddon } from '../../../ops/native/index.js';
import { expectMatch, plain } from '../../helpers/native.js';
import { expectNoLeaks, oneLineError, randomArray } from '../../helpers/tensors.js';

const addon = loadAddon();
const suite = addon && typeof addon['groupNorm'] === 'function' ? describe : describe.skip;

/** Values in [-1, 1) * spread + offset, from a seed. */
const rand = (shape: number[], seed: number, spread = 1, offset = 0) =>
  tf.tensor(randomArray(shape.reduce((a, b) => a * b, 1), seed).map((v) => v * spread + offset), shape);

interface Case {
  x: number[];
  groups: number;
}

const CASES: Case[] = [
  { x: [1, 4, 4, 16], groups: 1 },
  { x: [2, 3, 5, 16], groups: 8 }, // batch 2, two channels a group
  { x: [1, 7, 9, 64], groups: 32 },
  { x: [3, 5, 3, 6], groups: 3 }, // channels not a multiple of the vector width
  { x: [2, 9, 7, 99], groups: 33 }, // odd everything: 3 channels a group, a 3-channel vector tail
  { x: [2, 1, 1, 32], groups: 8 }, // one pixel
  { x: [2, 32, 32, 40], groups: 8 }, // several chunks per image (threads)
];

suite('native GroupNorm (LwmGroupNorm)', () => {
  let isa: 'avx512' | 'avx2' | 'scalar' = 'scalar';
  beforeAll(async () => {
    await tf.setBackend('cpu');
    enableNativeKernels();
    isa = addon!.info().isa as typeof isa;
  });
  afterAll(() => {
    addon!.setIsa(isa);
    disableNativeKernels();
  });

  it('is served natively', () => {
    expect(isNativeKernelActive('LwmGroupNorm')).toBe(true);
    // groupNorm returns exactly what the addon computes (the kernel really is the native one).
    const x = rand([2, 3, 4, 8], 90) as tf.Tensor4D;
    const y = groupNorm(x, tf.ones([8]), tf.zeros([8]), 2, 1e-6, { silu: true });
    const direct = (addon!['groupNorm'] as (...a: unknown[]) => Float32Array)(x.dataSync(), new Float32Array(8).fill(1), new Float32Array(8), 2, 12, 8, 2, 1e-6, true);
    expect(Array.from(y.dataSync())).toEqual(Array.from(direct));
    tf.dispose([x, y]);
  });

  // Run under each ISA this machine has, so the scalar fallback is checked on AVX2 machines too.
  for (const simd of ['best', 'scalar'] as const) {
    it(`matches the tfjs composition with and without SiLU (${simd} kernels)`, () => {
      if (simd === 'scalar') addon!.setIsa('scalar');
      let seed = 1;
      for (const c of CASES) {
        const ch = c.x[3]!;
        const x = rand(c.x, seed++, 3, 0.5) as tf.Tensor4D;
        const scale = rand([ch], seed++, 1, 1);
        const bias = rand([ch], seed++);
        for (const silu of [false, true]) {
          const got = groupNorm(x, scale, bias, c.groups, 1e-6, { silu });
          const want = plain(() => groupNorm(x, scale, bias, c.groups, 1e-6, { silu }));
          expectMatch(got, want, `x=[${c.x}] groups=${c.groups} silu=${silu}`, 1e-5);
          tf.dispose([got, want]);
        }
        tf.dispose([x, scale, bias]);
      }
      addon!.setIsa(isa);
    });
  }

  it('keeps float32 accuracy when the mean dwarfs the spread (float64 statistics)', () => {
    const [b, h, w, c, g] = [2, 6, 5, 12, 4];
    const xs = randomArray(b * h * w * c, 40).map((v) => v * 0.01 + 300);
    const scale = randomArray(c, 41);
    const bias = randomArray(c, 42);
    const got = groupNorm(tf.tensor4d(xs, [b, h, w, c]), tf.tensor1d(scale), tf.tensor1d(bias), g, 1e-6).dataSync();
    // The same in float64, the two-pass way.
    const cg = c / g;
    let worst = 0;
    for (let n = 0; n < b; n++)
      for (let k = 0; k < g; k++) {
        const idx: number[] = [];
        for (let p = 0; p < h * w; p++) for (let j = 0; j < cg; j++) idx.push((n * h * w + p) * c + k * cg + j);
        const mean = idx.reduce((s, i) => s + xs[i]!, 0) / idx.length;
        const variance = idx.reduce((s, i) => s + (xs[i]! - mean) ** 2, 0) / idx.length;
        for (const i of idx) worst = Math.max(worst, Math.abs(got[i]! - (((xs[i]! - mean) / Math.sqrt(variance + 1e-6)) * scale[i % c]! + bias[i % c]!)));
      }
    // The float32 mean (Flax's too) is off by up to half an ulp of 300, 1.5e-5, or 3e-3 of the
    // 0.0058 std; in float32 E[x^2] - E[x]^2 would have lost the variance entirely.
    expect(worst).toBeLessThan(5e-3);
  });

  it('maps a constant input to bias (and silu(bias))', () => {
    const bias = rand([64], 50, 4);
    const x = tf.fill([2, 3, 3, 64], 2.5) as tf.Tensor4D;
    const want = tf.tile(bias.reshape([1, 1, 1, 64]), [2, 3, 3, 1]);
    const y = groupNorm(x, tf.ones([64]), bias, 32, 1e-6);
    const ys = groupNorm(x, tf.ones([64]), bias, 32, 1e-6, { silu: true });
    const wantSilu = tf.mul(want, tf.sigmoid(want));
    expectMatch(y, want, 'constant', 1e-6);
    expectMatch(ys, wantSilu, 'constant silu', 1e-6);
    tf.dispose([bias, x, want, y, ys, wantSilu]);
  });

  it('passes NaN through and saturates SiLU like x * sigmoid(x) for large |y|', () => {
    const xs = randomArray(2 * 8, 60);
    xs[3] = NaN; // image 0, group 0 (channels 0-3)
    const x = tf.tensor4d(xs, [2, 1, 2, 4]);
    const y = groupNorm(x, tf.ones([4]), tf.zeros([4]), 1, 1e-6).dataSync();
    expect(Array.from(y.slice(0, 8)).every(Number.isNaN)).toBe(true);
    expect(Array.from(y.slice(8)).some(Number.isNaN)).toBe(false);
    // Scale 100 spreads y to about +-170: exp(-y) over- and underflows in float32.
    const big = groupNorm(rand([1, 4, 4, 8], 61) as tf.Tensor4D, tf.fill([8], 100), tf.zeros([8]), 2, 1e-6, { silu: true });
    const bigWant = plain(() => groupNorm(rand([1, 4, 4, 8], 61) as tf.Tensor4D, tf.fill([8], 100), tf.zeros([8]), 2, 1e-6, { silu: true }));
    expectMatch(big, bigWant, 'large |y|', 1e-6);
    tf.dispose([x, big, bigWant]);
  });

  it('differentiates through the tfjs composition under a gradient tape', () => {
    const x = rand([2, 3, 4, 8], 70) as tf.Tensor4D;
    const scale = rand([8], 71);
    const bias = rand([8], 72);
    const dy = rand([2, 3, 4, 8], 73);
    const f = (a: tf.Tensor, s: tf.Tensor, b: tf.Tensor) => groupNorm(a as tf.Tensor4D, s, b, 4, 1e-6, { silu: true }).mul(dy).sum();
    const got = tf.grads(f)([x, scale, bias]);
    const want = plain(() => tf.grads(f)([x, scale, bias]));
    got.forEach((g, i) => expectMatch(g, want[i]!, `grad ${i}`, 1e-5));
  });

  it('rejects bad groups and parameter sizes with one-line InputErrors', () => {
    const x = tf.zeros([1, 2, 2, 6]) as tf.Tensor4D;
    expect(oneLineError(() => groupNorm(x, tf.ones([6]), tf.zeros([6]), 4, 1e-6), InputError)).toMatch(/6 channels are not divisible into 4 groups/);
    expect(oneLineError(() => groupNorm(x, tf.ones([5]), tf.zeros([6]), 3, 1e-6), InputError)).toMatch(/must hold 6 values/);
    expect(oneLineError(() => groupNorm(tf.zeros([2, 6]) as unknown as tf.Tensor4D, tf.ones([6]), tf.zeros([6]), 3, 1e-6), InputError)).toMatch(/rank 4/);
  });

  it('leaks no tensors', async () => {
    const x = rand([2, 5, 5, 16], 80) as tf.Tensor4D;
    const scale = tf.ones([16]);
    const bias = tf.zeros([16]);
    await expectNoLeaks(() => {
      groupNorm(x, scale, bias, 4, 1e-6, { silu: true }).dispose();
      plain(() => groupNorm(x, scale, bias, 4, 1e-6, { silu: true })).dispose();
      tf.dispose(tf.grads((a: tf.Tensor) => groupNorm(a as tf.Tensor4D, scale, bias, 4, 1e-6).sum())([x]));
    });
    tf.dispose([x, scale, bias]);
  });
});
