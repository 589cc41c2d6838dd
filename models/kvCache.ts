import * as tf from '@tensorflow/tfjs';
import { InputError } from '../ops/errors.js';
import { f32ToBf16 } from '../ops/bf16.js';
import { attentionBf16Kv, widenRows, type Bf16Kv } from '../ops/kvAttention.js';

/** Element type of a KV cache: float32, or bf16 (half the memory; values rounded to 8 mantissa bits). */
export type KvDtype = 'f32' | 'bf16';

/** Capacity grows by half again each time (rounded to this), so appends are amortised O(1). */
export const CAPACITY_STEP = 256;

/**
 * The cpu backend keeps a tensor's values in a plain typed array, which the cache can write into:
 * appending one token then costs one token's copy instead of a copy of the whole cache (for a
 * 32K context, 2 GB per generated token). Other backends (tfjs-node) get concatenation.
 */
function backendValues(t: tf.Tensor): Float32Array | null {
  if (tf.getBackend() !== 'cpu') return null;
  const data = (tf.backend() as unknown as { data?: { get(id: object): { values?: unknown } | undefined } }).data;
  const values = data?.get(t.dataId)?.values;
  return values instanceof Float32Array && values.length === t.size ? values : null;
}

/**
 * Keys and values of every layer for the tokens seen so far, so each decode step only runs the
 * new token. Owns its tensors; `dispose()` frees them. Layout per layer: [B, S, Hkv, D] after RoPE.
 *
 * `capacity` preallocates that many tokens at the first append (the context a plan was made
 * for), so a long chat never pays a grow-and-copy. With dtype 'bf16' keys and values live in
 * plain Uint16Arrays outside tfjs and the model attends over them with attend() (natively
 * widened as they are read); with 'f32' they are tensors, as follows.
 *
 * On the cpu backend the tensors handed to attention are buffers of `capacity >= length` rows
 * written in place; rows past the current tokens are never visible to a query because attention
 * is causal with queryOffset = length. Elsewhere they are exactly `length` rows.
 */
export class KVCache {
  private keys: (tf.Tensor4D | null)[];
  private values: (tf.Tensor4D | null)[];
  /** [B, length] 1 = real token, 0 = padding; null while every cached token is real. */
  private mask: tf.Tensor2D | null = null;
  /** Tokens cached (same for every layer once a forward pass completes). */
  length = 0;
  /** Rows of the in-place buffers (0 in concatenation mode). */
  private capacity = 0;
  readonly inPlace: boolean;
  readonly dtype: KvDtype;
  private readonly reserve: number;
  /** bf16 mode: per layer [B, capacity, Hkv, D] bits of keys and values. */
  private bits: (Bf16Kv | null)[];

  constructor(
    readonly numLayers: number,
    opts: { inPlace?: boolean; dtype?: KvDtype; capacity?: number } = {},
  ) {
    this.keys = new Array(numLayers).fill(null);
    this.values = new Array(numLayers).fill(null);
    this.bits = new Array(numLayers).fill(null);
    this.dtype = opts.dtype ?? 'f32';
    if (this.dtype !== 'f32' && this.dtype !== 'bf16') throw new InputError(`KV cache dtype must be f32 or bf16, got ${JSON.stringify(this.dtype)}`);
    if (opts.capacity !== undefined && !(Number.isInteger(opts.capacity) && opts.capacity >= 0)) throw new InputError(`KVCache capacity must be a whole number of tokens, got ${opts.capacity}`);
    this.reserve = opts.capacity ?? 0;
    this.inPlace = this.dtype === 'bf16' || (opts.inPlace ?? tf.getBackend() === 'cpu');
  }

  /** Rows allocated per layer (tokens it holds without growing). */
  get allocated(): number {
    return this.capacity;
  }

  /** Bytes of keys and values allocated. */
  get bytes(): number {
    let n = 0;
    for (let i = 0; i < this.numLayers; i++) {
      const b = this.bits[i];
      if (b) n += b.k.byteLength + b.v.byteLength;
      else for (const t of [this.keys[i], this.values[i]]) n += t ? t.size * 4 : 0;
    }
    return n;
  }

