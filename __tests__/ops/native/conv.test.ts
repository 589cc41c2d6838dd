import * as tf from '@tensorflow/tfjs';
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { disableNativeKernels, enableNativeKernels, isNativeKernelActive, loadAddon } from '../../../ops/native/index.js';
import { convAddon } from '../../../ops/native/convKernels.js';
import { expectNoLeaks } from '../../helpers/tensors.js';
import { expectMatch as expectClose, plain, randomTensors } from '../../helpers/native.js';

const addon = loadAddon();
const suite = addon && convAddon(addon) ? describe : describe.skip;
const rand = randomTensors(7);
const expectMatch = (got: tf.Tensor, want: tf.Tensor, what: string, rtol = 1e-4) => expectClose(got, want, what, rtol);

type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];

interface Case {
  x: number[]; // [n, h, w, cin]
  f: number[]; // [kh, kw, cin, cout]
  stride: number | [number, number];
  pad: Pad;
}

const CASES: Case[] = [
  { x: [1, 8, 8, 16], f: [3, 3, 16, 16], stride: 1, pad: 'same' },
  { x: [1, 7, 9, 5], f: [3, 3, 5, 11], stride: 1, pad: 'same' }, // odd sizes, odd channels
  { x: [1, 6, 10, 3], f: [3, 3, 3, 17], stride: 1, pad: 'same' }, // even input, cin 3
  { x: [2, 9, 7, 13], f: [3, 3, 13, 19], stride: 2, pad: 'same' }, // batch 2, stride 2 same, odd
  { x: [1, 10, 12, 9], f: [3, 3, 9, 24], stride: 2, pad: 'same' }, // stride 2 same, even
  { x: [1, 9, 9, 7], f: [3, 3, 7, 33], stride: 2, pad: 'valid' }, // VQGAN downsample (after padding)
  { x: [3, 8, 6, 12], f: [3, 3, 12, 5], stride: 2, pad: 'valid' },
  { x: [1, 5, 5, 4], f: [3, 3, 4, 6], stride: 1, pad: 'valid' },
  { x: [2, 7, 5, 37], f: [1, 1, 37, 29], stride: 1, pad: 'same' }, // 1x1 direct GEMM
  { x: [1, 9, 9, 10], f: [1, 1, 10, 7], stride: 2, pad: 'valid' }, // 1x1 strided
  { x: [1, 11, 6, 6], f: [5, 2, 6, 9], stride: [2, 1], pad: 'same' }, // rectangular kernel and strides
  { x: [1, 6, 7, 5], f: [3, 3, 5, 8], stride: 1, pad: 2 }, // explicit numeric padding
  { x: [1, 6, 7, 5], f: [3, 3, 5, 8], stride: 2, pad: [[0, 0], [1, 2], [0, 1], [0, 0]] }, // explicit per side
  { x: [1, 2, 2, 3], f: [3, 3, 3, 4], stride: 1, pad: 'same' }, // kernel larger than the input
  { x: [1, 33, 31, 64], f: [3, 3, 64, 48], stride: 1, pad: 'same' }, // several tiles
];

function label(c: Case): string {
  return `x=[${c.x}] f=[${c.f}] stride=${JSON.stringify(c.stride)} pad=${JSON.stringify(c.pad)}`;
}

