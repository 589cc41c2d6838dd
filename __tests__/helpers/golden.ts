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

/**
 * The same with the linear weights held as `dtype` (bf16 must reproduce the cases as float32
 * does), and optionally a bf16 KV cache (`kv`), whose rounding of keys and values to 8 mantissa
 * bits moves logprobs by up to `kv.logprobTol`.
 */
export function expectGoldenCasesAs(dtype: 'f32' | 'bf16', ...dirs: string[]): void {
  expectGoldenCasesWith({ dtype }, ...dirs);
}

export function expectGoldenCasesWith(o: { dtype: 'f32' | 'bf16'; kvDtype?: 'f32' | 'bf16'; logprobTol?: number }, ...dirs: string[]): void {
  const dtype = o.dtype;
  const tol = o.logprobTol ?? 1e-3;
  const expectedFile = path.join(fixture('tiny-lwm-text'), 'expected.json');
  const expected = (JSON.parse(fs.readFileSync(expectedFile, 'utf8')) as { cases: GoldenCase[] }).cases;
  expect(expected.length).toBeGreaterThanOrEqual(2);
  const worker = path.join(repoRoot, 'dist', '__tests__', 'helpers', 'goldenWorker.js');
  const r = spawnSync(process.execPath, [worker, expectedFile, ...dirs], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, GOLDEN_DTYPE: dtype, GOLDEN_KV_DTYPE: o.kvDtype ?? 'f32' } });
  expect(r.stderr.split('\n').filter((l) => /error/i.test(l))).toEqual([]);
  expect(r.status).toBe(0);
  const got = JSON.parse(r.stdout) as Record<string, { name: string; tokens: number[]; top: [number, number][][] }[]>;
  for (const dir of dirs) {
    expected.forEach((c, i) => {
      const g = got[dir]![i]!;
      expect({ dir, name: g.name, tokens: g.tokens }).toEqual({ dir, name: c.name, tokens: c.greedy });
      g.top.forEach((top, k) => {
        const want = c.steps[k]!.top;
        if (o.logprobTol === undefined) {
          expect(top.map(([id]) => id)).toEqual(want.map(([id]) => id));
          top.forEach(([, lp], j) => expect(Math.abs(lp - want[j]![1])).toBeLessThan(tol));
          return;
        }
        // Looser numerics: each expected id has its logprob within tol, or (when it fell out of
        // the top 5) was within tol of the 5th place; order may differ only between near-ties.
        const got = new Map(top);
        for (const [id, lp] of want) {
          const g2 = got.get(id);
          if (g2 !== undefined) expect({ id, diff: Math.abs(g2 - lp) < tol }).toEqual({ id, diff: true });
          else expect({ id, borderline: Math.abs(lp - top.at(-1)![1]) < tol }).toEqual({ id, borderline: true });
        }
      });
    });
  }
}
