import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { InputError } from '../../ops/errors.js';
import type { Vqgan } from '../../models/vqgan/model.js';
import { findFfmpeg } from '../../data/ffmpeg.js';
import { fromModelRange } from '../../data/preprocess.js';
import { FRAME_SIDE, TOKENS_PER_FRAME } from '../../data/visionTokens.js';
import { writeFileAtomic } from '../checkpoint/safetensors.js';

/** LWM writes its videos at 4 frames per second (imageio, vision_generation.py). */
export const LWM_VIDEO_FPS = 4;

export interface DecodedFrames {
  frames: number;
  width: number;
  height: number;
  /** frames × height × width × 3 bytes, packed RGB. */
  rgb: Uint8Array;
  /** Codes outside the VQGAN codebook that were clamped to its last entry. */
  clamped: number;
}

/**
 * VQGAN-decodes frames × 256 codes to uint8 RGB with LWM's `uint8((x + 1) * 127.5)` (truncation).
 * Codes past the codebook (a sampled marker or one of the 256 unused vision ids) are clamped to its
 * last entry, as JAX's gather in LWM's `embeddings[indices]` clamps out-of-range indices.
 * One frame at a time, so memory stays that of one frame.
 */
export async function decodeVisionCodes(vqgan: Vqgan, codes: Int32Array): Promise<DecodedFrames> {
  if (codes.length === 0 || codes.length % TOKENS_PER_FRAME !== 0) {
    throw new InputError(`${codes.length} codes is not a whole number of ${TOKENS_PER_FRAME}-code frames`);
  }
  const frames = codes.length / TOKENS_PER_FRAME;
  const last = vqgan.config.numEmbeddings - 1;
  let clamped = 0;
  const safe = codes.map((c) => {
    if (c >= 0 && c <= last) return c;
    clamped++;
    return c < 0 ? 0 : last;
  });
  const side = FRAME_SIDE * vqgan.downsampleFactor;
  const frameBytes = side * side * 3;
  const rgb = new Uint8Array(frames * frameBytes);
  for (let f = 0; f < frames; f++) {
    const y = tf.tidy(() => vqgan.decode(tf.tensor3d(safe.subarray(f * TOKENS_PER_FRAME, (f + 1) * TOKENS_PER_FRAME), [1, FRAME_SIDE, FRAME_SIDE], 'int32')));
    try {
      rgb.set(fromModelRange((await y.data()) as Float32Array), f * frameBytes);
    } finally {
      y.dispose();
    }
  }
  return { frames, width: side, height: side, rgb, clamped };
}

/** Output kinds by file extension. */
export function outputKind(file: string): 'png' | 'mp4' | null {
  const ext = path.extname(file).toLowerCase();
  return ext === '.png' ? 'png' : ext === '.mp4' ? 'mp4' : null;
}

/** Writes `.png` (frames side by side in one strip) or `.mp4`; returns how it was encoded. */
export async function writeVisionOutput(file: string, d: DecodedFrames, fps = LWM_VIDEO_FPS): Promise<string> {
  const kind = outputKind(file);
  const dir = path.dirname(path.resolve(file));
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new InputError(`${file}: the folder ${dir} does not exist; create it first`);
  if (kind === 'png') {
    await writeFramesPng(file, d);
    return 'png';
  }
  if (kind === 'mp4') return writeFramesMp4(file, d, fps);
  throw new InputError(`${file}: give an output name ending in .png or .mp4`);
}

/** One PNG; several frames are laid out left to right (frame i at x = i × width). */
export async function writeFramesPng(file: string, d: DecodedFrames): Promise<void> {
  const { frames, width: w, height: h } = d;
  const stripW = frames * w;
  let strip = d.rgb;
  if (frames > 1) {
    strip = new Uint8Array(d.rgb.length);
    for (let f = 0; f < frames; f++) {
      for (let y = 0; y < h; y++) {
        const src = (f * h + y) * w * 3;
        strip.set(d.rgb.subarray(src, src + w * 3), (y * stripW + f * w) * 3);
      }
    }
  }
  const { default: sharp } = await import('sharp');
  await atomically(file, '.png', async (tmp) => {
    await sharp(Buffer.from(strip.buffer, strip.byteOffset, strip.byteLength), { raw: { width: stripW, height: h, channels: 3 } }).png().toFile(tmp);
  });
}

