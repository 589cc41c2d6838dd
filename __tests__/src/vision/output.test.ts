import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { probeVideo } from '../../../data/frames.js';
import { findFfmpeg } from '../../../data/ffmpeg.js';
import { initVqganParams, vqganConfig, VQGAN_TINY } from '../../../models/vqgan/config.js';
import { Vqgan } from '../../../models/vqgan/model.js';
import { initBackend } from '../../../src/backend.js';
import { decodeVisionCodes, writeFramesMp4, writeVisionOutput, type DecodedFrames } from '../../../src/vision/output.js';
import { tmpDir } from '../../helpers/paths.js';

let dir = '';
beforeAll(async () => {
  await initBackend();
  dir = tmpDir('vision-out');
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Two 16x16 frames: a red ramp and a blue one. */
function twoFrames(): DecodedFrames {
  const w = 16;
  const rgb = new Uint8Array(2 * w * w * 3);
  for (let f = 0; f < 2; f++) for (let p = 0; p < w * w; p++) rgb[(f * w * w + p) * 3 + (f === 0 ? 0 : 2)] = p % 256;
  return { frames: 2, width: w, height: w, rgb, clamped: 0 };
}

/** A stand-in ffmpeg (via LWM_FFMPEG) that has no libx264, or fails outright. */
function fakeFfmpeg(name: string, body: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return file;
}

async function withFfmpeg<T>(bin: string, run: () => Promise<T>): Promise<T> {
  const old = process.env['LWM_FFMPEG'];
  process.env['LWM_FFMPEG'] = bin;
  try {
    return await run();
  } finally {
    if (old === undefined) delete process.env['LWM_FFMPEG'];
    else process.env['LWM_FFMPEG'] = old;
  }
}

describe('vision output', () => {
  it('decodes codes with the VQGAN; codes past the codebook are clamped to its last entry', async () => {
    // Two levels (2x upsampling) keep the decoder cheap: 16x16 codes become 32x32 frames.
    const c = vqganConfig({ ...VQGAN_TINY, channelMult: [1, 2], resolution: 32, numGroups: 8 });
    const vq = new Vqgan(c, initVqganParams(c, 1));
    try {
      const codes = new Int32Array(512);
      for (let i = 0; i < 256; i++) codes[i] = i % 64;
      codes.fill(63, 256);
      codes[300] = 8193;
      const d = await decodeVisionCodes(vq, codes);
      expect([d.frames, d.width, d.height, d.clamped]).toEqual([2, 32, 32, 1]);
      expect(d.rgb).toHaveLength(2 * 32 * 32 * 3);
      const same = await decodeVisionCodes(vq, new Int32Array(256).fill(63));
      expect(Buffer.from(d.rgb.subarray(32 * 32 * 3)).equals(Buffer.from(same.rgb))).toBe(true);
      expect(Buffer.from(d.rgb.subarray(0, 32 * 32 * 3)).equals(Buffer.from(same.rgb))).toBe(false);
    } finally {
      vq.dispose();
    }
  });

  it('PNG: several frames side by side in one strip', async () => {
    const out = path.join(dir, 'strip.png');
    expect(await writeVisionOutput(out, twoFrames())).toBe('png');
    const { data, info } = await sharp(out).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([32, 16, 3]);
    const px = (x: number, y: number) => Array.from(data.subarray((y * 32 + x) * 3, (y * 32 + x) * 3 + 3));
    expect(px(5, 1)).toEqual([21, 0, 0]);
    expect(px(16 + 5, 1)).toEqual([0, 0, 21]);
  });

  it('MP4: falls back to mpeg4 when ffmpeg has no libx264', async () => {
    const real = findFfmpeg()!.path;
    const noX264 = fakeFfmpeg('no-x264', `case "$*" in *libx264*) echo "Unknown encoder 'libx264'" >&2; exit 1;; esac\nexec "${real}" "$@"`);
    const out = path.join(dir, 'fallback.mp4');
    expect(await withFfmpeg(noX264, () => writeFramesMp4(out, twoFrames()))).toBe('mpeg4');
    const info = await probeVideo(out);
    expect([info.codec, info.frameCount, info.fps]).toEqual(['mpeg4', 2, 4]);
  });

  it('a failed encode leaves neither the output nor a temporary file', async () => {
    const broken = fakeFfmpeg('broken', 'echo "Conversion failed!" >&2; exit 1');
    const out = path.join(dir, 'never.mp4');
    await expect(withFfmpeg(broken, () => writeFramesMp4(out, twoFrames()))).rejects.toThrow(/ffmpeg could not encode the video \(Conversion failed!\)/);
    expect(fs.readdirSync(dir).filter((f) => f.includes('never'))).toEqual([]);
  });
});
