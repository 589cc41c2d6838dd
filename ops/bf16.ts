/** bf16 <-> float32, shared by checkpoint files and bf16 weights held in memory. */

/** bf16 is the top half of a float32, so widening is a shift. */
export function bf16ToF32(src: Uint16Array, dst: Float32Array): void {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
}

/** Round-to-nearest-even, as torch and JAX do; NaN stays a quiet NaN. */
export function f32ToBf16(src: Float32Array, dst: Uint16Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const u = bits[i]!;
    if ((u & 0x7fffffff) > 0x7f800000) {
      dst[i] = ((u >>> 16) & 0x8000) | 0x7fc0;
    } else {
      dst[i] = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
    }
  }
}