/** H.264 (yuv420p) through ffmpeg, or MPEG-4 Part 2 when this ffmpeg has no libx264; returns the codec. */
export async function writeFramesMp4(file: string, d: DecodedFrames, fps = LWM_VIDEO_FPS): Promise<string> {
  if (!(fps > 0)) throw new InputError(`fps must be positive, got ${fps}`);
  const ff = findFfmpeg();
  if (!ff) throw new InputError('ffmpeg not found: run `npm install` (it ships @ffmpeg-installer/ffmpeg), or set LWM_FFMPEG to an ffmpeg binary; or write a .png instead');
  const input = ['-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${d.width}x${d.height}`, '-r', String(fps), '-i', 'pipe:0'];
  const encoders: [string, string[]][] = [
    ['h264', ['-c:v', 'libx264', '-pix_fmt', 'yuv420p']],
    ['mpeg4', ['-c:v', 'mpeg4', '-q:v', '2', '-pix_fmt', 'yuv420p']],
  ];
  let why = '';
  for (const [codec, enc] of encoders) {
    const tmp = tmpName(file, '.mp4');
    try {
      why = await ffmpegEncode(ff.path, [...input, ...enc, '-movflags', '+faststart', '-f', 'mp4', tmp], d.rgb);
      if (!why) {
        fs.renameSync(tmp, file);
        return codec;
      }
    } finally {
      fs.rmSync(tmp, { force: true });
    }
  }
  throw new InputError(`${file}: ffmpeg could not encode the video (${why}); set LWM_FFMPEG to a full ffmpeg build, or write a .png instead`);
}

/** Runs ffmpeg with the frames on stdin; '' on success, else its last error line. */
function ffmpegEncode(bin: string, args: string[], rgb: Uint8Array): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(bin, ['-hide_banner', '-nostdin', '-loglevel', 'error', '-y', ...args], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      if (stderr.length < 65536) stderr += s;
    });
    // ffmpeg may exit before reading everything (e.g. unknown encoder): the broken pipe is not the error to report.
    child.stdin!.on('error', () => {});
    child.on('error', (e) => resolve(`cannot run ffmpeg: ${e.message}`));
    child.on('close', (code) => {
      const lines = stderr.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
      resolve(code === 0 ? '' : (lines[lines.length - 1] ?? `exit code ${code}`).slice(0, 200));
    });
    child.stdin!.end(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength));
  });
}

/** Writes through a temporary sibling and renames it into place, so a failure leaves no half-written file. */
async function atomically(file: string, ext: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = tmpName(file, ext);
  try {
    await write(tmp);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    if (e instanceof InputError) throw e;
    throw new InputError(`${file}: cannot write it (${(e as Error).message.split('\n')[0]})`);
  }
}

/** A hidden sibling with the real extension (sharp and ffmpeg pick the format by it). */
function tmpName(file: string, ext: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}${ext}`);
}

/**
 * The raw result as JSON: `codes` is the flat frames × 256 list (the form LWM's vision-text JSONL
 * datasets use), `tokens` the 257-per-frame generated stream with its markers.
 */
export function writeCodesJson(file: string, r: { prompt: string; frames: number; seed: number; tokens: readonly number[]; codes: Int32Array }): void {
  try {
    writeFileAtomic(file, JSON.stringify({ prompt: r.prompt, frames: r.frames, seed: r.seed, codes: Array.from(r.codes), tokens: r.tokens }) + '\n');
  } catch (e) {
    throw new InputError(`${file}: cannot write it (${(e as Error).message.split('\n')[0]})`);
  }
}
