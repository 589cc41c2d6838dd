import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { expect } from '@jest/globals';
import { fixture, repoRoot } from './paths.js';

interface GoldenCase {
  name: string;
  prompt: number[];
  greedy: number[];
  steps: { top: [number, number][] }[];
}

/**
 * Model folders reproduce every reference case of tiny-lwm-text (computed by llama.cpp and a float64
 * implementation): greedy tokens, top-5 ids, logprobs within 1e-3. Generation runs in a child process.
 */
export function expectGoldenCases(...dirs: string[]): void {
  expectGoldenCasesAs('f32', ...dirs);
}

/** The same with the linear weights held as `dtype` (bf16 must reproduce the cases as float32 does). */
export function expectGoldenCasesAs(dtype: 'f32' | 'bf16', ...dirs: string[]): void {
  const expectedFile = path.join(fixture('tiny-lwm-text'), 'expected.json');
  const expected = (JSON.parse(fs.readFileSync(expectedFile, 'utf8')) as { cases: GoldenCase[] }).cases;
  expect(expected.length).toBeGreaterThanOrEqual(2);
  const worker = path.join(repoRoot, 'dist', '__tests__', 'helpers', 'goldenWorker.js');
  const r = spawnSync(process.execPath, [worker, expectedFile, ...dirs], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, GOLDEN_DTYPE: dtype } });
  expect(r.stderr.split('\n').filter((l) => /error/i.test(l))).toEqual([]);
  expect(r.status).toBe(0);
  const got = JSON.parse(r.stdout) as Record<string, { name: string; tokens: number[]; top: [number, number][][] }[]>;
  for (const dir of dirs) {
    expected.forEach((c, i) => {
      const g = got[dir]![i]!;
      expect({ dir, name: g.name, tokens: g.tokens }).toEqual({ dir, name: c.name, tokens: c.greedy });
      g.top.forEach((top, k) => {
        expect(top.map(([id]) => id)).toEqual(c.steps[k]!.top.map(([id]) => id));
        top.forEach(([, lp], j) => expect(Math.abs(lp - c.steps[k]!.top[j]![1])).toBeLessThan(1e-3));
      });
    });
  }
}
