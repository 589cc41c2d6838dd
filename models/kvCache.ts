import * as tf from '@tensorflow/tfjs';

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

  dispose(): void {
    for (const t of [...this.keys, ...this.values, this.mask]) t?.dispose();
    this.keys.fill(null);
    this.values.fill(null);
    this.mask = null;
    this.length = 0;
  }
}
