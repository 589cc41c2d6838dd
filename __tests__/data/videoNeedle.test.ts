import { afterAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { InputError } from '../../ops/errors.js';
import { probeVideo, readFrames } from '../../data/frames.js';
import {
  makeNeedleVideo,
  needleFramePng,
  needleVideoEncoder,
  scoreVideoNeedle,
  videoNeedleQuestion,
  VIDEO_NEEDLE_QUESTION,
  type NeedleVideoOptions,
} from '../../data/videoNeedle.js';
import type { VideoNeedleResults } from '../../src/eval/videoNeedle.js';
import { repoRoot, tmpDir } from '../helpers/paths.js';

const work = tmpDir('video-needle');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

async function rawPng(png: Buffer): Promise<Uint8Array> {
  return new Uint8Array(await sharp(png).removeAlpha().raw().toBuffer());
}

/** Mean absolute difference per byte of each decoded frame (native size, no resize) from `ref`. */
async function frameDistances(file: string, ref: Uint8Array): Promise<number[]> {
  const out: number[] = [];
  for await (const fr of readFrames(file, { size: 0 })) {
    expect(fr.data.length).toBe(ref.length);
    let d = 0;
    for (let i = 0; i < ref.length; i++) d += Math.abs(fr.data[i]! - ref[i]!);
    out.push(d / ref.length);
  }
  return out;
}

async function errorOf(p: Promise<unknown> | (() => unknown)): Promise<Error> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
}

function expectOneLineInputError(e: Error, re: RegExp): void {
  expect(e).toBeInstanceOf(InputError);
  expect(e.message).toMatch(re);
  expect(e.message).not.toContain('\n');
}

