/**
 * Video probing and frame streaming through an ffmpeg child process (found by `findFfmpeg`).
 *
 * Frames are decoded at their native size as rgb24 (like decord, which LWM's vision chat uses),
 * then resized/cropped in JS with the Pillow-exact code of preprocess.ts. Only one frame is held at
 * a time; ffmpeg's own `select` filter drops the frames that are not wanted when the list is short.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import { findFfmpeg } from './ffmpeg.js';
import { resizeAndCrop, LWM_IMAGE_SIZE } from './preprocess.js';
import { InputError } from '../ops/errors.js';

export interface VideoInfo {
  /** Seconds, from the container header (0 when unknown). */
  duration: number;
  /** Frames per second of the video stream as ffmpeg reports it (fps, else tbr; 0 when unknown). */
  fps: number;
  /** Exact number of frames: the video stream's packets counted by ffmpeg (`-c copy -f null`). */
  frameCount: number;
  width: number;
  height: number;
  hasVideo: boolean;
  /** The codec name ffmpeg printed, e.g. h264. */
  codec: string;
}

export interface ReadFramesOptions {
  /** Sample at this rate: source frames `floor(k * sourceFps / fps)` for k = 0, 1, … (deduplicated). */
  fps?: number;
  /** LWM's choice: all frames if there are at most this many, else `int(linspace(0, n-1, maxFrames))`. */
  maxFrames?: number;
  /** Output side after LWM's resize + centre crop (default 256); 0 keeps the native size uncropped. */
  size?: number;
}

export interface VideoFrame {
  /** Source frame index (0-based, decode order = presentation order for these streams). */
  index: number;
  /** Position among the sampled frames. */
  sample: number;
  width: number;
  height: number;
  /** Packed RGB, height*width*3 bytes. */
  data: Uint8Array;
}

const running = new Set<ChildProcess>();

/** ffmpeg processes started by this module that have not exited yet (tests check this is 0). */
export function runningFfmpegCount(): number {
  return running.size;
}

function ffmpegPath(): string {
  const found = findFfmpeg();
  if (!found) {
    throw new InputError(
      'ffmpeg not found: run `npm install` (it ships @ffmpeg-installer/ffmpeg), or set LWM_FFMPEG to an ffmpeg binary',
    );
  }
  return found.path;
}

function checkFile(file: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new InputError(`${file}: no such file; check the path`);
  }
  if (st.isDirectory()) throw new InputError(`${file}: is a directory, not a video file; pass a video file`);
  if (st.size === 0) throw new InputError(`${file}: file is empty (0 bytes); re-download or re-encode the video`);
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch {
    throw new InputError(`${file}: not readable (permission denied); fix its permissions`);
  }
}

function run(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(ffmpegPath(), args, { stdio: ['ignore', 'ignore', 'pipe'] });
    running.add(child);
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => {
      if (stderr.length < 1 << 20) stderr += s;
    });
    child.on('error', (e) => {
      running.delete(child);
      reject(new InputError(`cannot run ffmpeg (${e.message}); set LWM_FFMPEG to a working ffmpeg binary`));
    });
    child.on('close', (code) => {
      running.delete(child);
      resolve({ code, stderr });
    });
  });
}

function lastErrorLine(stderr: string, file: string): string {
  const lines = stderr
    .split(/[\r\n]+/)
    .map((l) => l.trim())
    .filter((l) => l && !/^(frame=|video:|Stream mapping|Press \[q\])/.test(l));
  const base = file.split('/').pop() ?? file;
  const err = [...lines].reverse().find((l) => /error|invalid|failed|not found|unknown|End of file|matches no/i.test(l));
  return (err ?? lines[lines.length - 1] ?? 'no output').replace(file, base).slice(0, 200);
}

