import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { ConfigError, InputError } from '../../ops/errors.js';
import { readFrames } from '../../data/frames.js';
import { fromModelRange, LWM_IMAGE_SIZE, preprocessImage } from '../../data/preprocess.js';
import { FRAME_SIDE, TOKENS_PER_FRAME } from '../../data/visionTokens.js';
import { loadVqgan, vqganWeightsHash } from '../checkpoint/vqgan.js';
import { CodesCache, codesCacheKey, samplingOptions, visionKind, type Sampling } from './codes.js';
import { sha256OfFile } from '../checkpoint/files.js';

export interface PreviewOptions {
  /** Vision files in manifest order; frames are taken from the first ones. */
  files: readonly string[];
  vqgan: string;
  sampling: Sampling;
  cacheDir: string;
  /** Frames in the grid (default 8). */
  frames?: number;
}

/**
 * A PNG grid: the first sampled frames (top row, after LWM's resize and crop) over their VQGAN
 * reconstructions from the cached codes (bottom row), to eyeball what the model will see.
 */
export async function writePreview(pngFile: string, o: PreviewOptions): Promise<number> {
  if (path.extname(pngFile).toLowerCase() !== '.png') throw new ConfigError(`--preview ${pngFile}: give a file name ending in .png`);
  const want = o.frames ?? 8;
  const cache = new CodesCache(o.cacheDir);
  const vqganSha = vqganWeightsHash(o.vqgan);
  const originals: Uint8Array[] = [];
  const codes: Int32Array[] = [];
  for (const abs of o.files) {
    if (originals.length >= want) break;
    const kind = visionKind(abs);
    const cached = cache.get(codesCacheKey(sha256OfFile(abs), kind, o.sampling, vqganSha));
    if (!cached) throw new InputError(`${abs}: its codes are not in the cache ${o.cacheDir}; run lwm prepare without --preview first`);
    let k = 0;
    const take = (rgb: Uint8Array): void => {
      originals.push(rgb);
      codes.push(cached.codes.subarray(k * TOKENS_PER_FRAME, (k + 1) * TOKENS_PER_FRAME));
      k++;
    };
    if (kind === 'image') take(fromModelRange((await preprocessImage(abs)).data));
    else {
      for await (const fr of readFrames(abs, samplingOptions(o.sampling))) {
        take(fr.data);
        if (originals.length >= want) break;
      }
    }
  }
  const n = originals.length;
  if (n === 0) throw new InputError('--preview: the dataset has no images or videos to show');
  const vqgan = loadVqgan(o.vqgan);
  let recon: Uint8Array;
  try {
    const flat = new Int32Array(n * TOKENS_PER_FRAME);
    codes.forEach((c, i) => flat.set(c, i * TOKENS_PER_FRAME));
    const c = tf.tensor3d(flat, [n, FRAME_SIDE, FRAME_SIDE], 'int32');
    const y = vqgan.decode(c);
    c.dispose();
    recon = fromModelRange((await y.data()) as Float32Array);
    y.dispose();
  } finally {
    vqgan.dispose();
  }
  const S = LWM_IMAGE_SIZE;
  const W = n * S;
  const grid = new Uint8Array(2 * S * W * 3);
  for (let i = 0; i < n; i++) {
    for (let y = 0; y < S; y++) {
      grid.set(originals[i]!.subarray(y * S * 3, (y + 1) * S * 3), (y * W + i * S) * 3);
      grid.set(recon.subarray((i * S * S + y * S) * 3, (i * S * S + (y + 1) * S) * 3), ((S + y) * W + i * S) * 3);
    }
  }
  const { default: sharp } = await import('sharp');
  const tmp = `${pngFile}.tmp-${process.pid}.png`;
  try {
    await sharp(Buffer.from(grid.buffer), { raw: { width: W, height: 2 * S, channels: 3 } }).png().toFile(tmp);
    fs.renameSync(tmp, pngFile);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new InputError(`--preview ${pngFile}: cannot write it (${(e as Error).message.split('\n')[0]})`);
  }
  return n;
}
