import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../../../ops/errors.js';
import { initBackend } from '../../../src/backend.js';
import { openPrepared, readPreparedInfo } from '../../../src/prepare/format.js';
import { ensureDefaultDataset, type DefaultDataEvent } from '../../../src/train/defaultData.js';
import { tmpDir } from '../../helpers/paths.js';

let root = '';
const data = () => path.join(root, 'data');

/** Every file under `dir` with its mtime, to show a reuse rewrote nothing. */
function mtimes(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const walk = (d: string): void => {
    for (const n of fs.readdirSync(d)) {
      const p = path.join(d, n);
      const s = fs.statSync(p);
      if (s.isDirectory()) walk(p);
      else out.set(path.relative(dir, p), s.mtimeMs);
    }
  };
  walk(dir);
  return out;
}

const jsonl = (file: string) => fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
/** Anything besides the finished folders: a leftover temporary build. */
const leftovers = () => fs.readdirSync(root).filter((n) => n.startsWith('.'));

beforeAll(async () => {
  await initBackend();
  root = tmpDir('default-data');
});
afterAll(() => {
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

describe('built-in training set', () => {
  it('builds a prepared folder with passkey, text and video examples, and a held-out eval set', async () => {
    const events: DefaultDataEvent[] = [];
    const r = await ensureDefaultDataset(data(), { seqLen: 256, seed: 0, onEvent: (e) => events.push(e) });
    expect(r.reused).toBe(false);
    expect(r.prepared).toBe(path.join(data(), 'prepared'));
    expect(leftovers()).toEqual([]);

    const info = readPreparedInfo(r.prepared);
    expect(info.stats).toEqual(r.stats);
    const c = r.counts;
    expect(c).toEqual({ passkeyExamples: 1024, textExamples: 4, videoExamples: 8, videos: 4, evalExamples: 64, passkeyTokens: 256 });
    expect(info.stats.examples).toBe(c.passkeyExamples + c.textExamples + c.videoExamples);
    expect(info.stats.skipped).toBe(0);
    expect(info.stats.visionFiles).toBe(4);
    expect(info.stats.frames).toBe(8);
    // Each video example holds 2 frames of 256 codes and an end-of-frame / end-of-video token.
    expect(info.stats.visionTokens).toBe(c.videoExamples * 2 * 257);
    expect(info.stats.seqLen).toBe(256);
    expect(openPrepared(r.prepared).rows).toBe(info.stats.rows);
    const files = events.filter((e) => e.type === 'file');
    expect(files.length).toBe(4);
    // Events name the files where they end up, not in the build folder.
    for (const e of files) expect(e.type === 'file' && e.file.startsWith(path.join(data(), 'source', 'videos') + path.sep)).toBe(true);

    const train = jsonl(r.manifest);
    expect(train.length).toBe(info.stats.examples);
    const evalSet = jsonl(r.evalManifest);
    expect(evalSet.length).toBe(64);
    const trainKeys = new Set(train.map((l) => l['passkey']).filter((k): k is string => typeof k === 'string'));
    expect(trainKeys.size).toBeGreaterThan(900);
    for (const l of evalSet) {
      expect(l['fields']).toBe('[text+question],answer');
      expect(trainKeys.has(l['passkey'] as string)).toBe(false);
      expect(l['tokens']).toBeLessThanOrEqual(256);
    }
    expect(fs.existsSync(path.join(r.vqgan, 'config.json'))).toBe(true);
  });

  it('reuses a finished folder with the same settings without rewriting anything', async () => {
    const before = mtimes(data());
    const events: DefaultDataEvent[] = [];
    const r = await ensureDefaultDataset(data(), { seqLen: 256, seed: 0, onEvent: (e) => events.push(e) });
    expect(r.reused).toBe(true);
    expect(events).toEqual([{ type: 'default-data', stage: 'reuse', dir: data() }]);
    expect(mtimes(data())).toEqual(before);
  });

  it('replaces a folder made with other settings, reusing its VQGAN codes, and clears builds of dead processes', async () => {
    // What a killed run leaves (pid 2^22 + 1 is above Linux's pid_max, so never alive).
    fs.mkdirSync(path.join(root, `.data.tmp-${2 ** 22 + 1}-0badf00d`, 'source'), { recursive: true });
    const events: DefaultDataEvent[] = [];
    const r = await ensureDefaultDataset(data(), { seqLen: 128, seed: 1, passkeyExamples: 16, evalExamples: 4, onEvent: (e) => events.push(e) });
    expect(r.reused).toBe(false);
    const files = events.filter((e) => e.type === 'file');
    expect(files.length).toBe(4);
    expect(files.every((e) => e.type === 'file' && e.cached)).toBe(true);
    expect(r.stats.frames).toBe(8);
    expect(r.stats.seqLen).toBe(128);
    expect(r.stats.examples).toBe(16 + 12);
    expect(jsonl(r.evalManifest).length).toBe(4);
    expect(leftovers()).toEqual([]);
  });

  it('fails in one line without leaving a folder when ffmpeg cannot run, and refuses a foreign folder', async () => {
    const saved = process.env['LWM_FFMPEG'];
    process.env['LWM_FFMPEG'] = path.join(root, 'no-such-ffmpeg');
    try {
      const err = await ensureDefaultDataset(path.join(root, 'fresh'), { seqLen: 256, seed: 0 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InputError);
      expect((err as Error).message).not.toContain('\n');
      expect((err as Error).message).toContain('LWM_FFMPEG');
    } finally {
      if (saved === undefined) delete process.env['LWM_FFMPEG'];
      else process.env['LWM_FFMPEG'] = saved;
    }
    expect(fs.existsSync(path.join(root, 'fresh'))).toBe(false);
    expect(leftovers()).toEqual([]);

    const foreign = path.join(root, 'foreign');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'notes.txt'), 'mine');
    await expect(ensureDefaultDataset(foreign, { seqLen: 256, seed: 0 })).rejects.toThrow(InputError);
    expect(fs.readdirSync(foreign)).toEqual(['notes.txt']);
  });
});
