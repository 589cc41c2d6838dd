import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from '@jest/globals';
import {
  conv2d,
  groupNorm,
  initVqganParams,
  padBottomRight,
  upsampleNearest2x,
  vectorQuantize,
  Vqgan,
  VQGAN_DEFAULTS,
  VQGAN_TINY,
  vqganConfig,
  vqganConfigFromJson,
  vqganDownsampleFactor,
  vqganParamCount,
  vqganParamSpecs,
} from '../../models/vqgan.js';
import { BOTTOM_RIGHT_PADDING, firstArgMin } from '../../models/vqgan/layers.js';
import { CheckpointError, ConfigError, InputError } from '../../ops/errors.js';
import { disableNativeKernels, enableNativeKernels, isNativeKernelActive, loadAddon } from '../../ops/native/index.js';
import { expectMatch, plain } from '../helpers/native.js';
import { fixture } from '../helpers/paths.js';
import { expectNoLeaks, maxAbsDiff, oneLineError, randomArray } from '../helpers/tensors.js';

const fixtureDir = fixture('tiny-vqgan-pickle');

/** params.txt: `name [d0, d1, ...] dtype sha256` per line, '#' comments. */
function readParamsTxt(): { name: string; shape: number[]; dtype: string }[] {
  const text = fs.readFileSync(path.join(fixtureDir, 'params.txt'), 'utf8');
  return text
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'))
    .map((l) => {
      const m = /^(\S+) (\[[^\]]*\]) (\S+) [0-9a-f]{64}$/.exec(l);
      if (!m) throw new Error(`unparsable params.txt line: ${l}`);
      return { name: m[1]!, shape: JSON.parse(m[2]!) as number[], dtype: m[3]! };
    });
}

// The fixture's widths (8/16/16/32/48) with 8 GroupNorm groups so that it runs; LWM uses 32.
const runnable = vqganConfig({ ...VQGAN_TINY, numGroups: 8 });
const model = new Vqgan(runnable, initVqganParams(runnable, 1));
afterAll(() => model.dispose());

const frames = (t: number, h: number, w: number, seed: number) => tf.tensor4d(randomArray(t * h * w * 3, seed), [t, h, w, 3]);

/** Throws an InputError (or the given class) with a one-line message matching re. */
function expectOneLine(fn: () => unknown, re: RegExp, cls: new (...a: never[]) => Error = InputError): void {
  expect(oneLineError(fn, cls)).toMatch(re);
}