  /** Rows the keys passed to attention have when `n` more tokens are appended. */
  private keyRows(n: number): number {
    const need = this.length + n;
    if (!this.inPlace) return need;
    if (need > this.capacity) {
      const grown = Math.max(need, Math.floor(this.capacity * 1.5), this.reserve);
      this.capacity = Math.ceil(grown / CAPACITY_STEP) * CAPACITY_STEP;
    }
    return this.capacity;
  }

  /** Appends this step's k/v for one layer and returns the full cached k/v (owned by the cache). */
  append(layer: number, k: tf.Tensor4D, v: tf.Tensor4D): [tf.Tensor4D, tf.Tensor4D] {
    const rows = this.keyRows(k.shape[1]);
    if (this.dtype === 'bf16') {
      this.bits[layer] = this.writeBits(this.bits[layer] ?? null, k, v, rows);
      return [k, v];
    }
    if (!this.inPlace) {
      const cat = (old: tf.Tensor4D | null, x: tf.Tensor4D) => tf.keep(old ? (tf.concat([old, x], 1) as tf.Tensor4D) : x.clone());
      const [nk, nv] = [cat(this.keys[layer] ?? null, k), cat(this.values[layer] ?? null, v)];
      this.keys[layer]?.dispose();
      this.values[layer]?.dispose();
      this.keys[layer] = nk;
      this.values[layer] = nv;
      return [nk, nv];
    }
    this.keys[layer] = this.write(this.keys[layer] ?? null, k, rows);
    this.values[layer] = this.write(this.values[layer] ?? null, v, rows);
    return [this.keys[layer]!, this.values[layer]!];
  }

  /** bf16 mode: k and v rounded into rows length.. of the layer's buffers (grown first if needed). */
  private writeBits(buf: Bf16Kv | null, k: tf.Tensor4D, v: tf.Tensor4D, rows: number): Bf16Kv {
    const [b, t, h, d] = k.shape;
    const row = h * d;
    if (!buf || buf.shape[1] !== rows) {
      const grown: Bf16Kv = { k: new Uint16Array(b * rows * row), v: new Uint16Array(b * rows * row), shape: [b, rows, h, d] };
      if (buf) {
        const old = buf.shape[1];
        for (let i = 0; i < b; i++) {
          grown.k.set(buf.k.subarray(i * old * row, (i * old + this.length) * row), i * rows * row);
          grown.v.set(buf.v.subarray(i * old * row, (i * old + this.length) * row), i * rows * row);
        }
      }
      buf = grown;
    }
    for (const [src, dst] of [[k, buf.k], [v, buf.v]] as const) {
      const x = src.dataSync() as Float32Array;
      for (let i = 0; i < b; i++) f32ToBf16(x.subarray(i * t * row, (i + 1) * t * row), dst.subarray((i * rows + this.length) * row, (i * rows + this.length + t) * row));
    }
    return buf;
  }

  /**
   * bf16 mode: attention of q [B, T, H, D] (the tokens just appended to `layer`) over the cached
   * keys and values, causal at the cache's position.
   */
  attend(layer: number, q: tf.Tensor4D, keyMask: tf.Tensor2D | null): tf.Tensor4D {
    const kv = this.bits[layer];
    if (this.dtype !== 'bf16' || !kv) throw new InputError('KVCache.attend: only a bf16 cache after append() attends by itself');
    return attentionBf16Kv(q, kv, this.length, keyMask);
  }

  /** Writes x at rows length.. of buf (grown to `rows` rows first if needed). */
  private write(buf: tf.Tensor4D | null, x: tf.Tensor4D, rows: number): tf.Tensor4D {
    const [b, t, h, d] = x.shape;
    const row = h * d;
    if (!buf || buf.shape[1] !== rows) {
      const grown = tf.keep(tf.zeros([b, rows, h, d], 'float32') as tf.Tensor4D);
      const dst = backendValues(grown);
      if (!dst) throw new InputError('KVCache: the cpu backend did not expose a float32 buffer; create the cache with { inPlace: false }');
      if (buf) {
        const src = backendValues(buf)!;
        const old = buf.shape[1];
        for (let i = 0; i < b; i++) dst.set(src.subarray(i * old * row, (i * old + this.length) * row), i * rows * row);
        buf.dispose();
      }
      buf = grown;
    }
    const dst = backendValues(buf)!;
    const src = x.dtype === 'float32' ? (x.dataSync() as Float32Array) : Float32Array.from(x.dataSync());
    for (let i = 0; i < b; i++) dst.set(src.subarray(i * t * row, (i + 1) * t * row), (i * rows + this.length) * row);
    return buf;
  }

