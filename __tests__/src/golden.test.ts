import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it, afterAll } from '@jest/globals';
import { generate, initBackend, loadModel } from '../../src/index.js';
import { fixture } from '../helpers/paths.js';

/**
 * The reference model and outputs were made outside this project (llama.cpp, and an independent
 * float64 forward pass): matching them checks RMSNorm, RoPE (rotate-half, theta 1e7), attention,
 * SwiGLU, bf16 widening and the checkpoint reader at once.
 */
interface Case {
  name: string;
  prompt: number[];
  greedy: number[];
  steps: { token: number; top: [number, number][] }[];
  prompt_top: [number, number][][];
}

const dir = fixture('tiny-lwm-text');
const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as { cases: Case[] };
await initBackend();
const model = loadModel(dir);
afterAll(() => model.dispose());

function expectTopMatches(actual: [number, number][], reference: [number, number][], where: string): number {
  expect({ where, ids: actual.map(([id]) => id) }).toEqual({ where, ids: reference.map(([id]) => id) });
  let worst = 0;
  reference.forEach(([, lp], i) => (worst = Math.max(worst, Math.abs(actual[i]![1] - lp))));
  return worst;
}

describe('tiny-lwm-text golden outputs', () => {
  it('has both reference cases', () => {
    expect(expected.cases.map((c) => c.name)).toEqual(['sentence', 'random-300']);
  });

  for (const c of expected.cases) {
    it(`reproduces '${c.name}': greedy tokens, top-5 ids and log-probabilities (1e-3) at every step and prompt position`, async () => {
      const r = await generate(model, c.prompt, { maxTokens: c.greedy.length, topLogprobs: 5, echo: true, stopTokens: [] });
      expect(r.tokens).toEqual(c.greedy);
      let worst = 0;
      c.steps.forEach((s, k) => (worst = Math.max(worst, expectTopMatches(r.steps[k]!.top!, s.top, `step ${k}`))));
      expect(r.promptTop).toHaveLength(c.prompt_top.length);
      c.prompt_top.forEach((top, i) => (worst = Math.max(worst, expectTopMatches(r.promptTop![i]!, top, `prompt position ${i}`))));
      expect(worst).toBeLessThan(1e-3);
    });
  }
});
