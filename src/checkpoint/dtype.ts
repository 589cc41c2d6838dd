/** Conversions between the storage dtypes of checkpoints and the float32 the model computes in. */

export type StorageDtype = 'F32' | 'F16' | 'BF16';

export const BYTES_PER_ELEMENT: Readonly<Record<StorageDtype, number>> = { F32: 4, F16: 2, BF16: 2 };

export { bf16ToF32, f32ToBf16 } from '../../ops/bf16.js';

/** IEEE binary16 with round-to-nearest-even; overflow becomes infinity, NaN stays NaN. */
export function f32ToF16(src: Float32Array, dst: Uint16Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const u = bits[i]!;
    const sign = (u >>> 16) & 0x8000;
    const a = u & 0x7fffffff;
    if (a > 0x7f800000) dst[i] = sign | 0x7e00;
    else if (a >= 0x477ff000) dst[i] = sign | 0x7c00; // >= 65520 rounds past the largest half
    else if (a >= 0x38800000) {
      const m = a - 0x38000000; // rebias the exponent from 127 to 15
      dst[i] = sign | ((m + 0x0fff + ((m >>> 13) & 1)) >>> 13);
    } else {
      const v = Math.abs(src[i]!) * 2 ** 24; // exact: a subnormal half counts units of 2^-24
      let r = Math.round(v);
      if (r - v === 0.5 && r % 2 === 1) r -= 1;
      dst[i] = sign | r;
    }
  }
}

const F16_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) t[h] = sign * frac * 2 ** -24;
    else if (exp === 31) t[h] = frac ? NaN : sign * Infinity;
    else t[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return t;
})();

export function f16ToF32(src: Uint16Array, dst: Float32Array): void {
  for (let i = 0; i < src.length; i++) dst[i] = F16_TABLE[src[i]!]!;
}
