/**
 * LWM's visual input preprocessing (`Sampler._process_frame` in `lwm/vision_chat.py`, spec 4.3 and
 * checklist item 17): resize so the shorter side is 256 with Pillow's BICUBIC, centre crop 256x256
 * with a banker's-rounded box, then `x / 127.5 - 1` as float32 HWC.
 *
 * The resize is a port of Pillow's `ImagingResample` (libImaging/Resample.c) for 8-bit images:
 * separable bicubic (a = -0.5) whose support is widened by the downscale factor (Pillow's
 * antialiasing), coefficients quantised to 22-bit fixed point, horizontal pass first, each pass
 * rounded and clipped to uint8. Doing it here rather than with sharp/libvips (`kernel: 'cubic'` is the
 * same Catmull-Rom curve, but libvips' reduce uses other support, rounding and fixed point) or
 * ffmpeg's swscale (`flags=bicubic` is B=0,C=0.6 and not antialiased) is what makes the output
 * byte-identical to PIL rather than merely close. sharp is used only to decode PNG/JPEG files.
 */
import * as fs from 'node:fs';
import { InputError } from '../ops/errors.js';

export const LWM_IMAGE_SIZE = 256;

/** A packed RGB image, row-major, 3 bytes a pixel. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Size LWM resizes a `width`x`height` image to: the shorter side becomes `size`, the other `int(size*long/short)`. */
export function resizeTarget(width: number, height: number, size = LWM_IMAGE_SIZE): { width: number; height: number } {
  if (!(width > 0 && height > 0)) throw new InputError(`cannot resize an image of ${width}x${height}`);
  // Python: (256, int(256 * h / w)) if w < h else (int(256 * w / h), 256); float division then truncation.
  return width < height
    ? { width: size, height: Math.trunc((size * height) / width) }
    : { width: Math.trunc((size * width) / height), height: size };
}

/** Python's round(): half to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d < 0.5) return f;
  if (d > 0.5) return f + 1;
  return f % 2 === 0 ? f : f + 1;
}

/** Pillow's crop box for LWM's centre crop, `[left, top, right, bottom]` after Pillow's rounding. */
export function centreCropBox(width: number, height: number, size = LWM_IMAGE_SIZE): [number, number, number, number] {
  return [
    roundHalfEven((width - size) / 2),
    roundHalfEven((height - size) / 2),
    roundHalfEven((width + size) / 2),
    roundHalfEven((height + size) / 2),
  ];
}

// ---- Pillow Resample.c (8 bits per channel) ----

const PRECISION_BITS = 32 - 8 - 2;

