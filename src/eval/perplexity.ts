import * as tf from '@tensorflow/tfjs';
import { ConfigError, InputError } from '../../ops/errors.js';
import { KVCache, type LlamaModel } from '../../models/index.js';

/**
 * Perplexity by position: how well a model predicts each token given everything before it, grouped
 * by how far into the context the token is. A long-context model should get better (or at least
 * no worse) further in; one that cannot use its context flattens or gets worse past its trained length.
 */

export interface PositionBucket {
  /** Token positions [start, end) within a window (position 0 is never scored: nothing precedes it). */
  start: number;
  end: number;
  tokens: number;
  /** Mean negative log-likelihood (nats) and its exp. */
  nll: number;
  ppl: number;
}

export interface PerplexityResult {
  windows: number;
  windowTokens: number;
  scored: number;
  nll: number;
  ppl: number;
  buckets: PositionBucket[];
}

export interface PerplexityOptions {
  /** Tokens per window (default and maximum: the model's context). The text is cut into windows this long. */
  window?: number;
  /** At most this many windows (default: as many as the text has). */
  maxWindows?: number;
  /** Bucket edges; default powers of two from `firstBucket` up to the window. */
  edges?: number[];
  /** First edge of the default buckets (1024, or less for short windows). */
  firstBucket?: number;
  /** Tokens per forward pass (bounds memory). Default 512. */
  chunk?: number;
  /** Start every window with this token (BOS, as the model saw in training and as llama-perplexity does). */
  bos?: number;
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

/** 1K, 2K, 4K, ... up to the window (the last bucket ends at the window); smaller starts for short windows. */
export function defaultEdges(window: number, first?: number): number[] {
  let e = first ?? 1024;
  while (e > 16 && e * 4 > window) e /= 2;
  const edges = [0];
  for (; e < window; e *= 2) edges.push(e);
  edges.push(window);
  return edges;
}

/**
 * Log-likelihood of every next token of `tokens` (the first has no prediction): chunked through a
 * KV cache, only the chosen logits leave the tidy, so memory is one chunk's logits.
 */
export async function tokenLogProbs(model: LlamaModel, tokens: readonly number[], opts: { chunk?: number; signal?: AbortSignal; onChunk?: (done: number) => void } = {}): Promise<Float32Array> {
  const chunk = opts.chunk ?? 512;
  if (!Number.isInteger(chunk) || chunk < 1) throw new ConfigError(`chunk must be a positive integer, got ${chunk}`);
  const out = new Float32Array(Math.max(0, tokens.length - 1));
  const cache = model.newCache();
  try {
    for (let s = 0; s + 1 < tokens.length; s += chunk) {
      if (opts.signal?.aborted) throw new InputError('perplexity: aborted');
      const e = Math.min(tokens.length - 1, s + chunk);
      const lp = tf.tidy(() => {
        const ids = tf.tensor2d([tokens.slice(s, e) as number[]], [1, e - s], 'int32');
        const logits = model.forward(ids, { cache }).reshape([e - s, -1]) as tf.Tensor2D;
        const v = logits.shape[1];
        const at = tf.tensor1d(Array.from({ length: e - s }, (_, i) => i * v + tokens[s + i + 1]!), 'int32');
        return tf.gather(tf.logSoftmax(logits).reshape([-1]), at);
      });
      out.set((await lp.data()) as Float32Array, s);
      lp.dispose();
      opts.onChunk?.(e);
      await new Promise((r) => setImmediate(r));
    }
  } finally {
    cache.dispose();
  }
  return out;
}

/** Perplexity overall and by position bucket over consecutive windows of `tokens`. */
export async function perplexityByPosition(model: LlamaModel, tokens: readonly number[], opts: PerplexityOptions = {}): Promise<PerplexityResult> {
  const max = model.config.maxSeqLen;
  const window = opts.window ?? Math.min(max, tokens.length);
  if (!Number.isInteger(window) || window < 2) throw new ConfigError(`the window must be an integer of at least 2 tokens, got ${window}`);
  if (window > max) throw new ConfigError(`a window of ${window} tokens exceeds the model's context of ${max}; lower --context or pass --max-len`);
  const text = opts.bos === undefined ? window : window - 1;
  const available = Math.floor(tokens.length / text);
  if (available === 0) throw new InputError(`the text has ${tokens.length} tokens, fewer than one window of ${window}; give a longer file or a smaller --context`);
  const windows = Math.min(available, opts.maxWindows ?? available);
  const edges = opts.edges ?? defaultEdges(window, opts.firstBucket);
  if (edges[0] !== 0 || edges[edges.length - 1] !== window || edges.some((e, i) => i > 0 && e <= edges[i - 1]!)) {
    throw new ConfigError(`bucket edges must rise from 0 to the window (${window}), got [${edges.join(', ')}]`);
  }
  const sums = new Float64Array(edges.length - 1);
  const counts = new Float64Array(edges.length - 1);
  const total = windows * (window - 1);
  for (let w = 0; w < windows; w++) {
    const part = tokens.slice(w * text, (w + 1) * text);
    const lp = await tokenLogProbs(model, opts.bos === undefined ? part : [opts.bos, ...part], {
      chunk: opts.chunk,
      signal: opts.signal,
      onChunk: (done) => opts.onProgress?.(w * (window - 1) + done, total),
    });
    // lp[i] scores the token at position i + 1.
    let b = 0;
    for (let i = 0; i < lp.length; i++) {
      while (i + 1 >= edges[b + 1]!) b++;
      sums[b] = sums[b]! - lp[i]!;
      counts[b] = counts[b]! + 1;
    }
  }
  const buckets: PositionBucket[] = [];
  for (let b = 0; b < sums.length; b++) {
    const nll = counts[b] ? sums[b]! / counts[b]! : NaN;
    buckets.push({ start: edges[b]!, end: edges[b + 1]!, tokens: counts[b]!, nll, ppl: Math.exp(nll) });
  }
  const nll = sums.reduce((a, x) => a + x, 0) / total;
  return { windows, windowTokens: window, scored: total, nll, ppl: Math.exp(nll), buckets };
}
