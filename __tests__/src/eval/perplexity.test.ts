import { describe, expect, it } from '@jest/globals';
import { presetConfig } from '../../../src/index.js';
import { defaultEdges } from '../../../src/eval/perplexity.js';
import { nodeJson } from '../../helpers/child.js';

const PRELUDE = `
import * as tf from '@tensorflow/tfjs';
import { createModel, initBackend, LlamaModel, ParamStore } from '$dist/src/index.js';
import { perplexityByPosition, tokenLogProbs } from '$dist/src/eval/perplexity.js';
await initBackend();
const tokens = Array.from({ length: 130 }, (_, i) => 100 + ((i * 37) % 900));
const model = createModel('tiny', { seed: 5, overrides: { maxSeqLen: 64 } });
const err = async (p) => { try { await p; return null; } catch (e) { return e.message; } };
`;

describe('perplexity by position (models run in a plain node child)', () => {
  it('of a uniform-logits model is the vocabulary size in every bucket; chunking changes nothing; no tensor leaks', () => {
    const r = nodeJson<{ uniform: { ppl: number; windows: number; scored: number; buckets: { start: number; end: number; tokens: number; ppl: number }[] }; leaked: number; a: number[]; b: number[]; errors: (string | null)[] }>(`${PRELUDE}
// An output head of zeros: every logit is 0, so every token has probability 1/V.
const map = new Map(model.params.names().map((n) => [n, n === 'lm_head.weight' ? tf.zerosLike(model.params.get(n)) : model.params.get(n)]));
const uniform = new LlamaModel(model.config, new ParamStore(map));
const before = tf.memory().numTensors;
const u = await perplexityByPosition(uniform, tokens, { window: 64, edges: [0, 16, 32, 64], chunk: 24, bos: 1 });
const leaked = tf.memory().numTensors - before;
const a = await tokenLogProbs(model, tokens.slice(0, 40), { chunk: 40 });
const b = await tokenLogProbs(model, tokens.slice(0, 40), { chunk: 7 });
const errors = [
  await err(perplexityByPosition(model, tokens, { window: 65 })),
  await err(perplexityByPosition(model, tokens.slice(0, 10), { window: 64 })),
  await err(perplexityByPosition(model, tokens, { window: 64, edges: [0, 50, 40, 64] })),
];
console.log(JSON.stringify({ uniform: u, leaked, a: [...a], b: [...b], errors }));`);
    const V = presetConfig('tiny').vocabSize;
    expect(r.leaked).toBe(0);
    expect(r.uniform.windows).toBe(2);
    expect(r.uniform.scored).toBe(2 * 63);
    expect(Math.abs(r.uniform.ppl - V) / V).toBeLessThan(1e-4);
    expect(r.uniform.buckets.map((b) => [b.start, b.end, b.tokens])).toEqual([[0, 16, 30], [16, 32, 32], [32, 64, 64]]);
    for (const b of r.uniform.buckets) expect(Math.abs(b.ppl - V) / V).toBeLessThan(1e-4);
    expect(r.a).toHaveLength(39);
    r.a.forEach((x, i) => expect(Math.abs(x - r.b[i]!)).toBeLessThan(1e-4));
    // Random weights are far from uniform on any continuation.
    expect(r.a.some((x) => Math.abs(x + Math.log(V)) > 0.1)).toBe(true);
    expect(r.errors[0]).toMatch(/exceeds the model's context of 64/);
    expect(r.errors[1]).toMatch(/has 10 tokens, fewer than one window of 64/);
    expect(r.errors[2]).toMatch(/bucket edges must rise/);
  });

  it('default buckets are 1K, 2K, 4K, ... up to the window, smaller for short windows', () => {
    expect(defaultEdges(8192)).toEqual([0, 1024, 2048, 4096, 8192]);
    expect(defaultEdges(5000)).toEqual([0, 1024, 2048, 4096, 5000]);
    expect(defaultEdges(2048)).toEqual([0, 512, 1024, 2048]);
    expect(defaultEdges(256)).toEqual([0, 64, 128, 256]);
  });
});