function bicubicFilter(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coeffs {
  ksize: number;
  bounds: Int32Array; // [xmin, count] per output pixel
  kk: Int32Array; // fixed-point weights, ksize per output pixel
}

function precomputeCoeffs(inSize: number, in0: number, in1: number, outSize: number): Coeffs {
  const support0 = 2; // bicubic
  const scale = (in1 - in0) / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = support0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = bicubicFilter((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < ksize; x++) {
      let v = x < xmax ? k[x]! : 0;
      if (x < xmax && ww !== 0) v /= ww;
      // normalize_coeffs_8bpc: (int)(v * 2^22 +- 0.5), C truncation towards zero.
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v: number): number {
  if (v >= 255 * 2 ** PRECISION_BITS + 2 ** PRECISION_BITS) return 255; // (1 << PRECISION_BITS << 8)
  if (v <= 0) return 0;
  return Math.floor(v / 2 ** PRECISION_BITS);
}

/** Pillow `Image.resize((outW, outH), Image.BICUBIC)` on an RGB image, bit for bit. */
export function pillowResizeBicubic(img: RgbImage, outW: number, outH: number): RgbImage {
  const { width: inW, height: inH, data } = img;
  if (data.length !== inW * inH * 3) throw new InputError(`RGB buffer has ${data.length} bytes, expected ${inW * inH * 3}`);
  if (outW === inW && outH === inH) return { data: data.slice(), width: inW, height: inH };
  const horiz = precomputeCoeffs(inW, 0, inW, outW);
  const vert = precomputeCoeffs(inH, 0, inH, outH);
  const half = 1 << (PRECISION_BITS - 1);
  let cur = data;
  let curW = inW;
  let curH = inH;
  let rowOffset = 0;
  if (outW !== inW) {
    // Only the rows the vertical pass reads are resampled (same result, less work).
    const yFirst = outH !== inH ? vert.bounds[0]! : 0;
    const yLast = outH !== inH ? vert.bounds[outH * 2 - 2]! + vert.bounds[outH * 2 - 1]! : inH;
    const tmp = new Uint8Array(outW * (yLast - yFirst) * 3);
    for (let y = yFirst; y < yLast; y++) {
      const src = y * inW * 3;
      const dst = (y - yFirst) * outW * 3;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = horiz.bounds[xx * 2]!;
        const n = horiz.bounds[xx * 2 + 1]!;
        const kb = xx * horiz.ksize;
        let s0 = half, s1 = half, s2 = half;
        for (let x = 0; x < n; x++) {
          const w = horiz.kk[kb + x]!;
          const p = src + (x + xmin) * 3;
          s0 += data[p]! * w;
          s1 += data[p + 1]! * w;
          s2 += data[p + 2]! * w;
        }
        tmp[dst + xx * 3] = clip8(s0);
        tmp[dst + xx * 3 + 1] = clip8(s1);
        tmp[dst + xx * 3 + 2] = clip8(s2);
      }
    }
    cur = tmp;
    curW = outW;
    curH = yLast - yFirst;
    rowOffset = yFirst;
  }
  if (outH === inH) return { data: cur, width: curW, height: curH };
  const out = new Uint8Array(outW * outH * 3);
  const rowBytes = curW * 3;
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vert.bounds[yy * 2]! - rowOffset;
    const n = vert.bounds[yy * 2 + 1]!;
    const kb = yy * vert.ksize;
    const dst = yy * rowBytes;
    for (let i = 0; i < rowBytes; i++) {
      let s = half;
      for (let y = 0; y < n; y++) s += cur[(y + ymin) * rowBytes + i]! * vert.kk[kb + y]!;
      out[dst + i] = clip8(s);
    }
  }
  return { data: out, width: outW, height: outH };
}

/** Crops `[left, top, right, bottom)` (must lie inside the image). */
export function cropRgb(img: RgbImage, box: [number, number, number, number]): RgbImage {
  const [l, t, r, b] = box;
  if (l < 0 || t < 0 || r > img.width || b > img.height || r <= l || b <= t) {
    throw new InputError(`crop box ${box.join(',')} is outside the ${img.width}x${img.height} image`);
  }
  const w = r - l;
  const out = new Uint8Array(w * (b - t) * 3);
  for (let y = t; y < b; y++) out.set(img.data.subarray((y * img.width + l) * 3, (y * img.width + r) * 3), (y - t) * w * 3);
  return { data: out, width: w, height: b - t };
}

/** Resize (shorter side to `size`, Pillow bicubic) and centre crop: the uint8 image LWM's VQGAN sees. */
export function resizeAndCrop(img: RgbImage, size = LWM_IMAGE_SIZE): RgbImage {
  const t = resizeTarget(img.width, img.height, size);
  const resized = pillowResizeBicubic(img, t.width, t.height);
  return cropRgb(resized, centreCropBox(t.width, t.height, size));
}

/** `float32(x) / 127.5 - 1`, HWC, in [-1, 1]. */
export function toModelRange(data: Uint8Array): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = Math.fround(data[i]! / 127.5) - 1;
  return out;
}

/** The inverse used on decoder output: clip to [-1, 1], then `uint8((x + 1) * 127.5)` (truncation). */
export function fromModelRange(x: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = Math.min(1, Math.max(-1, x[i]!));
    out[i] = Math.trunc(Math.fround(Math.fround(v + 1) * 127.5));
  }
  return out;
}

export interface PreprocessedFrame {
  /** float32 [size, size, 3] row-major (HWC), values in [-1, 1]. */
  data: Float32Array;
  shape: [number, number, 3];
}

/** Full LWM preprocessing of an RGB image. */
export function preprocessRgb(img: RgbImage, size = LWM_IMAGE_SIZE): PreprocessedFrame {
  return { data: toModelRange(resizeAndCrop(img, size).data), shape: [size, size, 3] };
}

/** Decodes a PNG/JPEG (or anything sharp reads) to packed RGB, dropping alpha like PIL's convert('RGB'). */
export async function readImageRgb(file: string): Promise<RgbImage> {
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch {
    throw new InputError(`${file}: image not found or not readable; check the path`);
  }
  const { default: sharp } = await import('sharp');
  try {
    const { data, info } = await sharp(file).toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new InputError(`decoded to ${info.channels} channels`);
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.length), width: info.width, height: info.height };
  } catch (e) {
    throw new InputError(`${file}: not a readable image (${(e as Error).message}); use a PNG or JPEG file`);
  }
}

/** LWM preprocessing of an image file (`.png`/`.jpg`), as float32 [256, 256, 3] in [-1, 1]. */
export async function preprocessImage(file: string, size = LWM_IMAGE_SIZE): Promise<PreprocessedFrame> {
  return preprocessRgb(await readImageRgb(file), size);
}