describe('VQGAN config and parameter tree', () => {
  it('tiny specs equal the fixture params.txt names, shapes and order', () => {
    const want = readParamsTxt();
    expect(want).toHaveLength(277);
    expect(want.every((p) => p.dtype === 'float32')).toBe(true);
    const got = vqganParamSpecs(VQGAN_TINY);
    expect(got.map((s) => s.name)).toEqual(want.map((p) => p.name));
    expect(got.map((s) => s.shape)).toEqual(want.map((p) => p.shape));
    expect(vqganParamCount(VQGAN_TINY)).toBe(578643);
  });

  it('the fixture config.json gives VQGAN_TINY', () => {
    const json = JSON.parse(fs.readFileSync(path.join(fixtureDir, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(vqganConfigFromJson(json)).toEqual({ ...VQGAN_TINY });
  });

  it("LWM's config: 277 tensors, 146,244,675 parameters, 16x downsampling (specs only)", () => {
    const c = vqganConfig();
    expect(c).toEqual({ ...VQGAN_DEFAULTS });
    expect(vqganParamSpecs(c)).toHaveLength(277);
    expect(vqganParamCount(c)).toBe(146_244_675);
    expect(vqganDownsampleFactor(c)).toBe(16);
    const spec = new Map(vqganParamSpecs(c).map((s) => [s.name, s.shape]));
    expect(spec.get('quantize/embeddings')).toEqual([8192, 64]);
    expect(spec.get('decoder/UpsamplingBlock_0/Upsample_0/Conv_0/kernel')).toEqual([3, 3, 768, 768]);
    expect(spec.get('decoder/UpsamplingBlock_4/ResnetBlock_0/Conv_2/kernel')).toEqual([1, 1, 256, 128]);
    expect(spec.has('decoder/UpsamplingBlock_4/Upsample_0/Conv_0/kernel')).toBe(false);
    expect(spec.has('encoder/DownsamplingBlock_4/Downsample_0/Conv_0/kernel')).toBe(false);
    expect(spec.get('encoder/Conv_1/kernel')).toEqual([3, 3, 768, 64]);
  });

  it('rejects invalid configs with one-line ConfigErrors', () => {
    expectOneLine(() => vqganConfig({ hiddenChannels: 0 }), /hiddenChannels must be a positive integer/, ConfigError);
    expectOneLine(() => vqganConfig({ channelMult: [] }), /channelMult/, ConfigError);
    expectOneLine(() => vqganConfig({ attnResolutions: [16] }), /attention blocks are not supported/, ConfigError);
    // LWM's 32 groups do not divide the fixture's widths.
    expectOneLine(() => new Vqgan(VQGAN_TINY, new Map()), /width 8 is not divisible by numGroups 32/, ConfigError);
  });

  it('rejects params that do not match the config', () => {
    const params = initVqganParams(runnable, 0);
    params.get('quant_conv/bias')!.dispose();
    params.delete('quant_conv/bias');
    expectOneLine(() => new Vqgan(runnable, params), /missing 'quant_conv\/bias'/, CheckpointError);
    params.set('quant_conv/bias', tf.zeros([9]));
    expectOneLine(() => new Vqgan(runnable, params), /'quant_conv\/bias' has shape \[9\], the config needs \[8\]/, CheckpointError);
    for (const t of params.values()) t.dispose();
  });

  it('initialisation is deterministic per seed', () => {
    const small = vqganConfig({ ...runnable, channelMult: [1, 2] });
    const a = initVqganParams(small, 3);
    const b = initVqganParams(small, 3);
    const c = initVqganParams(small, 4);
    const name = 'decoder/MidBlock_0/ResnetBlock_0/Conv_0/kernel';
    expect(maxAbsDiff(a.get(name)!.dataSync(), b.get(name)!.dataSync())).toBe(0);
    expect(maxAbsDiff(a.get(name)!.dataSync(), c.get(name)!.dataSync())).toBeGreaterThan(0);
    expect(Array.from(a.get('encoder/GroupNorm_0/scale')!.dataSync()).every((v) => v === 1)).toBe(true);
    const cb = a.get('quantize/embeddings')!.dataSync();
    expect(Array.from(cb).every((v) => Math.abs(v) <= 1 / 64)).toBe(true);
    for (const m of [a, b, c]) for (const t of m.values()) t.dispose();
  });
});

describe('VQGAN layers', () => {
  it('Upsample repeats each value in a 2x2 block', () => {
    const y = upsampleNearest2x(tf.tensor4d([1, 2, 3, 4], [1, 2, 2, 1]));
    expect(y.shape).toEqual([1, 4, 4, 1]);
    expect(Array.from(y.dataSync())).toEqual([1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
    // Odd sizes, batch 2: the same as repeating along new axes.
    const x = tf.tensor4d(randomArray(2 * 3 * 5 * 4, 12), [2, 3, 5, 4]);
    const tiled = x.reshape([2, 3, 1, 5, 1, 4]).tile([1, 1, 2, 1, 2, 1]).reshape([2, 6, 10, 4]);
    expect(maxAbsDiff(upsampleNearest2x(x).dataSync(), tiled.dataSync())).toBe(0);
  });

  it('Downsample (pad bottom/right, 3x3 stride-2 VALID conv) maps (1,4,4,C) to (1,2,2,C)', () => {
    const x = tf.ones([1, 4, 4, 2]) as tf.Tensor4D;
    const y = conv2d(padBottomRight(x), tf.ones([3, 3, 2, 2]), tf.zeros([2]), 2, 'valid');
    expect(y.shape).toEqual([1, 2, 2, 2]);
    // Top-left window sees 3x3 ones; bottom-right window covers the zero padding (2x2 ones).
    expect(Array.from(y.dataSync())).toEqual([18, 18, 12, 12, 12, 12, 8, 8]);
    // The model pads inside the conv instead: the same values.
    const direct = conv2d(x, tf.ones([3, 3, 2, 2]), tf.zeros([2]), 2, BOTTOM_RIGHT_PADDING);
    expect(Array.from(direct.dataSync())).toEqual([18, 18, 12, 12, 12, 12, 8, 8]);
  });

  it('GroupNorm of a constant input returns bias', () => {
    const bias = tf.tensor1d(randomArray(64, 5));
    const y = groupNorm(tf.fill([2, 3, 3, 64], 2) as tf.Tensor4D, tf.ones([64]), bias, 32, 1e-6);
    expect(maxAbsDiff(y.dataSync(), tf.tile(bias.reshape([1, 1, 1, 64]), [2, 3, 3, 1]).dataSync())).toBeLessThan(1e-6);
  });

  it('GroupNorm matches a naive per-group reference', () => {
    const [b, h, w, c, g] = [2, 3, 2, 6, 3];
    const xs = randomArray(b * h * w * c, 9);
    const scale = randomArray(c, 10);
    const bias = randomArray(c, 11);
    const y = groupNorm(tf.tensor4d(xs, [b, h, w, c]), tf.tensor1d(scale), tf.tensor1d(bias), g, 1e-6).dataSync();
    const want = new Float32Array(xs.length);
    const cg = c / g;
    for (let n = 0; n < b; n++)
      for (let k = 0; k < g; k++) {
        const idx: number[] = [];
        for (let p = 0; p < h * w; p++) for (let j = 0; j < cg; j++) idx.push((n * h * w + p) * c + k * cg + j);
        const mean = idx.reduce((s, i) => s + xs[i]!, 0) / idx.length;
        const variance = idx.reduce((s, i) => s + (xs[i]! - mean) ** 2, 0) / idx.length;
        for (const i of idx) want[i] = ((xs[i]! - mean) / Math.sqrt(variance + 1e-6)) * scale[i % c]! + bias[i % c]!;
      }
    expect(maxAbsDiff(y, want)).toBeLessThan(1e-5);
  });

  it('quantizer: a codebook row maps to its index; equal rows tie to the lowest index', () => {
    // Rows 1 and 3 are identical; row 2 is another point.
    const cb = tf.tensor2d([[0, 0, 0], [1, 2, 3], [-1, 0.5, 2], [1, 2, 3], [5, 5, 5]]);
    const z = tf.tensor3d([[[1, 2, 3], [-1, 0.5, 2], [0, 0, 0], [5, 5, 5], [1.1, 2, 2.9], [4, 4, 4.5]]]);
    const { codes, quantized } = vectorQuantize(z, cb);
    expect(codes.dtype).toBe('int32');
    expect(codes.shape).toEqual([1, 6]);
    expect(Array.from(codes.dataSync())).toEqual([1, 2, 0, 4, 1, 4]);
    expect(quantized.shape).toEqual([1, 6, 3]);
    expect(Array.from(quantized.dataSync().slice(0, 3))).toEqual([1, 2, 3]);
    // All rows equal: every latent takes index 0.
    const same = vectorQuantize(tf.tensor2d(randomArray(12, 3), [4, 3]), tf.tensor2d([[1, 1, 1], [1, 1, 1], [1, 1, 1]]));
    expect(Array.from(same.codes.dataSync())).toEqual([0, 0, 0, 0]);
    // Other backends use an argmin that does not rely on theirs: same first-minimum ties.
    const dist = tf.tensor2d([[3, 1, 1, 2], [0, 0, 0, 0], [5, 4, 3, -1], [-2, 7, -2, -2]]);
    expect(Array.from(firstArgMin(dist).dataSync())).toEqual([1, 0, 3, 0]);
    expect(Array.from(tf.argMin(dist, 1).dataSync())).toEqual([1, 0, 3, 0]);
  });
});

describe('Vqgan encode / decode', () => {
  it('encodes 2 frames of 32x32 to int32 codes [2, 2, 2] in range, and decodes to [2, 32, 32, 3] in [-1, 1]', () => {
    const codes = model.encode(frames(2, 32, 32, 1));
    expect(codes.shape).toEqual([2, 2, 2]);
    expect(codes.dtype).toBe('int32');
    expect(Array.from(codes.dataSync()).every((v) => v >= 0 && v < 64)).toBe(true);
    const out = model.decode(codes);
    expect(out.shape).toEqual([2, 32, 32, 3]);
    expect(out.dtype).toBe('float32');
    expect(Array.from(out.dataSync()).every((v) => v >= -1 && v <= 1)).toBe(true);
    // Non-square sizes work too.
    expect(model.encode(frames(1, 16, 48, 2)).shape).toEqual([1, 1, 3]);
  });

  it('encode = quantize(encodeLatents) and decode = decodeLatents(embed); quantized = codebook rows', () => {
    const x = frames(1, 32, 16, 4);
    const latents = model.encodeLatents(x);
    expect(latents.shape).toEqual([1, 2, 1, 8]);
    const { codes, quantized } = model.quantize(latents);
    expect(Array.from(codes.dataSync())).toEqual(Array.from(model.encode(x).dataSync()));
    expect(maxAbsDiff(quantized.dataSync(), model.embed(codes).dataSync())).toBe(0);
    expect(maxAbsDiff(model.decodeLatents(quantized).dataSync(), model.decode(codes).dataSync())).toBe(0);
  });

  it('is deterministic: same seed and input give identical codes and frames', () => {
    const other = new Vqgan(runnable, initVqganParams(runnable, 1));
    const x = frames(1, 16, 32, 7);
    const codes = tf.tensor3d([[[0, 5], [63, 17]]], [1, 2, 2], 'int32');
    expect(Array.from(other.encode(x).dataSync())).toEqual(Array.from(model.encode(x).dataSync()));
    expect(maxAbsDiff(other.decode(codes).dataSync(), model.decode(codes).dataSync())).toBe(0);
    other.dispose();
  });

  it("runs with LWM's 32 GroupNorm groups", () => {
    const c = vqganConfig({ hiddenChannels: 32, channelMult: [1, 2, 1], zChannels: 8, quantizedEmbedDim: 8, numEmbeddings: 16 });
    const m = new Vqgan(c, initVqganParams(c, 2));
    const codes = m.encode(frames(1, 8, 8, 3));
    expect(codes.shape).toEqual([1, 2, 2]);
    expect(m.decode(codes).shape).toEqual([1, 8, 8, 3]);
    m.dispose();
  });

  it('leaks no tensors', async () => {
    await expectNoLeaks(() => {
      const x = frames(1, 16, 16, 8);
      const codes = model.encode(x);
      const out = model.decode(codes);
      const latents = model.encodeLatents(x);
      const q = model.quantize(latents);
      const rows = model.embed(codes);
      tf.dispose([x, codes, out, latents, q.codes, q.quantized, rows]);
      // Rejected inputs leak nothing either.
      const bad = tf.tensor3d([[[0, 64]]], [1, 1, 2], 'int32');
      expect(() => model.decode(bad)).toThrow(InputError);
      bad.dispose();
    });
  });

  it('bad inputs give one-line InputErrors', () => {
    expectOneLine(() => model.encode(tf.zeros([32, 32, 3]) as unknown as tf.Tensor4D), /must be rank 4 \[T, H, W, 3\], got rank 3/);
    expectOneLine(() => model.encode(tf.zeros([1, 32, 32, 3], 'int32') as tf.Tensor4D), /must be float32 in \[-1, 1\], got int32/);
    expectOneLine(() => model.encode(tf.zeros([1, 32, 32, 4]) as tf.Tensor4D), /must have 3 channels/);
    expectOneLine(() => model.encode(tf.zeros([1, 30, 32, 3]) as tf.Tensor4D), /multiples of 16, got 30x32/);
    expectOneLine(() => model.encode(tf.fill([1, 16, 16, 3], NaN) as tf.Tensor4D), /NaN or Infinity/);
    expectOneLine(() => model.decode(tf.zeros([2, 2, 2]) as tf.Tensor3D), /codes must be int32, got float32/);
    expectOneLine(() => model.decode(tf.zeros([2, 2], 'int32') as unknown as tf.Tensor3D), /codes must be rank 3/);
    expectOneLine(() => model.decode(tf.tensor3d([[[0, 64]]], [1, 1, 2], 'int32')), /codes must be in \[0, 64\), got values in \[0, 64\]/);
    expectOneLine(() => model.decode(tf.tensor3d([[[-1, 3]]], [1, 1, 2], 'int32')), /codes must be in \[0, 64\)/);
    expectOneLine(() => model.quantize(tf.zeros([1, 2, 2, 5]) as tf.Tensor4D), /latents must be float32 \[T, h, w, 8\]/);
  });
});

(loadAddon() ? describe : describe.skip)('Vqgan on the native kernels', () => {
  afterAll(() => disableNativeKernels());

  it('gives the plain tfjs latents, codes and frames', async () => {
    await tf.setBackend('cpu');
    enableNativeKernels();
    expect(isNativeKernelActive('LwmGroupNorm')).toBe(true);
    const x = frames(2, 32, 16, 21);
    const latents = model.encodeLatents(x);
    const want = plain(() => model.encodeLatents(x));
    expectMatch(latents, want, 'latents', 1e-4);
    const [codes, wantCodes] = [model.encode(x), plain(() => model.encode(x))];
    expect(Array.from(codes.dataSync())).toEqual(Array.from(wantCodes.dataSync()));
    const [out, wantOut] = [model.decode(codes), plain(() => model.decode(codes))];
    expectMatch(out, wantOut, 'frames', 1e-4);
    await expectNoLeaks(() => {
      tf.dispose([model.encode(x), model.decode(codes)]);
    });
    tf.dispose([x, latents, want, codes, wantCodes, out, wantOut]);
  });
});
