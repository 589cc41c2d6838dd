import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from '@jest/globals';
import { createModel, disableNativeKernels, enableNativeKernels, initBackend, KVCache } from '../../src/index.js';

await initBackend();
const model = createModel('tiny', { overrides: { vocabSize: 256, maxSeqLen: 1024 } });

function ids(n: number, seed = 1): number[] {
  return Array.from({ length: n }, (_, i) => (i * 31 + seed * 7) % 256);
}

/** Last-position logits after feeding `chunks` through one cache. */
function run(cache: KVCache, chunks: number[][]): Float32Array {
  let out: Float32Array = new Float32Array();
  for (const c of chunks) {
    const t = tf.tidy(() => model.forward(tf.tensor2d([c], [1, c.length], 'int32'), { cache, lastOnly: true }));
    out = t.dataSync() as Float32Array;
    t.dispose();
  }
  return out;
}

function full(tokens: number[]): Float32Array {
  const t = tf.tidy(() => model.forward(tf.tensor2d([tokens], [1, tokens.length], 'int32'), { lastOnly: true }));
  const out = t.dataSync() as Float32Array;
  t.dispose();
  return out;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('KVCache', () => {
  it('grows its in-place buffers past several capacity steps with the logits of a full forward', () => {
    const t = ids(700);
    const cache = new KVCache(model.config.numLayers);
    expect(cache.inPlace).toBe(true);
    const chunks = [t.slice(0, 200), t.slice(200, 250), ...t.slice(250, 270).map((x) => [x]), t.slice(270, 700)];
    const a = run(cache, chunks);
    expect(cache.length).toBe(700);
    expect(maxDiff(a, full(t))).toBeLessThan(1e-4);
    cache.dispose();
  });

  it('gives the same logits in place and by concatenation', () => {
    const t = ids(300, 2);
    const chunks = [t.slice(0, 100), t.slice(100, 299), [t[299]!]];
    const a = new KVCache(model.config.numLayers, { inPlace: true });
    const b = new KVCache(model.config.numLayers, { inPlace: false });
    expect(maxDiff(run(a, chunks), run(b, chunks))).toBeLessThan(1e-5);
    a.dispose();
    b.dispose();
  });

  it('after truncate, new tokens overwrite the forgotten rows', () => {
    const t = ids(120, 3);
    const other = ids(40, 4);
    const cache = new KVCache(model.config.numLayers);
    run(cache, [t]);
    cache.truncate(80);
    const a = run(cache, [other]);
    expect(maxDiff(a, full([...t.slice(0, 80), ...other]))).toBeLessThan(1e-4);
    cache.dispose();
  });

  it('layer() copies exactly the cached rows and fromLayers() restores a cache that continues identically', () => {
    const t = ids(90, 5);
    const cache = new KVCache(model.config.numLayers);
    run(cache, [t]);
    const layers = Array.from({ length: model.config.numLayers }, (_, i) => cache.layer(i)!);
    expect(layers[0]![0].shape).toEqual([1, 90, model.config.numKvHeads, model.config.headDim]);
    const copy = KVCache.fromLayers(layers);
    // Appending to the original must not change the copies handed out.
    const before = layers[0]![0].dataSync().slice();
    const a = run(cache, [[7]]);
    expect(Array.from(layers[0]![0].dataSync())).toEqual(Array.from(before));
    const b = run(copy, [[7]]);
    expect(Array.from(b)).toEqual(Array.from(a));
    for (const l of layers) tf.dispose(l);
    cache.dispose();
    copy.dispose();
  });

  it('frees every tensor', () => {
    const before = tf.memory().numTensors;
    const cache = new KVCache(model.config.numLayers);
    run(cache, [ids(300), [1], [2]]);
    cache.truncate(100);
    run(cache, [[3]]);
    cache.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('KVCache in bf16', () => {
  const rel = (a: Float32Array, b: Float32Array) => maxDiff(a, b) / Math.max(...Array.from(b, Math.abs));

  it('gives logits within bf16 rounding of the float32 cache, over prefill chunks and single tokens, natively and in plain tfjs', () => {
    const t = ids(400, 6);
    const chunks = [t.slice(0, 150), t.slice(150, 390), ...t.slice(390).map((x) => [x])];
    const f32 = run(new KVCache(model.config.numLayers), chunks);
    for (const native of [true, false]) {
      if (!native) disableNativeKernels();
      try {
        const cache = new KVCache(model.config.numLayers, { dtype: 'bf16' });
        const a = run(cache, chunks);
        expect(cache.length).toBe(400);
        // Keys and values carry 8 mantissa bits (relative error 2^-9 each).
        expect(rel(a, f32)).toBeLessThan(2e-2);
        expect(rel(a, f32)).toBeGreaterThan(0);
        expect(cache.bytes).toBe(model.config.numLayers * 2 * cache.allocated * model.config.numKvHeads * model.config.headDim * 2);
        cache.dispose();
      } finally {
        if (!native) enableNativeKernels();
      }
    }
  });

  it('holds half the bytes of a float32 cache, preallocated for its capacity, and grows past it', () => {
    const f = new KVCache(model.config.numLayers, { capacity: 600 });
    const h = new KVCache(model.config.numLayers, { dtype: 'bf16', capacity: 600 });
    run(f, [ids(10)]);
    run(h, [ids(10)]);
    expect(f.allocated).toBe(768);
    expect(h.allocated).toBe(768);
    expect(h.bytes).toBe(f.bytes / 2);
    run(h, [ids(700, 2)]);
    expect(h.allocated).toBeGreaterThanOrEqual(710);
    expect(h.length).toBe(710);
    f.dispose();
    h.dispose();
    expect(() => new KVCache(2, { dtype: 'f16' as 'bf16' })).toThrow(/KV cache dtype must be f32 or bf16, got "f16"/);
  });

  it('truncates, copies its layers out widened and restores from them', () => {
    const t = ids(120, 7);
    const other = ids(30, 8);
    const cache = new KVCache(model.config.numLayers, { dtype: 'bf16' });
    run(cache, [t]);
    cache.truncate(90);
    const a = run(cache, [other]);
    expect(rel(a, full([...t.slice(0, 90), ...other]))).toBeLessThan(2e-2);
    const layers = Array.from({ length: model.config.numLayers }, (_, i) => cache.layer(i)!);
    expect(layers[0]![0].shape).toEqual([1, 120, model.config.numKvHeads, model.config.headDim]);
    // Widened bf16: every value's low 16 bits are zero.
    const bits = new Uint32Array(layers[0]![0].dataSync().slice().buffer);
    expect(bits.every((u) => (u & 0xffff) === 0)).toBe(true);
    const copy = KVCache.fromLayers(layers, { dtype: 'bf16' });
    expect(Array.from(run(copy, [[5]]))).toEqual(Array.from(run(cache, [[5]])));
    for (const l of layers) tf.dispose(l);
    for (const c of [cache, copy]) c.dispose();
  });

  it('frees every tensor', () => {
    const before = tf.memory().numTensors;
    const cache = new KVCache(model.config.numLayers, { dtype: 'bf16', capacity: 300 });
    run(cache, [ids(200), [1], [2]]);
    cache.truncate(100);
    run(cache, [[3]]);
    cache.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
