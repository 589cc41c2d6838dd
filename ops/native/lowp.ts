// Linear layers whose weights stay bf16 (or int8 with one scale per output row) in memory: the
// native products of src/gemm_lowp*.cc, plus the plain-JS conversions that make such weights.
// A 7B model's linear weights take 13.5 GB as bf16 and 6.7 GB as int8 against 27 GB as fp32.
import { loadAddon, type NativeAddon } from './addon.js';
import { bf16ToF32, f32ToBf16 } from '../bf16.js';

/** The low-precision-weight products of the addon (src/gemm_lowp_napi.cc). */
export interface LowpAddon {
  /** y[m, n] = x[m, k] @ w^T, w given as [n, k] bf16 bit patterns (row-major, Hugging Face [out, in] layout). fp32 accumulate. */
  matmulBf16(x: Float32Array, w: Uint16Array, m: number, n: number, k: number): Float32Array;
  /** y[m, n] = x[m, k] @ (scales[j] * q[j, :])^T for int8 q [n, k] with one fp32 scale per output row j. */
  matmulInt8(x: Float32Array, q: Int8Array, scales: Float32Array, m: number, n: number, k: number): Float32Array;
}

/** Which kernels the products use now (they follow the addon's ISA, see setIsa). */
export interface LowpInfo {
  isa: string;
  /** bf16 decode products use AVX512_BF16 dot products (an exact 3-way bf16 split of x). */
  bf16Dot: boolean;
  /** Up to this many rows of x the weights are streamed; above it panels are converted for the fp32 GEMM kernel. */
  dotMaxM: number;
}

/** The products, or null when there is no addon or it lacks them (an older build). */
export function lowpAddon(addon: NativeAddon | null): LowpAddon | null {
  if (!addon) return null;
  const a = addon as unknown as Partial<LowpAddon>;
  return typeof a.matmulBf16 === 'function' && typeof a.matmulInt8 === 'function' ? (a as LowpAddon) : null;
}

/** The kernels in use, or null without them. */
export function lowpInfo(addon: NativeAddon | null): LowpInfo | null {
  const f = addon?.['lowpInfo'];
  return typeof f === 'function' ? (f as () => LowpInfo)() : null;
}

/** fp32 -> bf16 bit patterns, rounded to nearest even (NaN stays a quiet NaN). */
export function toBf16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  f32ToBf16(x, out);
  return out;
}

/** bf16 bit patterns -> fp32 (exact). */
export function fromBf16(b: Uint16Array): Float32Array {
  const out = new Float32Array(b.length);
  bf16ToF32(b, out);
  return out;
}

type Quantize = (w: Float32Array | Uint16Array, n: number, k: number) => [Int8Array, Float32Array];
let quantizer: Quantize | null | undefined;

/** The addon's quantizer (the same bytes as the loop below, on every core), or null. */
function nativeQuantize(): Quantize | null {
  if (quantizer === undefined) {
    const f = loadAddon()?.['quantizeInt8'];
    quantizer = typeof f === 'function' ? (f as Quantize) : null;
  }
  return quantizer;
}

/**
 * Symmetric int8 quantization of w [n, k] (float32, or bf16 bits) with one scale per row: scales[j] = max|w[j, :]| / 127,
 * q = round(w / scale) clamped to [-127, 127] (all-zero rows get scale 0 and q 0).
 */
export function quantizeInt8(w: Float32Array | Uint16Array, n: number, k: number): { q: Int8Array; scales: Float32Array } {
  if (w.length !== n * k) throw new Error(`quantizeInt8: w has ${w.length} elements, expected n * k = ${n * k}`);
  const nat = nativeQuantize();
  if (nat) {
    const [q, scales] = nat(w, n, k);
    return { q, scales };
  }
  return quantizeInt8Js(w instanceof Uint16Array ? fromBf16(w) : w, n, k);
}

/** The plain-JS quantizer (no addon; tests compare the two). */
export function quantizeInt8Js(w: Float32Array, n: number, k: number): { q: Int8Array; scales: Float32Array } {
  const q = new Int8Array(n * k);
  const scales = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    let amax = 0;
    for (let p = 0; p < k; p++) amax = Math.max(amax, Math.abs(w[j * k + p]!));
    const s = Math.fround(amax / 127);
    scales[j] = s;
    if (s === 0) continue;
    for (let p = 0; p < k; p++) q[j * k + p] = Math.max(-127, Math.min(127, Math.round(w[j * k + p]! / s)));
  }
  return { q, scales };
}

/** The fp32 weights an int8 [n, k] with per-row scales stands for: fround(scales[j] * q[j, p]). */
export function dequantizeInt8(q: Int8Array, scales: Float32Array, n: number, k: number): Float32Array {
  const out = new Float32Array(n * k);
  for (let j = 0; j < n; j++) {
    const s = scales[j]!;
    for (let p = 0; p < k; p++) out[j * k + p] = s * q[j * k + p]!;
  }
  return out;
}
