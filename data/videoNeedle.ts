/**
 * Video needle in a haystack (V-NIAH style, peers 5b): a synthetic clip from ffmpeg's lavfi sources
 * with one second replaced by a frame showing a number, and the question whose answer is that number.
 *
 * The needle is drawn as seven-segment digits (SVG polygons rasterized by sharp) rather than with
 * ffmpeg's drawtext, which needs system fonts and is missing from many builds. Nothing is downloaded.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { InputError } from '../ops/errors.js';
import { findFfmpeg } from './ffmpeg.js';

export type NeedleSource = 'testsrc2' | 'color';

/** Asked with the clip; the answer is scored by scoreVideoNeedle. */
export const VIDEO_NEEDLE_QUESTION = 'What number appeared in the video? Answer with the number only.';

export function videoNeedleQuestion(): string {
  return VIDEO_NEEDLE_QUESTION;
}

export interface NeedleVideoOptions {
  /** The MP4 to write (its folder is created); written under a temporary name, then renamed. */
  out: string;
  /** Clip length in seconds. */
  seconds: number;
  /** The second (0-based) whose frames show the number. */
  needleSecond: number;
  /** Digits to show (1 to 10 of them). */
  number: string | number;
  /** Frames per second (integer). Default 1: one frame per second, as V-NIAH samples. */
  fps?: number;
  /** Frame side in pixels (even). Default 256, LWM's frame size, so no resize blurs the digits. */
  size?: number;
  /** Haystack: ffmpeg's moving test pattern (default) or a plain colour. */
  source?: NeedleSource;
  /** Default: libx264 when this ffmpeg has it, else mpeg4. */
  encoder?: 'libx264' | 'mpeg4';
}

export interface NeedleVideo {
  file: string;
  seconds: number;
  needleSecond: number;
  number: string;
  fps: number;
  size: number;
  source: NeedleSource;
  frames: number;
  /** Source frame indices that show the number. */
  needleFrames: number[];
  /** The ffmpeg encoder used: libx264 when the build has it, else mpeg4. */
  encoder: 'libx264' | 'mpeg4';
}

/** Which segments (a..g: top, top right, bottom right, bottom, bottom left, top left, middle) each digit lights. */
const SEGMENTS: Readonly<Record<string, string>> = {
  '0': 'abcdef', '1': 'bc', '2': 'abged', '3': 'abgcd', '4': 'fgbc',
  '5': 'afgcd', '6': 'afgedc', '7': 'abc', '8': 'abcdefg', '9': 'abcdfg',
};

/** testsrc2 draws a running timestamp and frame counter in its top-left corner (up to ~38 px tall at any
 * size): numbers a model could report instead of the needle's, so that strip is generated and cropped off. */
const COUNTER_ROWS = 48;
const HAYSTACK_COLOR = '0x35608f';

export function checkNeedleNumber(number: string | number): string {
  const s = typeof number === 'number' ? (Number.isSafeInteger(number) && number >= 0 ? String(number) : '') : number;
  if (!/^\d{1,10}$/.test(s)) throw new InputError(`video needle number must be 1 to 10 digits (0-9), got ${JSON.stringify(number)}`);
  return s;
}

function hexagon(x0: number, y0: number, x1: number, y1: number): string {
  // A bevelled bar: pointed ends let the segments meet like a real seven-segment display.
  const horizontal = x1 - x0 >= y1 - y0;
  const h = (horizontal ? y1 - y0 : x1 - x0) / 2;
  const pts = horizontal
    ? [[x0, y0 + h], [x0 + h, y0], [x1 - h, y0], [x1, y0 + h], [x1 - h, y1], [x0 + h, y1]]
    : [[x0 + h, y0], [x1, y0 + h], [x1, y1 - h], [x0 + h, y1], [x0, y1 - h], [x0, y0 + h]];
  return `<polygon points="${pts.map(([x, y]) => `${x!.toFixed(2)},${y!.toFixed(2)}`).join(' ')}"/>`;
}

