import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { findFfmpeg } from '../../data/ffmpeg.js';
import { initVqganParams, vqganConfig, VQGAN_TINY } from '../../models/vqgan/config.js';
import { Vqgan } from '../../models/vqgan/model.js';
import { saveVqgan } from '../../src/checkpoint/vqgan.js';

/** The ffmpeg `npm ci` installs (or LWM_FFMPEG / PATH); tests that make videos need it. */
export function ffmpegPath(): string {
  const ff = findFfmpeg();
  if (!ff) throw new Error('ffmpeg not found: run `npm ci` (installs @ffmpeg-installer/ffmpeg) or set LWM_FFMPEG');
  return ff.path;
}

/** Runs ffmpeg with `args` writing `dir/name` (e.g. lavfi testsrc2 clips of known size, rate and length). */
export function makeMedia(dir: string, name: string, args: string[]): string {
  const out = path.join(dir, name);
  const r = spawnSync(ffmpegPath(), ['-hide_banner', '-loglevel', 'error', '-y', ...args, out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`making ${name} failed: ${r.stderr}`);
  return out;
}

/** A testsrc2 H.264 clip: `frames` frames of w x h at `rate` fps. */
export function makeClip(dir: string, name: string, w: number, h: number, rate: number, frames: number): string {
  return makeMedia(dir, name, ['-f', 'lavfi', '-i', `testsrc2=s=${w}x${h}:r=${rate}`, '-frames:v', String(frames), '-c:v', 'libx264', '-pix_fmt', 'yuv420p']);
}

/** The fixture-shaped tiny VQGAN (16x downsampling, 64-entry codebook) with seeded random weights, saved as a folder. */
export function saveTinyVqgan(dir: string, seed = 3): string {
  const c = vqganConfig({ ...VQGAN_TINY, numGroups: 8 });
  const m = new Vqgan(c, initVqganParams(c, seed));
  try {
    saveVqgan(dir, m);
  } finally {
    m.dispose();
  }
  return dir;
}