/** Reads container/stream facts and counts frames, with ffmpeg alone (no ffprobe needed). */
export async function probeVideo(file: string): Promise<VideoInfo> {
  checkFile(file);
  const { code, stderr } = await run(['-hide_banner', '-nostdin', '-i', file, '-map', '0:v:0?', '-c', 'copy', '-f', 'null', '-']);
  const inputSeen = /^Input #0/m.test(stderr);
  const videoLine = stderr.split(/\r?\n/).find((l) => /^\s*Stream #0:\d+.*: Video: /.test(l));
  if (!inputSeen) {
    throw new InputError(`${file}: not a video ffmpeg can read (${lastErrorLine(stderr, file)}); check the file is a video and not corrupt`);
  }
  if (!videoLine) throw new InputError(`${file}: has no video stream (audio-only or data file); pass a file with video`);
  const dur = /Duration: (\d+):(\d+):(\d+(?:\.\d+)?)/.exec(stderr);
  const duration = dur ? Number(dur[1]) * 3600 + Number(dur[2]) * 60 + Number(dur[3]) : 0;
  const size = /, (\d+)x(\d+)(?=[\s,])/.exec(videoLine);
  const rate = (re: RegExp): number => {
    const m = re.exec(videoLine);
    if (!m) return 0;
    return Number(m[1]) * (m[2] === 'k' ? 1000 : 1);
  };
  const fps = rate(/, ([\d.]+)(k?) fps/) || rate(/, ([\d.]+)(k?) tbr/);
  const codec = /: Video: (\w+)/.exec(videoLine)?.[1] ?? '';
  const counts = [...stderr.matchAll(/frame=\s*(\d+)/g)];
  if (code !== 0 || counts.length === 0) {
    throw new InputError(`${file}: video stream is unreadable (${lastErrorLine(stderr, file)}); re-encode it, e.g. ffmpeg -i in -c:v libx264 out.mp4`);
  }
  const frameCount = Number(counts[counts.length - 1]![1]);
  return {
    duration,
    fps,
    frameCount,
    width: size ? Number(size[1]) : 0,
    height: size ? Number(size[2]) : 0,
    hasVideo: true,
    codec,
  };
}

/** `np.linspace(0, n - 1, num).astype(int)` exactly (float64 steps, last point forced to n - 1, truncation). */
export function linspaceIndices(n: number, num: number): number[] {
  if (num <= 0) return [];
  if (num === 1) return [0];
  const stop = n - 1;
  const step = stop / (num - 1);
  const out: number[] = [];
  for (let i = 0; i < num; i++) out.push(Math.trunc(i === num - 1 ? stop : step === 0 ? (i / (num - 1)) * stop : i * step));
  return out;
}

/**
 * LWM vision chat's frame choice (`vision_chat.py`, spec 3.6): every frame when the video has at most
 * `maxFrames`, else `np.linspace(0, n - 1, maxFrames).astype(int)`.
 */
export function lwmFrameIndices(frameCount: number, maxFrames: number): number[] {
  if (!Number.isInteger(maxFrames) || maxFrames < 1) throw new InputError(`maxFrames must be a positive integer, got ${maxFrames}`);
  if (frameCount <= maxFrames) return Array.from({ length: frameCount }, (_, i) => i);
  return linspaceIndices(frameCount, maxFrames);
}

/** Source frames for sampling at `fps`: `floor(k * sourceFps / fps + 1e-9)` for k = 0, 1, … below `frameCount`, deduplicated. */
export function fpsFrameIndices(frameCount: number, sourceFps: number, fps: number): number[] {
  if (!(fps > 0)) throw new InputError(`fps must be positive, got ${fps}`);
  if (!(sourceFps > 0)) throw new InputError('the video reports no frame rate; use maxFrames instead of fps');
  const out: number[] = [];
  for (let k = 0; ; k++) {
    const i = Math.floor((k * sourceFps) / fps + 1e-9);
    if (i >= frameCount) break;
    if (out.length === 0 || out[out.length - 1] !== i) out.push(i);
  }
  return out;
}

/** The source indices `readFrames` will return for these options. */
export function sampleIndices(info: VideoInfo, opts: ReadFramesOptions): number[] {
  if (opts.fps !== undefined && opts.maxFrames !== undefined) throw new InputError('pass either fps or maxFrames, not both');
  if (opts.fps !== undefined) return fpsFrameIndices(info.frameCount, info.fps, opts.fps);
  if (opts.maxFrames !== undefined) return lwmFrameIndices(info.frameCount, opts.maxFrames);
  return Array.from({ length: info.frameCount }, (_, i) => i);
}

/**
 * Streams the sampled frames as RGB (resized + centre-cropped to `size` like LWM, default 256). The
 * ffmpeg child is killed when iteration ends early, on errors, and when the consumer breaks out.
 */
export async function* readFrames(file: string, opts: ReadFramesOptions = {}): AsyncGenerator<VideoFrame, void, undefined> {
  const info = await probeVideo(file);
  if (info.frameCount === 0) throw new InputError(`${file}: video has no frames (zero length); pass a non-empty video`);
  if (!(info.width > 0 && info.height > 0)) throw new InputError(`${file}: video size unknown; re-encode it`);
  const indices = sampleIndices(info, opts);
  const size = opts.size ?? LWM_IMAGE_SIZE;
  const wanted = new Set(indices);
  const last = indices[indices.length - 1];
  if (last === undefined) return;
  // With a short list ffmpeg drops unwanted frames itself; otherwise everything up to the last one is piped.
  const useSelect = indices.length <= 256;
  const vf = useSelect ? ['-vf', `select='${indices.map((i) => `eq(n,${i})`).join('+')}'`] : [];
  const args = [
    '-hide_banner', '-nostdin', '-loglevel', 'error', '-noautorotate', '-i', file,
    '-map', '0:v:0', ...vf, '-vsync', '0', '-frames:v', String(useSelect ? indices.length : last + 1),
    '-pix_fmt', 'rgb24', '-f', 'rawvideo', 'pipe:1',
  ];
  const child = spawn(ffmpegPath(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => {
    if (stderr.length < 65536) stderr += s;
  });
  const exited = new Promise<number | null>((resolve) => {
    child.on('close', (code) => {
      running.delete(child);
      resolve(code);
    });
  });
  let spawnError: Error | null = null;
  child.on('error', (e) => {
    spawnError = e;
  });
  const frameBytes = info.width * info.height * 3;
  const buf = new Uint8Array(frameBytes);
  let filled = 0;
  let decoded = 0; // frames received from ffmpeg
  let emitted = 0;
  try {
    for await (const chunk of child.stdout! as AsyncIterable<Buffer>) {
      let off = 0;
      while (off < chunk.length) {
        const n = Math.min(frameBytes - filled, chunk.length - off);
        buf.set(chunk.subarray(off, off + n), filled);
        filled += n;
        off += n;
        if (filled < frameBytes) continue;
        filled = 0;
        const index = useSelect ? indices[decoded]! : decoded;
        decoded++;
        if (!useSelect && !wanted.has(index)) continue;
        const raw = { data: buf, width: info.width, height: info.height };
        const img = size > 0 ? resizeAndCrop(raw, size) : { ...raw, data: buf.slice() };
        yield { index, sample: emitted++, width: img.width, height: img.height, data: img.data };
        if (emitted === indices.length) return;
      }
    }
    const code = await exited;
    if (spawnError) throw new InputError(`cannot run ffmpeg (${(spawnError as Error).message}); set LWM_FFMPEG to a working ffmpeg binary`);
    if (emitted < indices.length) {
      const why = code !== 0 ? lastErrorLine(stderr, file) : `got ${emitted} of ${indices.length} frames`;
      throw new InputError(`${file}: video is unreadable or truncated (${why}); re-encode it, e.g. ffmpeg -i in -c:v libx264 out.mp4`);
    }
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  }
}
