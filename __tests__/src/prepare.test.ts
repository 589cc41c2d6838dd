import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { processExample, parseJsonl } from '../../data/examples.js';
import { readFrames } from '../../data/frames.js';
import { packDocuments } from '../../data/packing.js';
import { preprocessImage, toModelRange } from '../../data/preprocess.js';
import { visionSegmentLength } from '../../data/visionTokens.js';
import { ROW_FIELDS } from '../../data/batches.js';
import { initBackend } from '../../src/backend.js';
import { loadVqgan } from '../../src/checkpoint/vqgan.js';
import { readSafetensorsHeader, readTensorI32 } from '../../src/checkpoint/safetensors.js';
import { openPrepared, readPreparedInfo, readTokenShard } from '../../src/prepare/format.js';
import { inferFields } from '../../src/prepare/manifest.js';
import { prepareDataset, prepareStats, type PrepareEvent, type PrepareOptions } from '../../src/prepare/run.js';
import { makeClip, makeMedia, saveTinyVqgan } from '../helpers/media.js';
import { treeBytes } from '../helpers/files.js';
import { tmpDir } from '../helpers/paths.js';

let dir = '';
let data = '';
let vq = '';
const manifestLines = [
  { vision: 'a.mp4', question: 'What is shown?', answer: 'A test pattern.' },
  { text: 'Plain text document number one.' },
  { vision: 'sub/p.mp4', caption: 'A portrait clip.' },
  { vision: 'img.png', question: 'Colour?', answer: 'Many.' },
  { fields: '[vision],text', vision: 'odd.mkv', text: 'odd' },
  { vision: 'a.mp4', question: 'Again?', answer: 'Yes.' },
];
// The spec each line must end up with (written out by hand, not by the code under test).
const specs = ['[vision+question],answer', 'text', '[vision],caption', '[vision+question],answer', '[vision],text', '[vision+question],answer'];
// Source frames LWM's uniform choice of 3 takes: linspace(0, n-1, 3).astype(int).
const sampled: Record<string, number[]> = { 'a.mp4': [0, 5, 11], 'sub/p.mp4': [0, 2, 4], 'odd.mkv': [0, 2, 5], 'img.png': [0] };

const opts = (over: Partial<PrepareOptions> = {}): PrepareOptions => ({
  manifest: path.join(data, 'm.jsonl'),
  vqgan: vq,
  sampling: { maxFrames: 3 },
  seqLen: 1024,
  ...over,
});

/** Codes computed here, independently of lwm prepare: all sampled frames in one VQGAN call. */
async function referenceCodes(rel: string): Promise<Int32Array> {
  const file = path.join(data, rel);
  const frames: Float32Array[] = [];
  if (rel.endsWith('.png')) frames.push((await preprocessImage(file)).data);
  else for await (const f of readFrames(file, { maxFrames: 3 })) frames.push(toModelRange(f.data));
  const vqgan = loadVqgan(vq);
  const flat = new Float32Array(frames.length * 256 * 256 * 3);
  frames.forEach((f, i) => flat.set(f, i * f.length));
  const x = tf.tensor4d(flat, [frames.length, 256, 256, 3]);
  const codes = vqgan.encode(x);
  const out = (await codes.data()) as Int32Array;
  tf.dispose([x, codes]);
  vqgan.dispose();
  return out;
}