/** The needle frame as SVG: black seven-segment digits centred on white, as large as `size` allows. */
export function needleFrameSvg(number: string | number, size = 256): string {
  const digits = checkNeedleNumber(number);
  checkSize(size);
  const n = digits.length;
  // A digit cell is w x 2w with a gap of w/3; the row fills at most 80% of the width and 60% of the height.
  const w = Math.min((0.8 * size) / (n + (n - 1) / 3), (0.6 * size) / 2);
  const t = w / 4.5;
  const g = t / 6;
  const rowW = n * w + ((n - 1) * w) / 3;
  const left = (size - rowW) / 2;
  const top = (size - 2 * w) / 2;
  const shapes: string[] = [];
  [...digits].forEach((d, i) => {
    const x = left + i * (w + w / 3);
    const [xl, xr, yt, ym, yb] = [x, x + w, top, top + w, top + 2 * w];
    const seg: Record<string, string> = {
      a: hexagon(xl + g, yt, xr - g, yt + t),
      g: hexagon(xl + g, ym - t / 2, xr - g, ym + t / 2),
      d: hexagon(xl + g, yb - t, xr - g, yb),
      f: hexagon(xl, yt + g, xl + t, ym - g),
      b: hexagon(xr - t, yt + g, xr, ym - g),
      e: hexagon(xl, ym + g, xl + t, yb - g),
      c: hexagon(xr - t, ym + g, xr, yb - g),
    };
    for (const s of SEGMENTS[d]!) shapes.push(seg[s]!);
  });
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 ${size} ${size}">` +
    `<rect width="${size}" height="${size}" fill="#ffffff"/><g fill="#000000">${shapes.join('')}</g></svg>`
  );
}

/** The needle frame as an RGB PNG of `size` x `size`. */
export async function needleFramePng(number: string | number, size = 256): Promise<Buffer> {
  return sharp(Buffer.from(needleFrameSvg(number, size))).removeAlpha().png().toBuffer();
}

/**
 * Whether an answer names the number: some maximal run of digits in it (thousands separators
 * removed) equals the number exactly, so "12" does not pass for 123 and "1234" does not pass for 123.
 */
export function scoreVideoNeedle(response: string, number: string | number): boolean {
  const want = checkNeedleNumber(number);
  const runs: string[] = response.replace(/(\d)[,\u202f\u00a0](?=\d{3}(?!\d))/g, '$1').match(/\d+/g) ?? [];
  return runs.includes(want);
}

function checkSize(size: number): void {
  if (!Number.isInteger(size) || size < 16 || size > 4096 || size % 2 !== 0) {
    throw new InputError(`video needle size must be an even integer in [16, 4096] pixels, got ${size}`);
  }
}

function checkOptions(o: NeedleVideoOptions): { fps: number; size: number; source: NeedleSource; number: string } {
  const fps = o.fps ?? 1;
  const size = o.size ?? 256;
  const source = o.source ?? 'testsrc2';
  const number = checkNeedleNumber(o.number);
  if (!Number.isInteger(o.seconds) || o.seconds < 1 || o.seconds > 86400) throw new InputError(`video needle seconds must be an integer in [1, 86400], got ${o.seconds}`);
  if (!Number.isInteger(o.needleSecond) || o.needleSecond < 0 || o.needleSecond >= o.seconds) {
    throw new InputError(`video needle second must be an integer in [0, ${o.seconds - 1}] for a ${o.seconds}-second clip, got ${o.needleSecond}`);
  }
  if (!Number.isInteger(fps) || fps < 1 || fps > 60) throw new InputError(`video needle fps must be an integer in [1, 60], got ${fps}`);
  if (source !== 'testsrc2' && source !== 'color') throw new InputError(`video needle source must be 'testsrc2' or 'color', got ${JSON.stringify(source)}`);
  checkSize(size);
  return { fps, size, source, number };
}

function ffmpegBinary(): string {
  const found = findFfmpeg();
  if (!found) throw new InputError('ffmpeg not found: run `npm install` (it ships @ffmpeg-installer/ffmpeg), or set LWM_FFMPEG to an ffmpeg binary');
  return found.path;
}

function runFfmpeg(bin: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      if (stderr.length < 65536) stderr += s;
    });
    child.on('error', (e) => reject(new InputError(`cannot run ffmpeg (${e.message}); set LWM_FFMPEG to a working ffmpeg binary`)));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const encoders = new Map<string, Promise<'libx264' | 'mpeg4'>>();

