// Splitting a batch of sequences over the ranks of a ring and putting per-rank results back in
// order. Everything indexed by sequence (ids, labels, loss weights, segment ids, masks) must go
// through the same split, or RoPE positions and masks silently disagree (spec 5.4, pitfall 9).
import * as tf from '@tensorflow/tfjs';
import { InputError, layoutIndices, layoutOwners, paddedLength, type RingLayout } from '../ops/index.js';

export interface ShardSpec {
  size: number;
  rank: number;
  layout?: RingLayout;
}

/** This rank's share of x along axis 1 (x: [B, S, ...], S a multiple of the layout's unit). */
export function shardSequence<T extends tf.Tensor>(x: T, spec: ShardSpec): T {
  if (x.rank < 2) throw new InputError(`shardSequence: expected [batch, seq, ...], got shape [${x.shape}]`);
  const idx = layoutIndices(x.shape[1]!, spec.size, spec.rank, spec.layout ?? 'contiguous');
  return tf.tidy(() => tf.gather(x, tf.tensor1d(idx, 'int32'), 1)) as T;
}

/** Inverse of shardSequence: parts[r] is rank r's [B, S/N, ...]; returns [B, S, ...]. */
export function unshardSequence<T extends tf.Tensor>(parts: T[], layout: RingLayout = 'contiguous'): T {
  const n = parts.length;
  const c = parts[0]!.shape[1]!;
  const owners = layoutOwners(c * n, n, layout);
  // Global token g sits at column rank * c + local of the concatenated parts.
  const where = owners.rank.map((r, g) => r * c + owners.local[g]!);
  return tf.tidy(() => tf.gather(tf.concat(parts, 1), tf.tensor1d(where, 'int32'), 1)) as T;
}

export interface PaddedBatch {
  ids: tf.Tensor2D;
  /** 1 for real tokens, 0 for the padding. */
  attentionMask: tf.Tensor2D;
  /** Segment ids with the padding in a segment of its own (-1), when segmentIds were given. */
  segmentIds?: tf.Tensor2D;
  /** Real tokens per row before padding. */
  length: number;
}

/**
 * Pads [B, S] ids on the right to a length the layout splits evenly (2N for zigzag, N otherwise).
 * Padding keys are never attended; the padding positions' own outputs mean nothing, so give
 * them loss weight 0.
 */
export function padForRing(ids: tf.Tensor2D, size: number, layout: RingLayout = 'contiguous', opts: { padId?: number; segmentIds?: tf.Tensor2D } = {}): PaddedBatch {
  const [b, s] = ids.shape;
  const target = paddedLength(s, size, layout);
  return tf.tidy(() => {
    const pad = target - s;
    const mask = tf.concat([tf.ones([b, s], 'int32'), tf.zeros([b, pad], 'int32')], 1) as tf.Tensor2D;
    const out: PaddedBatch = { ids: tf.pad(ids, [[0, 0], [0, pad]], opts.padId ?? 0) as tf.Tensor2D, attentionMask: mask, length: s };
    if (opts.segmentIds) out.segmentIds = tf.pad(opts.segmentIds, [[0, 0], [0, pad]], -1) as tf.Tensor2D;
    return out as unknown as tf.TensorContainer;
  }) as unknown as PaddedBatch;
}
