import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { repoRoot, tmpDir } from '../../helpers/paths.js';

let dir = '';
let data = '';
const script = path.join(repoRoot, 'dist', '__tests__', 'src', 'train', 'scripts', 'finetuneRun.js');

beforeAll(() => {
  dir = tmpDir('finetune');
  data = path.join(dir, 'qa.jsonl');
  const lines = Array.from({ length: 24 }, (_, i) => JSON.stringify({ question: `What is ${i} plus one?`, answer: `It is ${i + 1}.` }));
  fs.writeFileSync(data, lines.join('\n') + '\n');
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('finetune()', () => {
  it("fine-tunes a model in memory (leaving it untouched) into a loadable checkpoint, and runs progressive context stages in order", () => {
    const r = spawnSync(process.execPath, [script, data, dir], { encoding: 'utf8', timeout: 300_000 });
    if (r.status !== 0) throw new Error(`finetuneRun exited ${r.status ?? r.signal}: ${r.stderr}`);
    const got = JSON.parse(r.stdout);
    expect(got.steps).toBe(4);
    expect(got.losses).toHaveLength(4);
    expect(got.untouched).toBe(true);
    expect(got.changed).toBeGreaterThan(0);
    expect(got.stageSteps).toBe(4);
    expect(got.stageRows).toEqual([[1, 64, 0], [2, 64, 0], [3, 128, 1], [4, 128, 1]]);
    expect(got.theta).toBe(1e6);
  });
});
