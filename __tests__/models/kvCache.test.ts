import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from '@jest/globals';
import { createModel, initBackend, KVCache } from '../../src/index.js';

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