beforeAll(async () => {
  await initBackend();
  dir = tmpDir('prepare');
  data = path.join(dir, 'data');
  fs.mkdirSync(path.join(data, 'sub'), { recursive: true });
  makeClip(data, 'a.mp4', 320, 240, 10, 12);
  makeClip(data, 'sub/p.mp4', 200, 300, 5, 5);
  makeMedia(data, 'odd.mkv', ['-f', 'lavfi', '-i', 'testsrc2=s=322x240:r=10', '-frames:v', '6', '-vf', 'format=yuv444p,crop=321:239:0:0', '-c:v', 'ffv1']);
  makeMedia(data, 'img.png', ['-f', 'lavfi', '-i', 'testsrc2=s=300x200', '-frames:v', '1']);
  fs.writeFileSync(path.join(data, 'm.jsonl'), manifestLines.map((l) => JSON.stringify(l)).join('\n') + '\n');
  vq = saveTinyVqgan(path.join(dir, 'vq'));
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('lwm prepare pipeline', () => {
  it('openPrepared refuses a missing or unfinished folder with a one-line hint', () => {
    expect(() => openPrepared(path.join(dir, 'absent'))).toThrow(/absent: no such folder; run lwm prepare first/);
    const unfinished = path.join(dir, 'unfinished');
    fs.mkdirSync(path.join(unfinished, 'tokens'), { recursive: true });
    expect(() => openPrepared(unfinished)).toThrow(/no prepare\.json, so this is not a finished lwm prepare output \(an interrupted run\?\); run lwm prepare again/);
  });

  it('infers the fields spec of QA, caption and text lines', () => {
    expect(manifestLines.map((l) => ('fields' in l ? l.fields : inferFields(l)))).toEqual(specs);
    expect(inferFields({ question: 'q', answer: 'a' })).toBe('[question],answer');
    expect(inferFields({ foo: 'x' })).toBeNull();
  });

  it('writes token shards equal to the examples laid out from independently computed codes, and rows equal to packing them', async () => {
    const out = path.join(dir, 'out1');
    const events: PrepareEvent[] = [];
    const before = tf.memory().numTensors;
    const r = await prepareDataset(opts({ out, onEvent: (e) => events.push(e) }));
    expect(tf.memory().numTensors).toBe(before);
    expect(r.encodedFrames).toBe(10);
    expect(r.cachedFiles).toBe(0);

    const codes = new Map<string, Int32Array>();
    for (const rel of Object.keys(sampled)) codes.set(path.join(data, rel), await referenceCodes(rel));
    const records = parseJsonl(fs.readFileSync(path.join(data, 'm.jsonl'), 'utf8'));
    const stored = readTokenShard(path.join(out, 'tokens', 'tokens-00000.safetensors'));
    expect(stored.map((e) => e.line)).toEqual([1, 2, 3, 4, 5, 6]);
    records.forEach((rec, i) => {
      const want = processExample(rec, { fields: specs[i], baseDir: data, visionCodes: (abs) => codes.get(abs)! });
      const got = stored[i]!;
      expect(Array.from(got.tokens)).toEqual(want.tokens);
      expect(Array.from(got.visionMask)).toEqual(want.visionMask.map(Number));
      expect(Array.from(got.lossMask)).toEqual(want.lossMask);
    });
    // The frames prepare encoded, as its cache recorded them.
    const cached = fs.readdirSync(path.join(out, 'cache')).map((n) => {
      const file = path.join(out, 'cache', n);
      return Array.from(readTensorI32(readSafetensorsHeader(file).tensors.get('frame_indices')!, file));
    });
    expect(cached.map((c) => c.join(',')).sort()).toEqual(Object.values(sampled).map((c) => c.join(',')).sort());
    // Line 1: BOS, 3-frame video and question without loss, then the answer and EOS with loss.
    const first = stored[0]!;
    const vision = Array.from(first.visionMask).reduce((a, b) => a + b, 0);
    expect(vision).toBe(3 * 257);
    expect(first.tokens.length).toBeGreaterThan(1 + visionSegmentLength(3));
    const firstLoss = Array.from(first.lossMask).indexOf(1);
    expect(Array.from(first.lossMask.subarray(0, firstLoss)).every((m) => m === 0)).toBe(true);
    expect(Array.from(first.lossMask.subarray(firstLoss)).every((m) => m === 1)).toBe(true);
    expect(firstLoss).toBeGreaterThan(1 + visionSegmentLength(3));

    const packed = packDocuments(stored, { seqLen: 1024, weighting: { mode: 'lwm' }, batchRows: 1 });
    const rows = openPrepared(out);
    expect(rows.rows).toBe(packed.rows);
    for (let i = 0; i < rows.rows; i++) {
      const row = rows.row(i);
      for (const f of ROW_FIELDS) expect(Array.from(row[f])).toEqual(Array.from(packed[f].subarray(i * 1024, (i + 1) * 1024)));
    }
    rows.verify();

    const info = readPreparedInfo(out);
    expect(info.stats).toMatchObject({ examples: 6, skipped: 0, visionFiles: 4, frames: 10, visionTokens: 13 * 257, rows: packed.rows, paddingTokens: packed.paddingTokens });
    expect(r.stats).toEqual(info.stats);
    // Progress: one event per file, frames counted up to the total.
    const fileEvents = events.filter((e) => e.type === 'file');
    expect(fileEvents.map((e) => (e as { frames: number }).frames)).toEqual([3, 3, 1, 3]);
    expect(fileEvents.at(-1)).toMatchObject({ done: 10, total: 10 });
    // Two VQGAN passes over 10 frames inside jest's VM: slow on a busy 2-core machine.
  }, 300_000);

  it('the dry run counts the same frames, tokens, rows and padding without writing anything', async () => {
    const s = await prepareStats(opts({ vqgan: undefined, out: path.join(dir, 'never') }));
    expect(s).toEqual(readPreparedInfo(path.join(dir, 'out1')).stats);
    expect(fs.existsSync(path.join(dir, 'never'))).toBe(false);
  });

  it('a rerun takes every file from the cache and rewrites identical bytes', async () => {
    const out = path.join(dir, 'out1');
    const before = treeBytes(out);
    const r = await prepareDataset(opts({ out }));
    expect(r.cachedFiles).toBe(4);
    expect(r.encodedFrames).toBe(0);
    const after = treeBytes(out);
    expect([...after.keys()]).toEqual([...before.keys()]);
    for (const [k, v] of before) expect(after.get(k)!.equals(v)).toBe(true);
  });

  it('refuses to mix settings into a finished output unless told to overwrite', async () => {
    const out = path.join(dir, 'out1');
    await expect(prepareDataset(opts({ out, seqLen: 2048 }))).rejects.toThrow(/prepared from other inputs or settings; pass --overwrite/);
    expect(readPreparedInfo(out).stats.seqLen).toBe(1024);
    const r = await prepareDataset(opts({ out, seqLen: 2048, overwrite: true }));
    expect(r.cachedFiles).toBe(4);
    expect(readPreparedInfo(out).stats.seqLen).toBe(2048);
    fs.writeFileSync(path.join(dir, 'other.txt'), 'x');
    const foreign = path.join(dir, 'foreign');
    fs.mkdirSync(foreign);
    fs.writeFileSync(path.join(foreign, 'notes.txt'), 'keep me');
    await expect(prepareDataset(opts({ out: foreign }))).rejects.toThrow(/holds other files \(notes.txt\)/);
    expect(fs.readdirSync(foreign)).toEqual(['notes.txt']);
  });

  it('with skipBad, bad lines and files are counted and skipped; without, the first one stops the run before any output', async () => {
    const bad = path.join(data, 'bad.jsonl');
    fs.writeFileSync(path.join(data, 'notvideo.mp4'), 'this is not a video\n'.repeat(20));
    fs.writeFileSync(
      bad,
      [
        JSON.stringify({ vision: 'a.mp4', caption: 'good' }),
        '{"vision": "a.mp4", "caption": ',
        JSON.stringify({ vision: 'missing.mp4', caption: 'x' }),
        JSON.stringify({ vision: 'notvideo.mp4', caption: 'x' }),
        JSON.stringify({ vision: '../../escape.mp4', caption: 'x' }),
        JSON.stringify({ fields: 'text', vision: 'a.mp4' }),
        JSON.stringify({ text: 'fine' }),
      ].join('\n'),
    );
    const out = path.join(dir, 'out-bad');
    await expect(prepareDataset(opts({ manifest: bad, out }))).rejects.toThrow(/bad\.jsonl:2: not valid JSON/);
    expect(fs.existsSync(out)).toBe(false);
    const skips: number[] = [];
    const r = await prepareDataset(opts({ manifest: bad, out, skipBad: true, onEvent: (e) => e.type === 'skip' && skips.push(e.line) }));
    expect(skips.sort()).toEqual([2, 3, 4, 5, 6]);
    expect(r.stats).toMatchObject({ examples: 2, skipped: 5, visionFiles: 1, frames: 3 });
    expect(readPreparedInfo(out).skippedLines).toEqual([2, 3, 4, 5, 6]);
  });
});
