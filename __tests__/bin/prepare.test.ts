import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeClip, makeMedia, saveTinyVqgan } from '../helpers/media.js';
import { treeBytes } from '../helpers/files.js';
import { cliPath, tmpDir } from '../helpers/paths.js';
import { expectOneLineError, lwm } from '../helpers/cli.js';

let dir = '';
let data = '';
let vq = '';
const f = (...p: string[]): string => path.join(dir, ...p);

function manifest(name: string, lines: (object | string)[]): string {
  const file = path.join(data, name);
  fs.writeFileSync(file, lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return file;
}

const CLIPS = 5;
const prepareArgs = (m: string, out: string): string[] => ['prepare', m, '--out', out, '--vqgan', vq, '--max-frames', '2', '--seq-len', '1024'];

beforeAll(() => {
  dir = tmpDir('prepare-cli');
  data = f('data');
  fs.mkdirSync(data);
  for (let i = 0; i < CLIPS; i++) makeClip(data, `c${i}.mp4`, 160 + 16 * i, 120, 10, 6 + i);
  makeMedia(data, 'tone.m4a', ['-f', 'lavfi', '-i', 'sine=frequency=440:duration=1', '-c:a', 'aac']);
  makeMedia(data, 'zero.avi', ['-f', 'lavfi', '-i', 'testsrc2=s=64x48:r=10', '-frames:v', '0']);
  fs.writeFileSync(path.join(data, 'text.mp4'), 'this is not a video\n'.repeat(50));
  fs.writeFileSync(path.join(data, 'empty.mp4'), '');
  fs.writeFileSync(f('outside.mp4'), fs.readFileSync(path.join(data, 'c0.mp4')));
  manifest(
    'clips.jsonl',
    Array.from({ length: CLIPS }, (_, i) => ({ vision: `c${i}.mp4`, question: `What is in clip ${i}?`, answer: `Test pattern ${i}.` })).concat([{ text: 'A text-only line.' } as never]),
  );
  vq = saveTinyVqgan(f('vq'));
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('lwm prepare', () => {
  it('killed midway and run again, writes the same bytes as an uninterrupted run', async () => {
    const m = path.join(data, 'clips.jsonl');
    const whole = lwm(prepareArgs(m, f('whole')));
    expect(whole.stderr).toMatch(/encoded 5\/5 c4\.mp4 \(2 frames\) \| 10\/10 frames, [\d.]+ frames\/s, ETA 0:00/);
    expect(whole.code).toBe(0);
    expect(whole.stdout).toMatch(/examples: 6\n/);

    // Kill it (SIGKILL: no cleanup) once two files are encoded.
    const child = spawn(process.execPath, [cliPath, ...prepareArgs(m, f('resumed'))], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    await new Promise<void>((resolve, reject) => {
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        if (/encoded 2\/5/.test(err)) child.kill('SIGKILL');
      });
      child.on('exit', () => resolve());
      child.on('error', reject);
    });
    expect(child.signalCode).toBe('SIGKILL');
    expect(fs.existsSync(f('resumed', 'prepare.json'))).toBe(false);
    expect(lwm(['prepare', '--help']).code).toBe(0);

    const again = lwm(prepareArgs(m, f('resumed')));
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/cached 1\/5 c0\.mp4/);
    expect(again.stderr).toMatch(/cached 2\/5 c1\.mp4/);
    const a = treeBytes(f('whole'));
    const b = treeBytes(f('resumed'));
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [k, v] of a) expect({ file: k, same: b.get(k)!.equals(v) }).toEqual({ file: k, same: true });
  });

  it('--stats counts without writing; --json gives the numbers', () => {
    const r = lwm(['prepare', path.join(data, 'clips.jsonl'), '--stats', '--json', '--max-frames', '2', '--seq-len', '1024']);
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s).toMatchObject({ examples: 6, visionFiles: 5, frames: 10, visionTokens: 10 * 257, seqLen: 1024 });
    expect(s.paddingTokens).toBe(s.rows * 1024 - s.tokens);
  });

  it('--preview writes a PNG of frames over their reconstructions', async () => {
    const r = lwm([...prepareArgs(path.join(data, 'clips.jsonl'), f('whole')), '--preview', f('preview.png')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/preview: 8 frames/);
    const { default: sharp } = await import('sharp');
    const meta = await sharp(f('preview.png')).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 8 * 256, 2 * 256]);
  });

  const bad: [string, object | string, RegExp][] = [
    ['a missing video', { vision: 'nope.mp4', caption: 'x' }, /bad\.jsonl:1: vision file nope\.mp4 not found/],
    ['a file that is not a video', { vision: 'text.mp4', caption: 'x' }, /bad\.jsonl:1: .*text\.mp4: not a video ffmpeg can read/],
    ['a video with no video stream', { vision: 'tone.m4a', caption: 'x' }, /bad\.jsonl:1: .*tone\.m4a: has no video stream/],
    ['a zero-length video', { vision: 'zero.avi', caption: 'x' }, /bad\.jsonl:1: .*zero\.avi: video has no frames/],
    ['an empty file', { vision: 'empty.mp4', caption: 'x' }, /bad\.jsonl:1: .*empty\.mp4: file is empty/],
    ['an unreadable manifest line', '{"vision": "c0.mp4", "caption": ', /bad\.jsonl:1: not valid JSON/],
    ['a path escaping the dataset folder', { vision: '../outside.mp4', caption: 'x' }, /bad\.jsonl:1: vision path "\.\.\/outside\.mp4" .* outside the dataset folder/],
  ];
  for (const [what, line, pattern] of bad) {
    it(`${what} is a one-line error naming the file, and nothing is written`, () => {
      const m = manifest('bad.jsonl', [line, { vision: 'c0.mp4', caption: 'fine' }]);
      const out = f(`out-${what.replace(/\W+/g, '-')}`);
      expectOneLineError(lwm(prepareArgs(m, out)), new RegExp(`^lwm prepare: error: .*${pattern.source}`));
      expect(fs.existsSync(out)).toBe(false);
    });
  }

  it('--skip-bad warns once per bad line, counts them and prepares the rest', () => {
    const m = manifest('bad.jsonl', [...bad.map(([, line]) => line), { vision: 'c0.mp4', caption: 'fine' }]);
    const r = lwm([...prepareArgs(m, f('out-skip')), '--skip-bad', '--json']);
    expect(r.code).toBe(0);
    expect(r.stderr.match(/warning: skipped line \d+/g)).toHaveLength(bad.length);
    expect(JSON.parse(r.stdout)).toMatchObject({ examples: 1, skipped: bad.length, frames: 2 });
  });

  it('bad options are one-line errors', () => {
    const m = path.join(data, 'clips.jsonl');
    expectOneLineError(lwm(['prepare', m, '--out', f('x'), '--fps', '2', '--max-frames', '3']), /give at most one of --fps, --max-frames/);
    expectOneLineError(lwm(['prepare', m, '--out', f('x'), '--max-frames', '0']), /--max-frames must be a positive integer/);
    expectOneLineError(lwm(['prepare', m, '--out', f('x')]), /has images or videos; pass --vqgan/);
    expectOneLineError(lwm(['prepare', f('nope.jsonl'), '--out', f('x')]), /nope\.jsonl: no such manifest/);
    expectOneLineError(lwm(['prepare', m, '--out', f('x'), '--vqgan', f('data')]), /missing config\.json; this is not an lwm-vqgan folder/);
    expect(fs.existsSync(f('x'))).toBe(false);
  });
});
