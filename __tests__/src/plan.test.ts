import * as tf from '@tensorflow/tfjs';
import * as os from 'node:os';
import { describe, expect, it } from '@jest/globals';
import { InputError, presetConfig, type LlamaConfig } from '../../src/index.js';
import { availableMemory, cacheCapacity, fitsVerdict, longestContext, memoryBudget, planMemory, refuseIfTooLarge, weightBytes, RUNTIME_BYTES } from '../../src/plan.js';
import { KVCache } from '../../models/kvCache.js';

const GB = 1e9;
const GiB = 2 ** 30;
const c7b = presetConfig('7b');

describe('planMemory: weights', () => {
  it('7B in bf16 is about 13.5 GB (embeddings stay f32), int8 about 7 GB, f32 27 GB', () => {
    const bf16 = planMemory({ config: c7b, context: 1, dtype: 'bf16' });
    expect((bf16.weights + bf16.embeddings) / GB).toBeCloseTo(13.5, 0);
    expect(bf16.embeddings).toBe(32000 * 4096 * 4);
    const f32 = planMemory({ config: c7b, context: 1 });
    expect(f32.weights + f32.embeddings).toBe(6_738_415_616 * 4);
    expect(f32.parameters).toBe(6_738_415_616);
    const int8 = planMemory({ config: c7b, context: 1, dtype: 'int8' });
    expect((int8.weights + int8.embeddings) / GB).toBeGreaterThan(6.7);
    expect((int8.weights + int8.embeddings) / GB).toBeLessThan(7.3);
  });

  it('bf16 is 2 bytes per linear weight, int8 1 byte plus an fp32 scale per output row; norms stay f32', () => {
    const c = presetConfig('tiny');
    const { embeddings } = weightBytes(c);
    const linear = (c.numLayers * (4 * 64 * 64 + 3 * 64 * 172)) + 32000 * 64; // layers + lm_head
    const norms = (2 * c.numLayers + 1) * 64;
    expect(embeddings).toBe(32000 * 64 * 4);
    expect(weightBytes(c, 'f32').weights).toBe((linear + norms) * 4);
    expect(weightBytes(c, 'bf16').weights).toBe(linear * 2 + norms * 4);
    const rows = c.numLayers * (4 * 64 + 2 * 172 + 64) + 32000;
    expect(weightBytes(c, 'int8').weights).toBe(linear + rows * 4 + norms * 4);
  });

  it('a tied head shares the embedding; a vision model adds its own table and head', () => {
    const tied: LlamaConfig = { ...presetConfig('tiny'), tieWordEmbeddings: true };
    expect(weightBytes(tied).weights).toBe(weightBytes(presetConfig('tiny')).weights - 32000 * 64 * 4);
    const v = weightBytes(presetConfig('tiny-vision'));
    expect(v.embeddings).toBe((32000 + 8448) * 64 * 4);
  });
});

describe('planMemory: KV cache and activations', () => {
  it('7B at 32K in f32 holds 32 layers x 2 x 32768 x 4096 x 4 bytes = 34.4 GB of KV cache; bf16 half', () => {
    const p = planMemory({ config: c7b, context: 32768 });
    expect(p.kvCache).toBe(32 * 2 * 32768 * 4096 * 4);
    expect(p.kvCache / GB).toBeCloseTo(34.4, 1);
    expect(p.kvBytesPerToken).toBe(32 * 2 * 4096 * 4);
    expect(planMemory({ config: c7b, context: 32768, kvDtype: 'bf16' }).kvCache).toBe(p.kvCache / 2);
    expect(planMemory({ config: c7b, context: 32768, caches: 3 }).kvCache).toBe(3 * p.kvCache);
  });

  it('grouped-query models cache only their kv heads', () => {
    const gqa: LlamaConfig = { ...c7b, numKvHeads: 8 };
    expect(planMemory({ config: gqa, context: 1000 }).kvCache).toBe(32 * 2 * 1000 * 8 * 128 * 4);
  });

  it('total is the sum of the parts; activations follow the prefill chunk, not the context', () => {
    const p = planMemory({ config: c7b, context: 8192 });
    expect(p.total).toBe(p.runtime + p.weights + p.embeddings + p.kvCache + p.activations);
    expect(p.runtime).toBe(RUNTIME_BYTES);
    const small = planMemory({ config: c7b, context: 8192, prefillChunk: 128 });
    expect(small.activations).toBeLessThan(p.activations);
    expect(small.kvCache).toBe(p.kvCache);
    // A layer's intermediates of a 512-token chunk, (6E + 3Q + 3KV + 3I) floats per token, for
    // the running layer and the two before it (freed, not yet collected); not all 32 layers'.
    const layer = 512 * (12 * 4096 + 3 * 11008) * 4;
    expect(p.activations).toBeGreaterThan(3 * layer);
    expect(p.activations).toBeLessThan(3 * layer + 64 * 2 ** 20);
    expect(p.breakdown.at(-1)).toMatch(/^total\s+\d+(\.\d)? GiB$/);
  });

  it('without native kernels the attention scores over the cache capacity count too', () => {
    const native = planMemory({ config: presetConfig('100m'), context: 4096 });
    const plain = planMemory({ config: presetConfig('100m'), context: 4096, native: false });
    expect(plain.activations - native.activations).toBeGreaterThan(10 * 512 * 4096 * 4 * 5);
    expect(plain.breakdown.join('\n')).toMatch(/attention scores/);
  });

  it('cache capacity is what a KVCache preallocated for the context allocates', () => {
    for (const n of [1, 256, 257, 2052, 4096, 5000]) {
      const cache = new KVCache(1, { capacity: n, inPlace: true });
      const x = tf.zeros([1, 1, 1, 2]) as tf.Tensor4D;
      cache.append(0, x, x);
      expect({ n, rows: cache.allocated }).toEqual({ n, rows: cacheCapacity(n) });
      expect(cacheCapacity(n)).toBeGreaterThanOrEqual(n);
      x.dispose();
      cache.dispose();
    }
  });

  it('sequence parallelism: each of N processes holds the weights and a 1/N share in one pass', () => {
    const one = planMemory({ config: c7b, context: 32768 });
    const four = planMemory({ config: c7b, context: 32768, sp: 4 });
    expect(four.weights).toBe(4 * one.weights);
    expect(four.runtime).toBe(4 * one.runtime);
    expect(four.kvCache).toBe(one.kvCache);
    expect(four.total).toBe(four.runtime + four.weights + four.embeddings + four.kvCache + four.activations);
    expect(four.breakdown.join('\n')).toMatch(/8,192-token share/);
  });

  it('refuses nonsense options with one-line errors', () => {
    expect(() => planMemory({ config: c7b, context: 0 })).toThrow(InputError);
    expect(() => planMemory({ config: c7b, context: 1.5 })).toThrow(/context must be a positive integer/);
    expect(() => planMemory({ config: c7b, context: 1, dtype: 'f16' as never })).toThrow(/weight dtype must be f32, bf16, int8/);
    expect(() => planMemory({ config: c7b, context: 1, kvDtype: 'int8' as never })).toThrow(/KV cache dtype/);
  });
});

