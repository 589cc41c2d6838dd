import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError, InputError } from '../../ops/index.js';
import type { Vqgan } from '../../models/index.js';
import { sha256OfFile } from '../checkpoint/files.js';
import { loadVqgan, vqganWeightsHash } from '../checkpoint/vqgan.js';
import { CodesCache, codesCacheKey, encodeVisionFile, visionKind, type Sampling } from '../prepare/codes.js';

/** LWM vision chat's `max_n_frames` (spec 3.6). */
export const CHAT_MAX_FRAMES = 8;

/** Where VQGAN codes of chat media are kept between runs: $LWM_CACHE_DIR or ~/.cache/lwm, then codes/. */
export function defaultCodesCacheDir(): string {
  const root = process.env['LWM_CACHE_DIR'] || path.join(process.env['XDG_CACHE_HOME'] || path.join(os.homedir(), '.cache'), 'lwm');
  return path.join(root, 'codes');
}

export interface MediaEncoderOptions {
  /** VQGAN folder (config.json + model.safetensors). */
  vqgan: string;
  /** Default: defaultCodesCacheDir(). */
  cacheDir?: string;
  /** How frames are taken from a video. Default LWM's: at most 8, spread uniformly. */
  sampling?: Sampling;
}

export interface EncodedMedia {
  file: string;
  kind: 'image' | 'video';
  /** [frames*256] row-major VQ codes. */
  codes: Int32Array;
  frames: number;
  /** True when the codes came from the cache (no ffmpeg, no VQGAN). */
  cached: boolean;
  ms: number;
}

/**
 * Turns image and video files into VQ codes, once: codes are cached on disk under a key of the
 * file's content, the frame sampling and the VQGAN's weights, so asking about the same video again
 * (in this run or a later one) neither decodes it nor runs the VQGAN, which is loaded only when needed.
 */
export class MediaEncoder {
  private vqganModel: Vqgan | null = null;
  private vqganSha: string | null = null;
  private readonly cache: CodesCache;
  readonly sampling: Sampling;
  readonly stats = { encoded: 0, cached: 0, vqganLoaded: false };

  constructor(readonly opts: MediaEncoderOptions) {
    if (!fs.existsSync(path.join(opts.vqgan, 'config.json'))) {
      throw new ConfigError(`${opts.vqgan}: not a VQGAN folder (no config.json); pass --vqgan DIR (e.g. the vqgan/ folder of an LWM-Chat checkpoint)`);
    }
    this.cache = new CodesCache(opts.cacheDir ?? defaultCodesCacheDir());
    this.sampling = opts.sampling ?? { maxFrames: CHAT_MAX_FRAMES };
  }

  async encode(file: string, onFrames?: (n: number) => void): Promise<EncodedMedia> {
    const t0 = performance.now();
    const abs = path.resolve(file);
    if (!fs.existsSync(abs) || !fs.statSync(abs).isFile()) throw new InputError(`${file}: no such image or video file`);
    const kind = visionKind(abs);
    this.vqganSha ??= vqganWeightsHash(this.opts.vqgan);
    const key = codesCacheKey(sha256OfFile(abs), kind, this.sampling, this.vqganSha);
    let r = this.cache.get(key);
    const cached = r !== null;
    if (!r) {
      if (!this.vqganModel) {
        this.vqganModel = loadVqgan(this.opts.vqgan);
        this.stats.vqganLoaded = true;
      }
      r = await encodeVisionFile(abs, this.vqganModel, this.sampling, onFrames);
      this.cache.put(key, r, { source: path.basename(abs) });
      this.stats.encoded++;
    } else {
      this.stats.cached++;
    }
    return { file: abs, kind, codes: r.codes, frames: r.frameIndices.length, cached, ms: performance.now() - t0 };
  }

  dispose(): void {
    this.vqganModel?.dispose();
    this.vqganModel = null;
  }
}