describe('makeNeedleVideo', () => {
  const cases: [number, number, NeedleVideoOptions['source']][] = [
    [3, 0, 'testsrc2'],
    [5, 2, 'testsrc2'],
    [4, 3, 'testsrc2'],
    [6, 5, 'color'],
    [1, 0, 'color'],
  ];
  it.each(cases)('a %i-second clip has one frame per second and the number exactly at second %i (%s)', async (seconds, needleSecond, source) => {
    const out = path.join(work, `clip-${seconds}-${needleSecond}-${source}.mp4`);
    const v = await makeNeedleVideo({ out, seconds, needleSecond, number: 4071, source });
    expect(v).toMatchObject({ file: out, seconds, needleSecond, number: '4071', fps: 1, size: 256, frames: seconds, needleFrames: [needleSecond] });
    const info = await probeVideo(out);
    expect(info).toMatchObject({ frameCount: seconds, fps: 1, width: 256, height: 256, codec: v.encoder === 'libx264' ? 'h264' : 'mpeg4' });
    const d = await frameDistances(out, await rawPng(await needleFramePng(4071, 256)));
    expect(d).toHaveLength(seconds);
    d.forEach((x, i) => (i === needleSecond ? expect(x).toBeLessThan(3) : expect(x).toBeGreaterThan(40)));
    // Written under a temporary name: nothing else is left beside it.
    expect(fs.readdirSync(work).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('uses H.264 when the bundled ffmpeg has libx264, and MPEG-4 when asked to', async () => {
    expect(['libx264', 'mpeg4']).toContain(await needleVideoEncoder());
    const out = path.join(work, 'mpeg4.mp4');
    const v = await makeNeedleVideo({ out, seconds: 3, needleSecond: 1, number: '58', encoder: 'mpeg4', source: 'color' });
    expect(v.encoder).toBe('mpeg4');
    expect((await probeVideo(out)).codec).toBe('mpeg4');
    const d = await frameDistances(out, await rawPng(await needleFramePng('58', 256)));
    expect(d[1]).toBeLessThan(4);
    expect(Math.min(d[0]!, d[2]!)).toBeGreaterThan(40);
  });

  it('at 2 fps the needle covers both frames of its second; another size is honoured', async () => {
    const out = path.join(work, 'fps2.mp4');
    const v = await makeNeedleVideo({ out, seconds: 3, needleSecond: 1, number: 9, fps: 2, size: 128 });
    expect(v).toMatchObject({ frames: 6, needleFrames: [2, 3] });
    const d = await frameDistances(out, await rawPng(await needleFramePng(9, 128)));
    expect(d.map((x) => x < 3)).toEqual([false, false, true, true, false, false]);
  });

  it('refuses bad inputs in one line each', async () => {
    const ok = { out: path.join(work, 'bad.mp4'), seconds: 3, needleSecond: 0, number: 12 };
    expectOneLineInputError(await errorOf(makeNeedleVideo({ ...ok, needleSecond: 3 })), /needle second must be an integer in \[0, 2\].*got 3/);
    expectOneLineInputError(await errorOf(makeNeedleVideo({ ...ok, needleSecond: -1 })), /needle second/);
    for (const number of ['12a', '', 'seven', -5, 1.5, '12345678901']) {
      expectOneLineInputError(await errorOf(makeNeedleVideo({ ...ok, number })), /number must be 1 to 10 digits/);
    }
    expectOneLineInputError(await errorOf(makeNeedleVideo({ ...ok, seconds: 0 })), /seconds must be an integer/);
    expectOneLineInputError(await errorOf(makeNeedleVideo({ ...ok, size: 255 })), /size must be an even integer/);
    expectOneLineInputError(await errorOf(makeNeedleVideo({ ...ok, fps: 0.5 })), /fps must be an integer/);
    const file = path.join(work, 'a-file');
    fs.writeFileSync(file, 'x');
    expectOneLineInputError(await errorOf(makeNeedleVideo({ ...ok, out: path.join(file, 'clip.mp4') })), /cannot write .*choose a writable output path/);
    expectOneLineInputError(await errorOf(makeNeedleVideo({ ...ok, out: work })), /is a directory/);
    expect(fs.existsSync(ok.out)).toBe(false);
  });
});

describe('needle frames', () => {
  it('draws each digit differently, and digit order matters', async () => {
    const raws = await Promise.all([...'0123456789', '12', '21'].map(async (d) => rawPng(await needleFramePng(d, 64))));
    for (const r of raws) expect(r.length).toBe(64 * 64 * 3);
    for (let i = 0; i < raws.length; i++) {
      for (let j = i + 1; j < raws.length; j++) expect(Buffer.from(raws[i]!).equals(Buffer.from(raws[j]!))).toBe(false);
    }
    const dark = (r: Uint8Array): number => r.filter((v) => v < 128).length;
    expect(dark(raws[8]!)).toBeGreaterThan(dark(raws[1]!) * 2);
  });

  it('is a size x size RGB image and refuses a bad number or size', async () => {
    const meta = await sharp(await needleFramePng(123456, 256)).metadata();
    expect(meta).toMatchObject({ width: 256, height: 256, channels: 3, format: 'png' });
    expectOneLineInputError(await errorOf(() => needleFramePng('1e3')), /1 to 10 digits/);
    expectOneLineInputError(await errorOf(() => needleFramePng(1, 7)), /even integer/);
  });
});

describe('question and scoring', () => {
  it('asks one fixed question', () => {
    expect(videoNeedleQuestion()).toBe(VIDEO_NEEDLE_QUESTION);
    expect(VIDEO_NEEDLE_QUESTION).toMatch(/number/i);
  });

  it('accepts the number as a whole run of digits and nothing else', () => {
    expect(scoreVideoNeedle('The number 407 appeared.', 407)).toBe(true);
    expect(scoreVideoNeedle('407', '407')).toBe(true);
    expect(scoreVideoNeedle('I saw 12 then 407', 407)).toBe(true);
    expect(scoreVideoNeedle('1,234', 1234)).toBe(true);
    expect(scoreVideoNeedle('4071', 407)).toBe(false);
    expect(scoreVideoNeedle('40', 407)).toBe(false);
    expect(scoreVideoNeedle('4 0 7', 407)).toBe(false);
    expect(scoreVideoNeedle('470', 407)).toBe(false);
    expect(scoreVideoNeedle('four hundred and seven', 407)).toBe(false);
    expect(scoreVideoNeedle('', 407)).toBe(false);
    expect(() => scoreVideoNeedle('1', 'x1')).toThrow(InputError);
  });
});

describe('runVideoNeedleGrid (random tiny vision model, in a child process)', () => {
  it('runs a 1x1 grid over a 3-second clip and returns a retrieval-shaped result; refuses a clip over the context', () => {
    const dir = fs.mkdtempSync(path.join(work, 'grid-'));
    const worker = path.join(repoRoot, 'dist', '__tests__', 'data', 'scripts', 'videoNeedleWorker.js');
    const r = spawnSync(process.execPath, [worker, dir], { encoding: 'utf8', timeout: 300_000 });
    expect(r.stderr.split('\n').filter((l) => /error/i.test(l))).toEqual([]);
    expect(r.status).toBe(0);
    type Out = { results: VideoNeedleResults; again: VideoNeedleResults; clipReused: boolean; sampled: VideoNeedleResults; progress: number[]; refusal: string };
    const { results, again, clipReused, sampled, progress, refusal } = JSON.parse(r.stdout) as Out;
    expect(results.cells).toHaveLength(1);
    const cell = results.cells[0]!;
    expect(cell).toMatchObject({ seconds: 3, depth: 50 });
    expect(cell.rounds).toHaveLength(1);
    const round = cell.rounds[0]!;
    expect(round).toMatchObject({ round: 0, needleSecond: 1, frames: 3 });
    expect(round.number).toMatch(/^[1-9]\d\d$/);
    expect(typeof round.response).toBe('string');
    expect(round.correct).toBe(scoreVideoNeedle(round.response, round.number));
    expect(round.promptTokens).toBeGreaterThan(3 * 257);
    expect(cell.accuracy).toBe(round.score);
    expect(results.overall).toBe(cell.accuracy);
    expect(results).toMatchObject({ complete: true, question: VIDEO_NEEDLE_QUESTION, accuracyBySeconds: [{ seconds: 3, n: 1 }], accuracyByDepth: [{ depth: 50, n: 1 }] });
    expect(progress).toEqual([1]);
    expect(fs.readdirSync(path.join(dir, 'clips'))).toContain(`needle-testsrc2-1fps-3s-at1-${round.number}.mp4`);
    expect(clipReused).toBe(true);
    expect(again.cells[0]!.rounds[0]).toMatchObject({ number: round.number, response: round.response, needleSecond: 1 });
    expect(sampled.cells[0]!.rounds[0]).toMatchObject({ needleSecond: 4, frames: 3 });
    expect(refusal).toMatch(/40-second clip .* over the model's context of 4096; use clips of at most 15 seconds, or set maxFrames to 15 or less$/);
  });
});
