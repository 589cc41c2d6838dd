import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import sharp from 'sharp';
import { tmpDir } from '../helpers/paths.js';
import { expectOneLineError, lwm } from '../helpers/cli.js';
import { saveTinyVqgan } from '../helpers/media.js';

const work = tmpDir('eval-cli');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

async function pngSize(file: string): Promise<[number, number]> {
  const m = await sharp(file).metadata();
  return [m.width!, m.height!];
}

interface Grid {
  test: string;
  overall: number;
  complete: boolean;
  cells: { context: number; depth: number | null; accuracy: number; rounds: { correct: boolean; response: string; promptTokens: number }[] }[];
  config: { contexts: number[]; depths: number[] };
}

const tiny = ['--preset', 'tiny', '--max-len', '512', '--no-progress'];

describe('lwm eval', () => {
  it('passkey: a context x depth grid, every round scored, JSON and a heatmap PNG', async () => {
    const out = path.join(work, 'passkey');
    const r = lwm(['eval', 'passkey', ...tiny, '--context', '128,256', '--depths', '0,100', '--max-tokens', '8', '--out', out]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/lwm eval passkey: overall \d+\.\d%; by context 128: .*, 256: /);
    const j = JSON.parse(fs.readFileSync(path.join(out, 'passkey.json'), 'utf8')) as Grid;
    expect(j.test).toBe('passkey');
    expect(j.complete).toBe(true);
    expect(j.cells.map((c) => [c.context, c.depth, c.rounds.length])).toEqual([[128, 0, 1], [128, 100, 1], [256, 0, 1], [256, 100, 1]]);
    for (const c of j.cells) for (const round of c.rounds) expect(round.promptTokens).toBeLessThanOrEqual(c.context);
    expect(await pngSize(path.join(out, 'passkey.png'))).toEqual([1000, 600]);
  });

  it('needle: LWM prompts within the context lengths asked for; --json prints the results', async () => {
    const out = path.join(work, 'needle');
    const r = lwm(['eval', 'needle', ...tiny, '--context', '200,400', '--depths', '0,50,100', '--rounds', '1', '--max-tokens', '4', '--out', out, '--json']);
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.stdout) as Grid;
    const j = JSON.parse(fs.readFileSync(path.join(out, 'needle.json'), 'utf8')) as Grid;
    expect(j.cells).toEqual(printed.cells);
    expect(j.config.contexts).toEqual([200, 400]);
    expect(j.cells).toHaveLength(6);
    for (const c of j.cells) expect(c.rounds[0]!.promptTokens).toBeLessThanOrEqual(c.context);
    expect(await pngSize(path.join(out, 'needle.png'))).toEqual([1000, 600]);
  });

  it('ppl: perplexity by position of the shipped text, JSON and a curve', async () => {
    const out = path.join(work, 'ppl');
    const r = lwm(['eval', 'ppl', '--preset', 'tiny', '--max-len', '256', '--no-progress', '--max-windows', '2', '--out', out]);
    expect(r.code).toBe(0);
    const j = JSON.parse(fs.readFileSync(path.join(out, 'ppl.json'), 'utf8')) as { windows: number; windowTokens: number; scored: number; ppl: number; buckets: { start: number; end: number; tokens: number }[] };
    expect([j.windows, j.windowTokens, j.scored]).toEqual([2, 256, 2 * 255]);
    expect(j.buckets.map((b) => [b.start, b.end])).toEqual([[0, 64], [64, 128], [128, 256]]);
    // Random weights: perplexity is finite and in the vocabulary's order of magnitude.
    expect(j.ppl).toBeGreaterThan(1000);
    expect(j.ppl).toBeLessThan(1e6);
    expect(await pngSize(path.join(out, 'ppl.png'))).toEqual([1000, 600]);
  });

  it('video-needle: generated clips through a vision model and its VQGAN', async () => {
    const vqgan = saveTinyVqgan(path.join(work, 'vqgan'));
    const out = path.join(work, 'video');
    const r = lwm(['eval', 'video-needle', '--preset', 'tiny-vision', '--no-progress', '--vqgan', vqgan, '--seconds', '2,3', '--depths', '0,100', '--out', out]);
    expect(r.code).toBe(0);
    const j = JSON.parse(fs.readFileSync(path.join(out, 'video-needle.json'), 'utf8')) as { cells: { seconds: number; depth: number; rounds: { needleSecond: number; frames: number }[] }[] };
    expect(j.cells.map((c) => [c.seconds, c.depth, c.rounds[0]!.needleSecond, c.rounds[0]!.frames])).toEqual([[2, 0, 0, 2], [2, 100, 1, 2], [3, 0, 0, 3], [3, 100, 2, 3]]);
    expect(await pngSize(path.join(out, 'video-needle.png'))).toEqual([1000, 600]);
  });

  it('refuses bad input in one line', () => {
    expectOneLineError(lwm(['eval', 'needle', ...tiny, '--context', '4096', '--out', path.join(work, 'x')]), /--context .*4096.*512|512.*--context/);
    expectOneLineError(lwm(['eval', 'passkey', ...tiny, '--depths', '0,150', '--out', path.join(work, 'x')]), /--depths takes a comma list of integers in \[0, 100\], got '0,150'/);
    expectOneLineError(lwm(['eval', 'needle', ...tiny, '--haystack', path.join(work, 'nope.txt'), '--out', path.join(work, 'x')]), /--haystack .*nope\.txt: no such file/);
    expectOneLineError(lwm(['eval', 'video-needle', ...tiny, '--out', path.join(work, 'x')]), /is a text model; the video needle test needs a vision-language model/);
    expectOneLineError(lwm(['eval', 'ppl', ...tiny, '--file', path.join(work, 'nope.txt')]), /--file .*nope\.txt: no such file/);
    expect(fs.existsSync(path.join(work, 'x'))).toBe(false);
  });
});
