import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import sharp from 'sharp';
import { probeVideo } from '../../data/frames.js';
import { initBackend } from '../../src/backend.js';
import { createModel } from '../../src/createModel.js';
import { saveModel } from '../../src/checkpoint/modelDir.js';
import { saveVqgan } from '../../src/checkpoint/vqgan.js';
import { randomTinyVqgan } from '../../src/vision/run.js';
import { cliPath, tmpDir } from '../helpers/paths.js';
import { expectOneLineError, lwm } from '../helpers/cli.js';

let dir = '';
/** tiny-vision weights with no vqgan/ beside them. */
let bare = '';
/** The same weights with a vqgan/ folder, as a release would ship them. */
let withVq = '';
let vq = '';
let text = '';

beforeAll(async () => {
  await initBackend();
  dir = tmpDir('vision-cli');
  bare = path.join(dir, 'bare');
  withVq = path.join(dir, 'with-vq');
  vq = path.join(dir, 'vqgan');
  text = path.join(dir, 'text');
  for (const [preset, where] of [['tiny-vision', bare], ['tiny', text]] as const) {
    const m = createModel(preset, { seed: 1 });
    try {
      saveModel(where, m);
    } finally {
      m.dispose();
    }
  }
  const v = randomTinyVqgan(4);
  try {
    saveVqgan(vq, v);
  } finally {
    v.dispose();
  }
  fs.mkdirSync(withVq);
  for (const f of fs.readdirSync(bare)) fs.symlinkSync(path.join(bare, f), path.join(withVq, f));
  fs.symlinkSync(vq, path.join(withVq, 'vqgan'));
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('lwm generate --image / --video', () => {
  it('--image writes a 256x256 PNG with <model>/vqgan, and --json reports it', async () => {
    const out = path.join(dir, 'fireworks.png');
    const r = lwm(['generate', '-m', withVq, '--image', 'Fireworks over the city', '--out', out, '--json', '--top-k', '100']);
    expect(r.code).toBe(0);
    expect(r.stderr).not.toMatch(/error/);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ out, kind: 'image', frames: 1, tokens: 257, format: 'png' });
    expect(j.seconds).toBeGreaterThan(0);
    const meta = await sharp(out).metadata();
    expect([meta.width, meta.height, meta.channels]).toEqual([256, 256, 3]);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('--video --frames 2 writes a 2-frame MP4 at 4 fps, and --codes-out the codes', async () => {
    const out = path.join(dir, 'clip.mp4');
    const codes = path.join(dir, 'clip.json');
    const r = lwm(['generate', '-m', bare, '--vqgan', vq, '--video', 'Fireworks', '--frames', '2', '--out', out, '--codes-out', codes, '--seed', '3']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(out);
    const info = await probeVideo(out);
    expect([info.frameCount, info.width, info.height, info.fps]).toEqual([2, 256, 256, 4]);
    const c = JSON.parse(fs.readFileSync(codes, 'utf8'));
    expect(c.codes).toHaveLength(512);
    expect(c.tokens).toHaveLength(514);
    expect([c.tokens[256], c.tokens[513]]).toEqual([8192, 8192]);
  });

  it('errors: text model, wrong --out extension, missing VQGAN', () => {
    const png = path.join(dir, 'x.png');
    expectOneLineError(lwm(['generate', '-m', text, '--image', 'a cat', '--out', png, '--vqgan', vq]), /^lwm generate: error: .*text is a text model \(vision_vocab_size 0\)/);
    expectOneLineError(lwm(['generate', '-m', withVq, '--image', 'a cat', '--out', path.join(dir, 'x.mp4')]), /an image is written as PNG; give a name ending in \.png/);
    expectOneLineError(lwm(['generate', '-m', withVq, '--video', 'a cat', '--out', path.join(dir, 'x.gif')]), /a video is written as \.mp4 \(4 fps\) or \.png/);
    expectOneLineError(lwm(['generate', '-m', bare, '--image', 'a cat', '--out', png]), /no VQGAN: .*bare\/vqgan does not exist; pass --vqgan DIR/);
    expect(fs.existsSync(png)).toBe(false);
  });

  it('errors: flags that do not mix', () => {
    const png = path.join(dir, 'x.png');
    expectOneLineError(lwm(['generate', '--image', 'a cat']), /--image needs --out FILE/);
    expectOneLineError(lwm(['generate', '--image', 'a cat', '-p', 'hi', '--out', png]), /cannot be combined with -p\/--prompt/);
    expectOneLineError(lwm(['generate', '--video', 'a cat', '--frames', '1', '--out', png]), /--frames must be an integer >= 2/);
    expectOneLineError(lwm(['generate', '-p', 'hi', '--out', png]), /--out applies to --image\/--video/);
    expectOneLineError(lwm(['generate', '--image', 'a cat', '--out', png, '--top-p', '0.5']), /--top-p applies to text generation/);
    expectOneLineError(lwm(['generate', '--preset', 'tiny', '--image', 'a cat', '--out', png]), /preset 'tiny' is a text model/);
    expect(fs.existsSync(png)).toBe(false);
  });
});
