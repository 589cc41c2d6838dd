import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from '@jest/globals';
import { createModel, initBackend, KVCache } from '../../../src/index.js';
import { KvPool } from '../../../src/serve/kvPool.js';

await initBackend();
const model = createModel('tiny', { overrides: { vocabSize: 64, maxSeqLen: 256 } });
const seg = (ids: number[]) => ({ tokens: ids, visionMask: ids.map(() => false) });

function filled(ids: number[]): KVCache {
  const c = new KVCache(model.config.numLayers);
  tf.tidy(() => model.forward(tf.tensor2d([ids], [1, ids.length], 'int32'), { cache: c, lastOnly: true })).dispose();
  return c;
}

describe('KvPool', () => {
  it('hands out the entry with the longest common start, truncated, leaving the last prompt token to run', () => {
    const pool = new KvPool(model.config.numLayers, 2);
    pool.give(filled([1, 2, 3, 4, 5]), seg([1, 2, 3, 4, 5]));
    pool.give(filled([1, 2, 9]), seg([1, 2, 9]));
    const a = pool.take(seg([1, 2, 3, 7, 7]));
    expect(a.reused).toBe(3);
    expect(a.cache.length).toBe(3);
    expect(pool.size).toBe(1);
    // The same prompt as an entry still runs its last token.
    const b = pool.take(seg([1, 2, 9]));
    expect(b.reused).toBe(2);
    const c = pool.take(seg([5, 5]));
    expect(c.reused).toBe(0);
    expect(c.cache.length).toBe(0);
    [a, b, c].forEach((x) => x.cache.dispose());
    pool.dispose();
  });

  it('keeps at most `slots` entries, freeing the least recently given; 0 slots keeps none', () => {
    const before = tf.memory().numTensors;
    const pool = new KvPool(model.config.numLayers, 1);
    pool.give(filled([1, 2, 3]), seg([1, 2, 3]));
    pool.give(filled([4, 5, 6]), seg([4, 5, 6]));
    expect(pool.size).toBe(1);
    expect(pool.take(seg([1, 2, 3, 4])).reused).toBe(0);
    const none = new KvPool(model.config.numLayers, 0);
    none.give(filled([1, 2]), seg([1, 2]));
    expect(none.size).toBe(0);
    pool.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
