import { describe, expect, it } from '@jest/globals';
import { argmax, logSoftmax, Rng, sampleToken, topEntries, validateSampling } from '../../ops/index.js';

describe('sampling', () => {
  const logits = Float32Array.from([1, 3, 2, 0.5, 2.9]);

  it('temperature 0 is greedy', () => {
    expect(sampleToken(logits, { temperature: 0 }, new Rng(1))).toBe(1);
    expect(argmax([0, 5, 5])).toBe(1);
  });

  it('top-k keeps exactly k candidates', () => {
    const rng = new Rng(3);
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(sampleToken(logits, { temperature: 5, topK: 2 }, rng));
    expect([...seen].sort()).toEqual([1, 4]);
  });

  it('top-p keeps the smallest set reaching p', () => {
    // softmax of [10, 9, 0, ...]: the first two hold > 0.99 of the mass.
    const l = Float32Array.from([10, 9, 0, 0, 0]);
    const rng = new Rng(4);
    const seen = new Set<number>();
    for (let i = 0; i < 2000; i++) seen.add(sampleToken(l, { temperature: 1, topP: 0.9 }, rng));
    expect([...seen].sort()).toEqual([0, 1]);
  });

  it('min-p drops tokens far below the best', () => {
    const l = Float32Array.from([0, Math.log(0.5), Math.log(0.01)]);
    const rng = new Rng(5);
    const seen = new Set<number>();
    for (let i = 0; i < 3000; i++) seen.add(sampleToken(l, { temperature: 1, minP: 0.1 }, rng));
    expect([...seen].sort()).toEqual([0, 1]);
  });

  it('draws follow the softmax distribution', () => {
    const l = Float32Array.from([0, Math.log(3)]); // p = 0.25, 0.75
    const rng = new Rng(6);
    let ones = 0;
    const n = 20000;
    for (let i = 0; i < n; i++) ones += sampleToken(l, { temperature: 1 }, rng);
    expect(Math.abs(ones / n - 0.75)).toBeLessThan(0.02);
  });

  it('the same seed gives the same draws', () => {
    const draw = (seed: number) => {
      const r = new Rng(seed);
      return Array.from({ length: 20 }, () => sampleToken(logits, { temperature: 1 }, r));
    };
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
  });

  it('logSoftmax is normalised and topEntries sorts by value', () => {
    const lp = logSoftmax(logits);
    expect(Array.from(lp).reduce((s, x) => s + Math.exp(x), 0)).toBeCloseTo(1, 12);
    expect(topEntries(lp, 3).map(([i]) => i)).toEqual([1, 4, 2]);
    expect(topEntries([1, 1, 0], 2)).toEqual([[0, 1], [1, 1]]);
  });

  it('rejects out-of-range options', () => {
    expect(() => validateSampling({ temperature: -1 })).toThrow(/temperature/);
    expect(() => validateSampling({ topP: 0 })).toThrow(/top-p/);
    expect(() => validateSampling({ topK: 1.5 })).toThrow(/top-k/);
    expect(() => validateSampling({ minP: 1 })).toThrow(/min-p/);
  });
});
