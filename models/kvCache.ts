import * as tf from '@tensorflow/tfjs';
import { InputError } from '../ops/errors.js';

/**
 * Keys and values of every layer for the tokens seen so far, so each decode step only runs the
 * new token. Owns its tensors: the model replaces them step by step, `dispose()` frees them.
 * Layout per layer: [B, S, Hkv, D] (after RoPE).
 */
export class KVCache {
  private keys: (tf.Tensor4D | null)[];
  private values: (tf.Tensor4D | null)[];
  /** [B, S] 1 = real token, 0 = padding; null while every cached token is real. */
  private mask: tf.Tensor2D | null = null;
  /** Tokens cached (same for every layer once a forward pass completes). */
  length = 0;

  constructor(readonly numLayers: number) {
    this.keys = new Array(numLayers).fill(null);
    this.values = new Array(numLayers).fill(null);
  }

  /** Appends this step's k/v for one layer and returns the full cached k/v (owned by the cache). */
  append(layer: number, k: tf.Tensor4D, v: tf.Tensor4D): [tf.Tensor4D, tf.Tensor4D] {
    const oldK = this.keys[layer] ?? null;
    const oldV = this.values[layer] ?? null;
    const newK = tf.keep(oldK ? (tf.concat([oldK, k], 1) as tf.Tensor4D) : k.clone());
    const newV = tf.keep(oldV ? (tf.concat([oldV, v], 1) as tf.Tensor4D) : v.clone());
    oldK?.dispose();
    oldV?.dispose();
    this.keys[layer] = newK;
    this.values[layer] = newV;
    return [newK, newV];
  }

  /**
   * Records the padding mask of `n` new tokens (null = all real) and returns the mask of every
   * cached key, or null when there is no padding anywhere.
   */
  appendMask(batch: number, n: number, newMask: tf.Tensor2D | null): tf.Tensor2D | null {
    if (!newMask && !this.mask) return null;
    const prev = this.mask ?? tf.ones([batch, this.length], 'float32');
    const add = newMask ? tf.cast(newMask, 'float32') : tf.ones([batch, n], 'float32');
    const next = tf.keep(tf.concat([prev, add], 1) as tf.Tensor2D);
    this.mask?.dispose();
    this.mask = next;
    return next;
  }

  /** Called by the model after all layers appended `n` tokens. */
  advance(n: number): void {
    this.length += n;
  }

  /** Cached [k, v] of one layer (owned by the cache; null before the first forward). */
  layer(i: number): [tf.Tensor4D, tf.Tensor4D] | null {
    const k = this.keys[i];
    const v = this.values[i];
    return k && v ? [k, v] : null;
  }

  /** Restores saved keys/values (the cache takes ownership), e.g. from a prompt-cache file. */
  static fromLayers(layers: readonly [tf.Tensor4D, tf.Tensor4D][]): KVCache {
    const c = new KVCache(layers.length);
    layers.forEach(([k, v], i) => {
      if (k.shape.join() !== v.shape.join() || k.shape[1] !== layers[0]![0].shape[1]) {
        throw new InputError(`KVCache.fromLayers: layer ${i} keys [${k.shape}] and values [${v.shape}] disagree with layer 0`);
      }
      c.keys[i] = tf.keep(k);
      c.values[i] = tf.keep(v);
    });
    c.length = layers[0]?.[0].shape[1] ?? 0;
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
    this.keys = this.keys.map(cut);
    this.values = this.values.map(cut);
    this.mask = cut(this.mask);
    this.length = n;
  }

  dispose(): void {
    for (const t of [...this.keys, ...this.values, this.mask]) t?.dispose();
    this.keys.fill(null);
    this.values.fill(null);
    this.mask = null;
    this.length = 0;
  }
}
