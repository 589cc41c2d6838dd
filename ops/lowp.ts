import * as tf from '@tensorflow/tfjs';
import { ConfigError, InputError } from './errors.js';
import { loadAddon } from './native/addon.js';
import { lowpAddon, quantizeInt8, type LowpAddon } from './native/lowp.js';
import { bf16ToF32, f32ToBf16 } from './bf16.js';

/**
 * Linear-layer weights kept in 16 or 8 bits, never widened to a whole fp32 copy: a 7B model is
 * 13.5 GB in bf16 and 6.7 GB in int8 instead of 27 GB. Products run with fp32 activations and fp32
 * accumulation (a native kernel streams the weights; a plain-JS fallback converts one row at a time).
 * Inference only: there is no gradient.
 */
export type LowpDtype = 'bf16' | 'int8';

export class LowpWeight {
  private constructor(
    readonly dtype: LowpDtype,
    /** [out, in], the Hugging Face layout of a linear weight. */
    readonly shape: readonly [number, number],
    /** bf16: the bit patterns, out * in. */
    readonly bits: Uint16Array | null,
    /** int8: the values, out * in, and one scale per output row. */
    readonly q: Int8Array | null,
    readonly scales: Float32Array | null,
  ) {}

  static fromBf16(bits: Uint16Array, shape: readonly [number, number]): LowpWeight {
    if (bits.length !== shape[0] * shape[1]) throw new InputError(`bf16 weight: ${bits.length} values for shape [${shape.join(', ')}]`);
    return new LowpWeight('bf16', shape, bits, null, null);
  }

  /** int8 with a per-row absmax scale straight from bf16 bits (no float32 copy of the matrix). */
  static int8FromBf16(bits: Uint16Array, shape: readonly [number, number]): LowpWeight {
    if (bits.length !== shape[0] * shape[1]) throw new InputError(`int8 weight: ${bits.length} values for shape [${shape.join(', ')}]`);
    const { q, scales } = quantizeInt8(bits, shape[0], shape[1]);
    return new LowpWeight('int8', shape, null, q, scales);
  }

  /** Rounds to bf16 (nearest even) or to int8 with a per-row absmax scale. */
  static fromFloat32(w: Float32Array, shape: readonly [number, number], dtype: LowpDtype): LowpWeight {
    const [n, k] = shape;
    if (w.length !== n * k) throw new InputError(`${dtype} weight: ${w.length} values for shape [${shape.join(', ')}]`);
    if (dtype === 'bf16') {
      const bits = new Uint16Array(w.length);
      f32ToBf16(w, bits);
      return new LowpWeight('bf16', shape, bits, null, null);
    }
    if (dtype !== 'int8') throw new ConfigError(`weight dtype must be bf16 or int8, got ${JSON.stringify(dtype)}`);
    const { q, scales } = quantizeInt8(w, n, k);
    return new LowpWeight('int8', shape, null, q, scales);
  }

  get size(): number {
    return this.shape[0] * this.shape[1];
  }

  /** Bytes held (what the weight costs in memory). */
  get bytes(): number {
    return this.dtype === 'bf16' ? 2 * this.size : this.size + 4 * this.shape[0];
  }

  /** Row j widened to fp32 into `out` (length in). */
  row(j: number, out: Float32Array): Float32Array {
    const k = this.shape[1];
    if (this.bits) {
      bf16ToF32(this.bits.subarray(j * k, (j + 1) * k), out);
    } else {
      const s = this.scales![j]!;
      for (let i = 0; i < k; i++) out[i] = this.q![j * k + i]! * s;
    }
    return out;
  }

  /** The whole weight widened (tests and tools; a model never needs it). */
  toFloat32(): Float32Array {
    const [n, k] = this.shape;
    const out = new Float32Array(n * k);
    for (let j = 0; j < n; j++) this.row(j, out.subarray(j * k, (j + 1) * k));
    return out;
  }

  /** Nothing to free (plain typed arrays); present so a ParamStore disposes every weight alike. */
  dispose(): void {}
}

let kernels: LowpAddon | null | undefined;

function native(): LowpAddon | null {
  if (kernels === undefined) kernels = lowpAddon(loadAddon());
  return kernels;
}

/** Whether products run natively (false: the plain-JS fallback, correct but slow). */
export function lowpNative(): boolean {
  return native() !== null;
}

/** x[m, in] @ w^T -> [m, out] in fp32. */
export function matMulLowp(x: tf.Tensor2D, w: LowpWeight): tf.Tensor2D {
  const [m, k] = x.shape;
  const [n, kw] = w.shape;
  if (k !== kw) throw new InputError(`matMulLowp: input has ${k} features but the weight [${n}, ${kw}] expects ${kw}`);
  const xd = (x.dtype === 'float32' ? x : tf.cast(x, 'float32')).dataSync() as Float32Array;
  const nat = native();
  let y: Float32Array;
  if (nat) y = w.bits ? nat.matmulBf16(xd, w.bits, m, n, k) : nat.matmulInt8(xd, w.q!, w.scales!, m, n, k);
  else {
    y = new Float32Array(m * n);
    const row = new Float32Array(k);
    for (let j = 0; j < n; j++) {
      w.row(j, row);
      for (let r = 0; r < m; r++) {
        let s = 0;
        for (let i = 0, o = r * k; i < k; i++) s += xd[o + i]! * row[i]!;
        y[r * n + j] = s;
      }
    }
  }
  return tf.tensor2d(y, [m, n], 'float32');
}
