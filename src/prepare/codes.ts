import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { InputError } from '../../ops/errors.js';
import type { Vqgan } from '../../models/vqgan/model.js';
import { readFrames, type ReadFramesOptions } from '../../data/frames.js';
import { LWM_IMAGE_SIZE, preprocessImage, toModelRange } from '../../data/preprocess.js';
import { FRAME_SIDE, TOKENS_PER_FRAME } from '../../data/visionTokens.js';
import { isProcessAlive } from '../checkpoint/files.js';
import { readSafetensorsHeader, readTensorI32, writeSafetensors } from '../checkpoint/safetensors.js';

/** LWM's rule (spec 3.6): `.png`/`.jpg` are one-frame images, anything else is read as a video. */
const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp']);

export type VisionKind = 'image' | 'video';

export function visionKind(file: string): VisionKind {
  return IMAGE_EXTENSIONS.has(path.extname(file).toLowerCase()) ? 'image' : 'video';
}

/** How frames are chosen from a video: a rate, LWM's uniform choice of at most N, or every frame. */
export type Sampling = { fps: number } | { maxFrames: number } | { all: true };

export function samplingOptions(s: Sampling): ReadFramesOptions {
  if ('fps' in s) return { fps: s.fps };
  if ('maxFrames' in s) return { maxFrames: s.maxFrames };
  return {};
}

export function describeSampling(s: Sampling): Record<string, unknown> {
  return 'fps' in s ? { fps: s.fps } : 'maxFrames' in s ? { max_frames: s.maxFrames } : { all_frames: true };
}

/** Cache key of one file's codes: its content, how frames were chosen and preprocessed, and the VQGAN. */
export function codesCacheKey(contentSha256: string, kind: VisionKind, sampling: Sampling, vqganSha256: string): string {
  const desc = { v: 1, content: contentSha256, kind, sampling: kind === 'image' ? null : describeSampling(sampling), size: LWM_IMAGE_SIZE, vqgan: vqganSha256 };
  return createHash('sha256').update(JSON.stringify(desc)).digest('hex');
}

export interface VisionCodesResult {
  /** Row-major [frames, 16, 16]. */
  codes: Int32Array;
  /** Source frame index of each encoded frame (0 for an image). */
  frameIndices: Int32Array;
}

/** Whole-file codes cache; entries are immutable once written (a key says everything they depend on). */
export class CodesCache {
  constructor(readonly dir: string) {}

  file(key: string): string {
    return path.join(this.dir, `${key}.safetensors`);
  }

  /** Null when absent; a damaged entry (it should not happen: writes are atomic) is deleted and counts as absent. */
  get(key: string): VisionCodesResult | null {
    const file = this.file(key);
    if (!fs.existsSync(file)) return null;
    try {
      const h = readSafetensorsHeader(file);
      const c = h.tensors.get('codes');
      const f = h.tensors.get('frame_indices');
      if (!c || !f || c.shape.length !== 3 || c.shape[1] !== FRAME_SIDE || c.shape[2] !== FRAME_SIDE || f.shape[0] !== c.shape[0]) {
        throw new Error('unexpected tensors');
      }
      return { codes: readTensorI32(c, file), frameIndices: readTensorI32(f, file) };
    } catch {
      fs.rmSync(file, { force: true });
      return null;
    }
  }

  put(key: string, r: VisionCodesResult, metadata: Record<string, string>): void {
    fs.mkdirSync(this.dir, { recursive: true });
    const frames = r.frameIndices.length;
    writeSafetensors(
      this.file(key),
      [
        { name: 'codes', shape: [frames, FRAME_SIDE, FRAME_SIDE], data: () => r.codes, dtype: 'I32' },
        { name: 'frame_indices', shape: [frames], data: () => r.frameIndices, dtype: 'I32' },
      ],
      'I32',
      metadata,
    );
  }
}

/** Deletes `*.tmp-<pid>` files left in `dir` by processes that are no longer running. */
export function removeStaleTemporaries(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  let n = 0;
  for (const name of fs.readdirSync(dir)) {
    const m = /\.tmp-(\d+)$/.exec(name);
    if (!m) continue;
    if (Number(m[1]) !== process.pid && isProcessAlive(Number(m[1]))) continue;
    fs.rmSync(path.join(dir, name), { force: true });
    n++;
  }
  return n;
}


/** Frames per VQGAN call: amortises the per-op overhead without holding many 256x256 activations. */
const FRAMES_PER_CALL = 4;

/**
 * Encodes an image (one frame) or the sampled frames of a video with the VQGAN, streaming frames from
 * ffmpeg so a long video is never in memory. `onFrames(n)` reports progress after each VQGAN call.
 */
export async function encodeVisionFile(
  file: string,
  vqgan: Vqgan,
  sampling: Sampling,
  onFrames?: (encoded: number) => void,
): Promise<VisionCodesResult> {
  const side = LWM_IMAGE_SIZE / vqgan.downsampleFactor;
  if (side !== FRAME_SIDE) {
    throw new InputError(`the VQGAN turns a ${LWM_IMAGE_SIZE}x${LWM_IMAGE_SIZE} frame into ${side}x${side} codes; LWM's token layout needs ${FRAME_SIDE}x${FRAME_SIDE}, use a 16x-downsampling VQGAN`);
  }
  const chunks: Int32Array[] = [];
  const indices: number[] = [];
  const pixels = LWM_IMAGE_SIZE * LWM_IMAGE_SIZE * 3;
  let batch: Float32Array[] = [];
  const flush = async (): Promise<void> => {
    if (batch.length === 0) return;
    const x = new Float32Array(batch.length * pixels);
    batch.forEach((f, i) => x.set(f, i * pixels));
    const input = tf.tensor4d(x, [batch.length, LWM_IMAGE_SIZE, LWM_IMAGE_SIZE, 3]);
    const codes = vqgan.encode(input);
    input.dispose();
    try {
      chunks.push((await codes.data()) as Int32Array);
    } finally {
      codes.dispose();
    }
    onFrames?.(batch.length);
    batch = [];
  };
  if (visionKind(file) === 'image') {
    batch.push((await preprocessImage(file)).data);
    indices.push(0);
  } else {
    for await (const fr of readFrames(file, samplingOptions(sampling))) {
      batch.push(toModelRange(fr.data));
      indices.push(fr.index);
      if (batch.length === FRAMES_PER_CALL) await flush();
    }
  }
  await flush();
  const codes = new Int32Array(indices.length * TOKENS_PER_FRAME);
  let o = 0;
  for (const c of chunks) {
    codes.set(c, o);
    o += c.length;
  }
  return { codes, frameIndices: Int32Array.from(indices) };
}