describe('longestContext and the verdict', () => {
  it('the longest context fits and one more token does not; it grows with memory', () => {
    let prev = 0;
    for (const gib of [30, 40, 64, 128, 512]) {
      const n = longestContext(c7b, gib * GiB);
      expect(n).toBeGreaterThan(prev);
      expect(planMemory({ config: c7b, context: n }).total).toBeLessThanOrEqual(gib * GiB);
      expect(planMemory({ config: c7b, context: n + 1 }).total).toBeGreaterThan(gib * GiB);
      prev = n;
    }
  });

  it('is longer with a bf16 cache or int8 weights, 0 when the weights alone do not fit, capped by limit', () => {
    const m = 64 * GiB;
    expect(longestContext(c7b, m, { kvDtype: 'bf16' })).toBeGreaterThan(longestContext(c7b, m));
    expect(longestContext(c7b, m, { dtype: 'int8' })).toBeGreaterThan(longestContext(c7b, m));
    expect(longestContext(c7b, 16 * GiB)).toBe(0);
    expect(longestContext(presetConfig('tiny'), 64 * GiB, { limit: 4096 })).toBe(4096);
  });

  it('says fits with the share of memory, or does not fit with every part and the longest context', () => {
    const p = planMemory({ config: c7b, context: 32768 });
    const yes = fitsVerdict(p, 128 * GiB);
    expect(yes.fits).toBe(true);
    expect(yes.text).toMatch(/^fits: 32,768 tokens of context need \d+\.\d GiB, \d+% of the 128\.0 GiB available$/);
    const no = fitsVerdict(p, 48 * GiB);
    expect(no.fits).toBe(false);
    expect(no.longest).toBe(longestContext(c7b, 48 * GiB));
    expect(no.text).toMatch(/^does not fit: 32,768 tokens of context need \d+\.\d GiB \(weights 25\.1 GiB \+ KV cache 32\.0 GiB \+ activations [\d.]+ (MiB|GiB) \+ runtime \d+ MiB\), more than the 48\.0 GiB available; the longest context that fits is [\d,]+ tokens$/);
    expect(no.text).not.toMatch(/\n/);
    expect(fitsVerdict(p, 16 * GiB).text).toMatch(/the weights alone do not fit: use a smaller model or lower-precision weights/);
  });

  it('refuseIfTooLarge throws an InputError with the verdict and the hint; returns the verdict when it fits', () => {
    const p = planMemory({ config: c7b, context: 32768 });
    expect(refuseIfTooLarge(p, 'x', { memory: 128 * GiB }).fits).toBe(true);
    expect(() => refuseIfTooLarge(p, 'lwm chat with 7b', { memory: 48 * GiB, hint: 'pass a lower --context' })).toThrow(
      /^lwm chat with 7b would run out of memory: 32,768 tokens of context need .* more than the 48\.0 GiB available; the longest context that fits is [\d,]+ tokens; pass a lower --context$/,
    );
    expect(() => refuseIfTooLarge(p, 'x', { memory: 48 * GiB })).toThrow(InputError);
  });
});

describe('memory budget', () => {
  it('is RAM less a reserve of 10% (1 to 4 GiB); --memory overrides and must be positive', () => {
    const limit = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
    const total = limit && limit > 0 && limit < os.totalmem() ? limit : os.totalmem();
    const avail = availableMemory();
    expect(avail).toBeLessThanOrEqual(total - GiB);
    expect(avail).toBeGreaterThanOrEqual(total - 4 * GiB);
    expect(memoryBudget()).toBe(avail);
    expect(memoryBudget(8)).toBe(8 * GiB);
    expect(() => memoryBudget(0)).toThrow(/--memory must be a positive number of GiB, got 0/);
    expect(() => memoryBudget(Number.NaN, 'LWM_MEMORY_GIB')).toThrow(/^LWM_MEMORY_GIB must be/);
  });
});
