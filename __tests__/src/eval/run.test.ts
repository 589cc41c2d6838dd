import * as path from 'node:path';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { beforeAll, describe, expect, it } from '@jest/globals';
import { InputError } from '../../../ops/errors.js';
import { defaultTokenizer } from '../../../data/tokenizer.js';
import type { LlamaModel } from '../../../models/llama.js';
import { scoreNeedle } from '../../../src/eval/needle.js';
import { runRetrievalGrid, type RetrievalResults } from '../../../src/eval/run.js';
import { repoRoot } from '../../helpers/paths.js';

interface WorkerOut {
  needle: RetrievalResults;
  again: RetrievalResults;
  passkey: RetrievalResults;
  multi: RetrievalResults;
  viaHook: RetrievalResults;
  hooked: number;
  helper: RetrievalResults;
  aborted: RetrievalResults;
  progress: [number, number, number][];
  tensors: { before: number; afterNeedle: number; after: number };
}

const worker = path.join(repoRoot, 'dist', '__tests__', 'src', 'eval', 'gridWorker.js');

describe('runRetrievalGrid on the random tiny model (child process)', () => {
  let r: SpawnSyncReturns<string>;
  let out: WorkerOut | undefined;
  beforeAll(() => {
    r = spawnSync(process.execPath, [worker], { encoding: 'utf8', timeout: 110_000 });
    out = r.status === 0 ? (JSON.parse(r.stdout) as WorkerOut) : undefined;
  }, 120_000);

  it('runs', () => {
    expect(r.stderr.split('\n').filter((l) => /error/i.test(l))).toEqual([]);
    expect(r.status).toBe(0);
  });

  it('returns a 2x2 grid: cells, rounds, per-context and per-depth accuracy, the config', () => {
    const g = out!.needle;
    expect(g.cells.map((c) => [c.context, c.depth])).toEqual([[200, 0], [200, 100], [300, 0], [300, 100]]);
    for (const c of g.cells) {
      expect(c.rounds.length).toBe(1);
      const round = c.rounds[0]!;
      expect(round.promptTokens).toBeLessThanOrEqual(c.context);
      expect(round.promptTokens).toBeGreaterThanOrEqual(c.context - 1);
      expect(round.answer).toMatch(/^\d{7}$/);
      expect(round.correct).toBe(scoreNeedle(round.response, round.answer as string));
      expect(round.score).toBe(round.correct ? 1 : 0);
      expect(round.seconds).toBeGreaterThan(0);
      expect(['max-tokens', 'stop-token']).toContain(round.stoppedBy);
      expect(round.needles![0]!.depthPercent).toBe(c.depth);
      expect(c.accuracy).toBe(round.score);
    }
    expect(g.accuracyByContext.map((x) => [x.context, x.n])).toEqual([[200, 2], [300, 2]]);
    expect(g.accuracyByDepth.map((x) => [x.depth, x.n])).toEqual([[0, 2], [100, 2]]);
    expect(g.overall).toBe(g.cells.reduce((s, c) => s + c.rounds[0]!.score, 0) / 4);
    expect(g.complete).toBe(true);
    expect(g.config).toEqual({ kind: 'needle', contexts: [200, 300], depths: [0, 100], rounds: 1, seed: 7, needles: 1, retrieve: 1, digits: 5, maxTokens: 16, prefillChunk: 512 });
  });

  it('is deterministic, reports progress with an ETA, and frees every tensor it makes', () => {
    const strip = (g: RetrievalResults) => g.cells.map((c) => c.rounds.map(({ seconds: _s, ...rest }) => rest));
    expect(strip(out!.again)).toEqual(strip(out!.needle));
    expect(out!.progress.map(([d, n]) => [d, n])).toEqual([[1, 4], [2, 4], [3, 4], [4, 4]]);
    expect(out!.progress.every(([, , eta]) => eta >= 0 && Number.isFinite(eta))).toBe(true);
    expect(out!.progress[3]![2]).toBe(0);
    expect(out!.tensors.after).toBe(out!.tensors.before);
    expect(out!.tensors.afterNeedle).toBe(out!.tensors.before);
  });

  it('passkey and multi-needle grids', () => {
    const p = out!.passkey;
    expect(p.cells.length).toBe(4);
    for (const c of p.cells) {
      expect(c.rounds[0]!.answer).toMatch(/^[1-9]\d{4}$/);
      expect(c.rounds[0]!.passkeyDepth).toBe(c.depth! / 100);
    }
    const m = out!.multi;
    expect(m.cells.map((c) => [c.context, c.depth, c.rounds.length])).toEqual([[300, null, 2]]);
    for (const round of m.cells[0]!.rounds) {
      expect(round.needles!.length).toBe(3);
      expect(new Set(round.needles!.map((n) => n.depthPercent)).size).toBe(3);
      expect(round.answer).toHaveLength(2);
      expect(round.correctEach).toEqual(scoreNeedle(round.response, round.answer as string[]));
    }
    expect(m.accuracyByDepth.reduce((s, x) => s + x.n, 0)).toBe(4);
  });

  it('a prefill hook (the --sp path) answers as the local prefill does; a helper rank answers nothing', () => {
    const responses = (g: RetrievalResults) => g.cells.map((c) => c.rounds.map((x) => x.response));
    expect(out!.hooked).toBe(4);
    expect(responses(out!.viaHook)).toEqual(responses(out!.needle));
    expect(out!.helper.cells.map((c) => c.rounds.length)).toEqual([0, 0, 0, 0]);
    expect(out!.helper.complete).toBe(true);
  });

  it('stops at the signal and returns what it has', () => {
    expect(out!.aborted.complete).toBe(false);
    expect(out!.aborted.cells.flatMap((c) => c.rounds).length).toBe(1);
  });
});

describe('runRetrievalGrid options', () => {
  const fake = { config: { maxSeqLen: 4096 } } as unknown as LlamaModel;
  const tok = defaultTokenizer();
  const fails = async (o: Parameters<typeof runRetrievalGrid>[2], re: RegExp) => {
    const e = await runRetrievalGrid(fake, tok, o).then(() => null, (x: unknown) => x);
    expect(e).toBeInstanceOf(InputError);
    expect((e as Error).message).toMatch(re);
    expect((e as Error).message).not.toContain('\n');
  };

  it('refuse contexts over the model maximum and bad grids in one line', async () => {
    await fails({ contexts: [1000, 8192] }, /--context 8192 .*model's maximum of 4096/);
    await fails({ contexts: [] }, /--context needs/);
    await fails({ contexts: [1000], depths: [-1] }, /--depth/);
    await fails({ contexts: [1000], rounds: 0 }, /--rounds/);
    await fails({ contexts: [1000], needles: 4, retrieve: 5 }, /--retrieve 5/);
    await fails({ contexts: [1000], depths: [0, 50], needles: 3 }, /--needles 3 needs as many distinct depths/);
    await fails({ contexts: [1000], kind: 'passkey', needles: 2 }, /passkey/);
    // Too small for the template: refused before any model call (the fake model has no forward).
    await fails({ contexts: [40, 1000], rounds: 1 }, /context of 40 tokens cannot hold the needle prompt/);
    await fails({ contexts: [20], kind: 'passkey' }, /context of 20 tokens cannot hold the passkey prompt/);
  });
});
