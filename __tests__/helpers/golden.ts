import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect } from '@jest/globals';
import { generate, type LlamaModel } from '../../src/index.js';
import { fixture } from './paths.js';

interface GoldenCase {
  prompt: number[];
  greedy: number[];
  steps: { top: [number, number][] }[];
}

/** A converted model reproduces tiny-lwm-text's first reference case: greedy tokens, top-5 ids, logprobs within 1e-3. */
export async function expectFirstGoldenCase(model: LlamaModel): Promise<void> {
  const expected = JSON.parse(fs.readFileSync(path.join(fixture('tiny-lwm-text'), 'expected.json'), 'utf8')) as { cases: GoldenCase[] };
  const c = expected.cases[0]!;
  const r = await generate(model, c.prompt, { maxTokens: c.greedy.length, topLogprobs: 5, stopTokens: [] });
  expect(r.tokens).toEqual(c.greedy);
  r.steps.forEach((s, k) => {
    expect(s.top!.map(([id]) => id)).toEqual(c.steps[k]!.top.map(([id]) => id));
    s.top!.forEach(([, lp], j) => expect(Math.abs(lp - c.steps[k]!.top[j]![1])).toBeLessThan(1e-3));
  });
}