/** H.264 when this ffmpeg can write it (the npm-bundled builds can), else MPEG-4 part 2, which every build has. */
export function needleVideoEncoder(): Promise<'libx264' | 'mpeg4'> {
  const bin = ffmpegBinary();
  let p = encoders.get(bin);
  if (!p) {
    p = runFfmpeg(bin, ['-hide_banner', '-encoders']).then((r) => (/^\s*V\S*\s+libx264\s/m.test(r.stdout) ? 'libx264' : 'mpeg4'));
    encoders.set(bin, p);
  }
  return p;
}

function prepareOut(out: string): string {
  const file = path.resolve(out);
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.accessSync(path.dirname(file), fs.constants.W_OK);
  } catch (e) {
    throw new InputError(`cannot write ${out} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); choose a writable output path`);
  }
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) throw new InputError(`${out} is a directory; give a file name such as ${path.join(out, 'needle.mp4')}`);
  return file;
}

/** Writes the clip: `seconds * fps` frames of the haystack, with the frames of `needleSecond` replaced by the number. */
export async function makeNeedleVideo(opts: NeedleVideoOptions): Promise<NeedleVideo> {
  const { fps, size, source, number } = checkOptions(opts);
  const file = prepareOut(opts.out);
  const bin = ffmpegBinary();
  const encoder = opts.encoder ?? (await needleVideoEncoder());
  if (encoder !== 'libx264' && encoder !== 'mpeg4') throw new InputError(`video needle encoder must be 'libx264' or 'mpeg4', got ${JSON.stringify(encoder)}`);
  const frames = opts.seconds * fps;
  const tmp = `${file}.tmp-${process.pid}`;
  const png = `${file}.tmp-${process.pid}.png`;
  const haystack =
    source === 'testsrc2'
      ? `testsrc2=s=${size}x${size + COUNTER_ROWS}:r=${fps}:d=${opts.seconds}`
      : `color=c=${HAYSTACK_COLOR}:s=${size}x${size}:r=${fps}:d=${opts.seconds}`;
  const crop = source === 'testsrc2' ? `crop=${size}:${size}:0:${COUNTER_ROWS},` : '';
  // Half a frame of slack either side: the enable window then holds exactly the needle second's frames.
  const from = opts.needleSecond - 0.5 / fps;
  const to = opts.needleSecond + 1 - 0.5 / fps;
  const graph = `[0:v]${crop}format=yuv420p[h];[1:v]format=yuv420p[n];[h][n]overlay=0:0:shortest=1:enable='between(t,${from},${to})'[v]`;
  const codec = encoder === 'libx264' ? ['-c:v', 'libx264', '-preset', 'medium', '-crf', '12'] : ['-c:v', 'mpeg4', '-q:v', '2'];
  try {
    fs.writeFileSync(png, await needleFramePng(number, size));
    const args = [
      '-hide_banner', '-nostdin', '-loglevel', 'error', '-y',
      '-f', 'lavfi', '-i', haystack,
      '-f', 'image2', '-pattern_type', 'none', '-framerate', String(fps), '-loop', '1', '-i', png,
      '-filter_complex', graph, '-map', '[v]', '-frames:v', String(frames), '-r', String(fps),
      ...codec, '-pix_fmt', 'yuv420p', '-map_metadata', '-1', '-fflags', '+bitexact', '-f', 'mp4', tmp,
    ];
    const r = await runFfmpeg(bin, args);
    if (r.code !== 0 || !fs.existsSync(tmp)) {
      const why = r.stderr.trim().split(/\r?\n/).pop()?.slice(0, 200) ?? `exit code ${r.code}`;
      throw new InputError(`ffmpeg could not write the needle video ${opts.out} (${why}); check the output path and LWM_FFMPEG`);
    }
    fs.renameSync(tmp, file);
  } finally {
    fs.rmSync(png, { force: true });
    fs.rmSync(tmp, { force: true });
  }
  const needleFrames = Array.from({ length: fps }, (_, i) => opts.needleSecond * fps + i);
  return { file, seconds: opts.seconds, needleSecond: opts.needleSecond, number, fps, size, source, frames, needleFrames, encoder };
}
