import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { findFfmpeg } from '../../data/ffmpeg.js';
import {
  probeVideo,
  readFrames,
  linspaceIndices,
  lwmFrameIndices,
  fpsFrameIndices,
  runningFfmpegCount,
  type ReadFramesOptions,
  type VideoFrame,
} from '../../data/frames.js';
import {
  resizeTarget,
  centreCropBox,
  pillowResizeBicubic,
  preprocessRgb,
  preprocessImage,
  toModelRange,
  fromModelRange,
  type RgbImage,
} from '../../data/preprocess.js';
import { tmpDir } from '../helpers/paths.js';

const ffmpeg = findFfmpeg();
let dir = '';
const f = (name: string): string => path.join(dir, name);

function make(args: string[], out: string): void {
  const r = spawnSync(ffmpeg!.path, ['-hide_banner', '-loglevel', 'error', '-y', ...args, f(out)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`making ${out} failed: ${r.stderr}`);
}

async function collect(file: string, opts: ReadFramesOptions): Promise<VideoFrame[]> {
  const out: VideoFrame[] = [];
  for await (const fr of readFrames(file, opts)) out.push(fr);
  return out;
}

/** Exact element-wise equality (jest's toEqual is slow on large typed arrays). */
function same(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

async function errorOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected an error');
}

describe('ffmpeg availability', () => {
  it('finds an ffmpeg binary (npm ci installs @ffmpeg-installer/ffmpeg)', () => {
    if (!ffmpeg) throw new Error('ffmpeg not found: run `npm ci` (installs @ffmpeg-installer/ffmpeg) or set LWM_FFMPEG');
    expect(fs.existsSync(ffmpeg.path)).toBe(true);
  });
});

describe('frame index choice (vision_chat.py / VisionTextProcessor)', () => {
  it('matches np.linspace(0, n-1, k).astype(int)', () => {
    expect(linspaceIndices(10, 4)).toEqual([0, 3, 6, 9]); // spec checklist item 12
    expect(linspaceIndices(50, 8)).toEqual([0, 7, 14, 21, 28, 35, 42, 49]);
    expect(linspaceIndices(15, 4)).toEqual([0, 4, 9, 14]);
    expect(linspaceIndices(100, 8)).toEqual([0, 14, 28, 42, 56, 70, 84, 99]);
    expect(linspaceIndices(7, 1)).toEqual([0]);
  });
  it('uses every frame when there are at most maxFrames', () => {
    expect(lwmFrameIndices(5, 8)).toEqual([0, 1, 2, 3, 4]);
    expect(lwmFrameIndices(8, 8)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(() => lwmFrameIndices(8, 0)).toThrow(/maxFrames/);
  });
  it('samples by rate', () => {
    expect(fpsFrameIndices(50, 25, 5)).toEqual([0, 5, 10, 15, 20, 25, 30, 35, 40, 45]);
    expect(fpsFrameIndices(50, 25, 4)).toEqual([0, 6, 12, 18, 25, 31, 37, 43]);
    expect(fpsFrameIndices(5, 25, 100)).toEqual([0, 1, 2, 3, 4]);
  });
});

describe('preprocessing (spec 4.3, checklist 17)', () => {
  // 512x341: black for x < 256, white from 256.
  const w = 512;
  const h = 341;
  const halves: RgbImage = { data: new Uint8Array(w * h * 3), width: w, height: h };
  for (let y = 0; y < h; y++) for (let x = 256; x < w; x++) halves.data.fill(255, (y * w + x) * 3, (y * w + x) * 3 + 3);
  const at = (d: Float32Array, y: number, x: number): number[] => Array.from(d.subarray((y * 256 + x) * 3, (y * 256 + x) * 3 + 3));

  it('512x341 resizes to 384x256 and crops (64,0,320,256)', () => {
    expect(resizeTarget(512, 341)).toEqual({ width: 384, height: 256 });
    expect(centreCropBox(384, 256)).toEqual([64, 0, 320, 256]);
    // Portrait, square and odd sizes; Pillow's box rounding is half-to-even.
    expect(resizeTarget(200, 300)).toEqual({ width: 256, height: 384 });
    expect(resizeTarget(321, 239)).toEqual({ width: 343, height: 256 });
    expect(centreCropBox(343, 256)).toEqual([44, 0, 300, 256]); // 43.5 -> 44, 299.5 -> 300
    expect(centreCropBox(257, 256)).toEqual([0, 0, 256, 256]); // 0.5 -> 0, 256.5 -> 256
  });

  it('maps 0 -> -1 and 255 -> 1, float32 [256,256,3]', () => {
    const p = preprocessRgb(halves);
    expect(p.shape).toEqual([256, 256, 3]);
    expect(p.data).toBeInstanceOf(Float32Array);
    expect(p.data.length).toBe(256 * 256 * 3);
    expect(at(p.data, 0, 0)).toEqual([-1, -1, -1]);
    expect(at(p.data, 255, 100)).toEqual([-1, -1, -1]);
    expect(at(p.data, 255, 255)).toEqual([1, 1, 1]);
    expect(at(p.data, 0, 160)).toEqual([1, 1, 1]);
    // The edge lands at resized x = 192 = crop x 128; bicubic overshoot is clipped to [0, 255].
    expect(p.data.every((v) => Math.abs(v) <= 1)).toBe(true);
    expect(at(p.data, 10, 127)[0]).toBeLessThan(0);
    expect(at(p.data, 10, 128)[0]).toBeGreaterThan(0);
  });

  it('gives the same through a PNG decoded by sharp', async () => {
    const { default: sharp } = await import('sharp');
    const png = path.join(tmpDir('pre'), 'halves.png');
    await sharp(Buffer.from(halves.data), { raw: { width: w, height: h, channels: 3 } }).png().toFile(png);
    const p = await preprocessImage(png);
    fs.rmSync(path.dirname(png), { recursive: true, force: true });
    expect(same(p.data, preprocessRgb(halves).data)).toBe(true);
  });

  it('keeps a solid colour exact (hand computation: c / 127.5 - 1 in float32)', () => {
    const img: RgbImage = { data: new Uint8Array(300 * 200 * 3), width: 300, height: 200 };
    for (let i = 0; i < img.data.length; i += 3) img.data.set([51, 102, 153], i);
    const p = preprocessRgb(img);
    const want = [Math.fround(51 / 127.5) - 1, Math.fround(102 / 127.5) - 1, Math.fround(153 / 127.5) - 1];
    expect(want.map((v) => Math.fround(v))).toEqual([Math.fround(-0.6), Math.fround(102 / 127.5) - 1, Math.fround(153 / 127.5) - 1]);
    expect(Math.abs(want[1]! + 0.2)).toBeLessThan(1e-7);
    for (let i = 0; i < p.data.length; i += 3) {
      if (p.data[i] !== Math.fround(want[0]!) || p.data[i + 1] !== Math.fround(want[1]!) || p.data[i + 2] !== Math.fround(want[2]!)) {
        throw new Error(`pixel ${i / 3} is ${Array.from(p.data.subarray(i, i + 3))}`);
      }
    }
  });

  it('Pillow resample: identity at the same size, a 2:1 box of pairs averages exactly', () => {
    const img: RgbImage = { data: new Uint8Array(4 * 2 * 3).map((_, i) => i * 10), width: 4, height: 2 };
    expect(pillowResizeBicubic(img, 4, 2).data).toEqual(img.data);
    const ramp: RgbImage = { data: new Uint8Array(64 * 1 * 3), width: 64, height: 1 };
    for (let x = 0; x < 64; x++) ramp.data.fill(x * 4, x * 3, x * 3 + 3);
    const half = pillowResizeBicubic(ramp, 32, 1);
    // Interior of a linear ramp stays linear under a symmetric normalised kernel: pixel i covers 8i..8i+7 -> 8i+2 (= mean of 4*(2i), 4*(2i+1)).
    for (let i = 4; i < 28; i++) expect(half.data[i * 3]).toBe(8 * i + 2);
  });

  it('decoder output: uint8((x+1)*127.5) truncates after the clip', () => {
    expect(Array.from(fromModelRange([0.999, -1, 1, 2, -3, 0]))).toEqual([254, 0, 255, 255, 0, 127]);
    expect(Array.from(toModelRange(new Uint8Array([0, 255])))).toEqual([-1, 1]);
  });
});

describe('videos made with ffmpeg', () => {
  beforeAll(() => {
    if (!ffmpeg) throw new Error('ffmpeg not found: run `npm ci` (installs @ffmpeg-installer/ffmpeg) or set LWM_FFMPEG');
    dir = tmpDir('frames');
    make(['-f', 'lavfi', '-i', 'testsrc2=s=320x240:r=25:d=2', '-c:v', 'libx264', '-pix_fmt', 'yuv420p'], 'a.mp4');
    make(['-f', 'lavfi', '-i', 'testsrc2=s=322x240:r=10:d=1.5', '-vf', 'format=yuv444p,crop=321:239:0:0', '-c:v', 'ffv1'], 'odd.mkv');
    make(['-f', 'lavfi', '-i', 'color=c=0x336699:s=200x300:r=12:d=1,format=rgb24', '-pix_fmt', 'rgb24', '-c:v', 'rawvideo'], 'solid.nut');
    make(['-f', 'lavfi', '-i', 'sine=frequency=440:duration=1', '-c:a', 'aac'], 'tone.m4a');
    make(['-f', 'lavfi', '-i', 'testsrc2=s=64x48:r=10', '-frames:v', '0'], 'zero.avi');
    fs.writeFileSync(f('text.mp4'), 'this is not a video\n'.repeat(50));
    fs.writeFileSync(f('empty.mp4'), '');
    const a = fs.readFileSync(f('a.mp4'));
    fs.writeFileSync(f('cut.mp4'), a.subarray(0, Math.floor(a.length / 3)));
  });
  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('probes duration, rate, exact frame count and size', async () => {
    expect(await probeVideo(f('a.mp4'))).toMatchObject({ duration: 2, fps: 25, frameCount: 50, width: 320, height: 240, hasVideo: true, codec: 'h264' });
    expect(await probeVideo(f('odd.mkv'))).toMatchObject({ fps: 10, frameCount: 15, width: 321, height: 239, hasVideo: true });
    expect(await probeVideo(f('solid.nut'))).toMatchObject({ fps: 12, frameCount: 12, width: 200, height: 300 });
  });

  it('streams every frame, and maxFrames / fps pick exactly those source frames', async () => {
    const all = await collect(f('a.mp4'), { size: 0 });
    expect(all.map((x) => x.index)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(all[0]!.data.length).toBe(320 * 240 * 3);
    expect(same(all[0]!.data, all[1]!.data)).toBe(false); // testsrc2 moves every frame
    const byMax = await collect(f('a.mp4'), { maxFrames: 8, size: 0 });
    expect(byMax.map((x) => x.index)).toEqual([0, 7, 14, 21, 28, 35, 42, 49]);
    for (const fr of byMax) expect(same(fr.data, all[fr.index]!.data)).toBe(true);
    const byFps = await collect(f('a.mp4'), { fps: 4, size: 0 });
    expect(byFps.map((x) => x.index)).toEqual([0, 6, 12, 18, 25, 31, 37, 43]);
    for (const fr of byFps) expect(same(fr.data, all[fr.index]!.data)).toBe(true);
    expect((await collect(f('a.mp4'), { maxFrames: 100, size: 0 })).length).toBe(50);
    expect(runningFfmpegCount()).toBe(0);
  });

  it('resizes and crops an odd-sized video like LWM (321x239 -> 343x256 -> crop at x 44)', async () => {
    const native = await collect(f('odd.mkv'), { maxFrames: 4, size: 0 });
    const frames = await collect(f('odd.mkv'), { maxFrames: 4 });
    expect(frames.map((x) => x.index)).toEqual([0, 4, 9, 14]);
    expect(frames.map((x) => x.sample)).toEqual([0, 1, 2, 3]);
    for (let i = 0; i < 4; i++) {
      expect([frames[i]!.width, frames[i]!.height, frames[i]!.data.length]).toEqual([256, 256, 256 * 256 * 3]);
      const manual = preprocessRgb({ data: native[i]!.data, width: 321, height: 239 });
      expect(same(toModelRange(frames[i]!.data), manual.data)).toBe(true);
    }
  });

  it('a solid-colour portrait video preprocesses to c / 127.5 - 1 everywhere', async () => {
    const frames = await collect(f('solid.nut'), { fps: 3 });
    expect(frames.map((x) => x.index)).toEqual([0, 4, 8]);
    for (const fr of frames) {
      const d = toModelRange(fr.data);
      const want = [51, 102, 153].map((c) => Math.fround(Math.fround(c / 127.5) - 1));
      for (let i = 0; i < d.length; i += 3) {
        if (d[i] !== want[0] || d[i + 1] !== want[1] || d[i + 2] !== want[2]) throw new Error(`pixel ${i / 3}: ${Array.from(d.subarray(i, i + 3))}`);
      }
    }
  });

  it('stops ffmpeg when the consumer breaks out early', async () => {
    for await (const fr of readFrames(f('a.mp4'), {})) {
      expect(fr.index).toBe(0);
      expect(runningFfmpegCount()).toBe(1);
      break;
    }
    expect(runningFfmpegCount()).toBe(0);
  });

  it('fails with one line naming the file and what to do', async () => {
    const cases: [string, RegExp][] = [
      [f('missing.mp4'), /missing\.mp4: no such file; check the path/],
      [f('empty.mp4'), /empty\.mp4: file is empty \(0 bytes\)/],
      [f('text.mp4'), /text\.mp4: not a video ffmpeg can read \(.*\); check the file/],
      [f('cut.mp4'), /cut\.mp4: not a video ffmpeg can read \(.+\); check the file/],
      [f('tone.m4a'), /tone\.m4a: has no video stream/],
      [f('zero.avi'), /zero\.avi: video has no frames \(zero length\)/],
      [dir, /is a directory/],
    ];
    for (const [file, re] of cases) {
      const msg = await errorOf(collect(file, { maxFrames: 8 }));
      expect(msg).toMatch(re);
      expect(msg).not.toContain('\n');
      expect(msg.startsWith(file)).toBe(true);
    }
    await expect(probeVideo(f('tone.m4a'))).rejects.toThrow(/has no video stream/);
    await expect(errorOf(collect(f('a.mp4'), { fps: 1, maxFrames: 2 }))).resolves.toMatch(/either fps or maxFrames/);
    expect(runningFfmpegCount()).toBe(0);
  });
});