  /**
   * Records the padding mask of `n` new tokens (null = all real) and returns the mask of every
   * key row attention will see (zeros past the tokens), or null when there is no padding anywhere.
   */
  appendMask(batch: number, n: number, newMask: tf.Tensor2D | null): tf.Tensor2D | null {
    const rows = this.keyRows(n);
    if (!newMask && !this.mask) return null;
    const prev = this.mask ?? tf.ones([batch, this.length], 'float32');
    const add = newMask ? tf.cast(newMask, 'float32') : tf.ones([batch, n], 'float32');
    const next = tf.keep(tf.concat([prev, add], 1) as tf.Tensor2D);
    this.mask?.dispose();
    this.mask = next;
    const total = this.length + n;
    return rows > total ? (tf.pad(next, [[0, 0], [0, rows - total]]) as tf.Tensor2D) : next;
  }

  /** Called by the model after all layers appended `n` tokens. */
  advance(n: number): void {
    this.length += n;
  }

  /** Copies of one layer's cached [k, v], exactly `length` rows (the caller disposes them); null before the first forward. */
  layer(i: number): [tf.Tensor4D, tf.Tensor4D] | null {
    const bits = this.bits[i];
    if (bits) return [widenRows(bits.k, bits.shape, this.length), widenRows(bits.v, bits.shape, this.length)];
    const k = this.keys[i];
    const v = this.values[i];
    if (!k || !v) return null;
    // A real copy: on the cpu backend a slice may be a view of the buffer that later appends overwrite.
    const copy = (t: tf.Tensor4D) => {
      const [b, , h, d] = t.shape;
      const all = t.dataSync() as Float32Array;
      const out = new Float32Array(b * this.length * h * d);
      const row = h * d;
      for (let i = 0; i < b; i++) out.set(all.subarray(i * t.shape[1] * row, (i * t.shape[1] + this.length) * row), i * this.length * row);
      return tf.tensor4d(out, [b, this.length, h, d]);
    };
    return [copy(k), copy(v)];
  }

  /** Restores saved keys/values (copied; the caller still owns the inputs), e.g. from a prompt-cache file. */
  static fromLayers(layers: readonly [tf.Tensor4D, tf.Tensor4D][], opts: { inPlace?: boolean; dtype?: KvDtype; capacity?: number } = {}): KVCache {
    const c = new KVCache(layers.length, opts);
    const n = layers[0]?.[0].shape[1] ?? 0;
    layers.forEach(([k, v], i) => {
      if (k.shape.join() !== v.shape.join() || k.shape[1] !== n) {
        throw new InputError(`KVCache.fromLayers: layer ${i} keys [${k.shape}] and values [${v.shape}] disagree with layer 0`);
      }
      c.append(i, k, v);
    });
    c.advance(n);
    return c;
  }

  /**
   * Forgets every token after the first n, so a cached prompt can be reused for a new prompt
   * that shares only its first n tokens.
   */
  truncate(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > this.length) throw new InputError(`KVCache.truncate: ${n} is outside [0, ${this.length}]`);
    if (n === this.length) return;
    if (n === 0) {
      this.dispose();
      return;
    }
    const cut = <T extends tf.Tensor>(t: T | null): T | null => {
      if (!t) return null;
      const s = tf.keep(tf.slice(t, 0, [t.shape[0]!, n]) as T);
      t.dispose();
      return s;
    };
    // In-place buffers keep their rows: the stale ones are past `length`, invisible until overwritten.
    if (!this.inPlace) {
      this.keys = this.keys.map(cut);
      this.values = this.values.map(cut);
    }
    this.mask = cut(this.mask);
    this.length = n;
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values, this.mask]) t?.dispose();
    this.keys.fill(null);
    this.values.fill(null);
    this.bits.fill(null);
    this.mask = null;
    this.length = 0;
    this.capacity = 0;
  }
}