suite('native Conv2D', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
    enableNativeKernels();
  });
  afterAll(() => disableNativeKernels());

  it('serves Conv2D and FusedConv2D natively', () => {
    expect(isNativeKernelActive('Conv2D')).toBe(true);
    expect(isNativeKernelActive('FusedConv2D')).toBe(true);
    // tf.conv2d returns exactly what the addon computes (the kernel really is the native one).
    const x = rand([1, 5, 6, 3]) as tf.Tensor4D;
    const f = rand([3, 3, 3, 4]) as tf.Tensor4D;
    const y = tf.conv2d(x, f, 1, 'same');
    const direct = convAddon(addon!)!.conv2d(
      x.dataSync() as Float32Array, f.dataSync() as Float32Array, 1, 5, 6, 3, 3, 3, 4, 1, 1, 1, 1, 5, 6,
    );
    expect(Array.from(y.dataSync())).toEqual(Array.from(direct));
    tf.dispose([x, f, y]);
  });

  it('matches tfjs on odd shapes, strides, same/valid/explicit padding, 1x1 and batches', () => {
    for (const c of CASES) {
      const x = rand(c.x) as tf.Tensor4D;
      const f = rand(c.f) as tf.Tensor4D;
      const got = tf.conv2d(x, f, c.stride, c.pad);
      const want = plain(() => tf.conv2d(x, f, c.stride, c.pad));
      expectMatch(got, want, label(c));
      tf.dispose([x, f, got, want]);
    }
  });

  it('applies bias and activations of tf.fused.conv2d like tfjs', () => {
    const c = CASES[3]!;
    const x = rand(c.x) as tf.Tensor4D;
    const f = rand(c.f) as tf.Tensor4D;
    const cout = c.f[3]!;
    const bias = rand([cout]);
    const bias4 = rand([1, 1, 1, cout]);
    const alpha = rand([cout]);
    const acts = ['linear', 'relu', 'relu6', 'leakyrelu', 'elu', 'sigmoid', 'prelu'] as const;
    for (const activation of acts) {
      for (const b of [undefined, bias, bias4]) {
        const cfg = {
          x, filter: f, strides: c.stride, pad: c.pad, bias: b, activation,
          preluActivationWeights: activation === 'prelu' ? alpha : undefined, leakyreluAlpha: 0.3,
        } as Parameters<typeof tf.fused.conv2d>[0];
        const got = tf.fused.conv2d(cfg);
        const want = plain(() => tf.fused.conv2d(cfg));
        expectMatch(got, want, `${activation} bias=${b ? `[${b.shape}]` : 'none'}`);
        tf.dispose([got, want]);
      }
    }
    // A scalar bias broadcasts differently: left to tfjs, same result.
    const sb = tf.scalar(0.5);
    const got = tf.fused.conv2d({ x, filter: f, strides: c.stride, pad: c.pad, bias: sb, activation: 'relu' });
    const want = plain(() => tf.fused.conv2d({ x, filter: f, strides: c.stride, pad: c.pad, bias: sb, activation: 'relu' }));
    expectMatch(got, want, 'scalar bias');
    tf.dispose([x, f, bias, bias4, alpha, sb, got, want]);
  });

  it('falls back to tfjs for dilations and NCHW', () => {
    const x = rand([1, 9, 8, 5]) as tf.Tensor4D;
    const f = rand([3, 3, 5, 6]) as tf.Tensor4D;
    const got = tf.conv2d(x, f, 1, 'same', 'NHWC', 2);
    const want = plain(() => tf.conv2d(x, f, 1, 'same', 'NHWC', 2));
    expectMatch(got, want, 'dilation 2');
    expect(got.shape).toEqual([1, 9, 8, 6]);
    const fused = tf.fused.conv2d({ x, filter: f, strides: 1, pad: 'valid', dilations: 2, activation: 'relu' });
    const fusedWant = plain(() => tf.fused.conv2d({ x, filter: f, strides: 1, pad: 'valid', dilations: 2, activation: 'relu' }));
    expectMatch(fused, fusedWant, 'fused dilation 2');
    // NCHW is not implemented by tfjs' cpu kernel for every case either; both must agree.
    let nativeErr: unknown = null;
    let plainErr: unknown = null;
    let a: tf.Tensor | null = null;
    let b: tf.Tensor | null = null;
    try { a = tf.conv2d(x, f, 1, 'same', 'NCHW'); } catch (e) { nativeErr = e; }
    try { b = plain(() => tf.conv2d(x, f, 1, 'same', 'NCHW')); } catch (e) { plainErr = e; }
    expect(!!nativeErr).toBe(!!plainErr);
    if (a && b) expectMatch(a, b, 'NCHW');
    tf.dispose([x, f, got, want, fused, fusedWant, ...(a ? [a] : []), ...(b ? [b] : [])]);
  });

  it("takes the VQGAN Downsample's bottom/right padding in place: exactly pad + VALID conv", () => {
    const pad: [[number, number], [number, number], [number, number], [number, number]] = [[0, 0], [0, 1], [0, 1], [0, 0]];
    for (const xs of [[1, 8, 8, 16], [2, 7, 10, 5]]) {
      const x = rand(xs) as tf.Tensor4D;
      const f = rand([3, 3, xs[3]!, 12]) as tf.Tensor4D;
      const bias = rand([12]);
      const padded = tf.pad(x, pad);
      const pairs = [
        [tf.conv2d(x, f, 2, pad), tf.conv2d(padded, f, 2, 'valid')],
        [tf.fused.conv2d({ x, filter: f, strides: 2, pad, bias }), tf.fused.conv2d({ x: padded, filter: f, strides: 2, pad: 'valid', bias })],
      ] as const;
      for (const [got, want] of pairs) {
        expect(got.shape).toEqual(want.shape);
        expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
      }
      tf.dispose([x, f, bias, padded, ...pairs.flat()]);
    }
  });

  it('upsamples (resizeNearestNeighbor) by powers of two exactly like tfjs, and leaves other cases to it', () => {
    expect(isNativeKernelActive('ResizeNearestNeighbor')).toBe(true);
    const x = rand([2, 3, 5, 7]) as tf.Tensor4D;
    const cases: [[number, number], boolean, boolean][] = [
      [[6, 10], false, false], // 2x: the VQGAN's Upsample
      [[12, 5], false, false], // 4x rows only
      [[9, 10], false, false], // 3x rows: tfjs' kernel
      [[6, 10], true, false],
      [[6, 10], false, true],
    ];
    for (const [size, alignCorners, halfPixelCenters] of cases) {
      const got = tf.image.resizeNearestNeighbor(x, size, alignCorners, halfPixelCenters);
      const want = plain(() => tf.image.resizeNearestNeighbor(x, size, alignCorners, halfPixelCenters));
      expect(got.shape).toEqual(want.shape);
      expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
      tf.dispose([got, want]);
    }
    x.dispose();
  });

  it('differentiates through the native forward (tfjs gradients)', () => {
    const x = rand([1, 6, 5, 4]) as tf.Tensor4D;
    const f = rand([3, 3, 4, 3]) as tf.Tensor4D;
    const g = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, 'same').square().sum());
    const got = g([x, f]);
    const want = plain(() => g([x, f]));
    for (let i = 0; i < 2; i++) expectMatch(got[i]!, want[i]!, `grad ${i}`);
    tf.dispose([x, f, ...got, ...want]);
  });

  it('leaks no tensors', async () => {
    const x = rand([2, 7, 7, 6]) as tf.Tensor4D;
    const f = rand([3, 3, 6, 5]) as tf.Tensor4D;
    const bias = rand([5]);
    const one = tf.scalar(1);
    await expectNoLeaks(() => {
      tf.conv2d(x, f, 2, 'valid').dispose();
      tf.conv2d(x, f, 1, 'same', 'NHWC', 2).dispose();
      tf.fused.conv2d({ x, filter: f, strides: 1, pad: 'same', bias, activation: 'relu' }).dispose();
      tf.fused.conv2d({ x, filter: f, strides: 1, pad: 'same', bias: one, activation: 'relu' }).dispose();
      tf.image.resizeNearestNeighbor(x, [14, 14]).dispose();
    });
    tf.dispose([x, f, bias, one]);
  });
});
