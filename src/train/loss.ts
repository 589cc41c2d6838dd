import * as tf from '@tensorflow/tfjs';
import { InputError } from '../../ops/errors.js';
import type { RingGroup, RingLayout } from '../../ops/index.js';
import type { LlamaModel } from '../../models/llama.js';
import type { PackedRow } from '../../data/batches.js';

/** Row-major [rows, length] arrays of one (micro-)batch, as BatchIterator yields them (the 0/1 mask is not needed). */
export type LossBatch = Omit<PackedRow, 'lossMask'> & { rows: number; length: number };

export interface LossOptions {
  /** Sequence parallel: this rank holds its layout share of every row. */
  ring?: { group: RingGroup; layout: RingLayout };
  /** Multiplies the weighted sum (e.g. packing group rows / batch rows). */
  scale?: number;
  /** Recompute each layer in the backward pass instead of keeping its activations. */
  remat?: boolean;
}

/** Scalars of one forward: the weighted loss and its vision/text parts (same weights, same scale). */
export interface LossValues {
  loss: tf.Scalar;
  visionLoss: tf.Scalar;
  textLoss: tf.Scalar;
}

function check(b: LossBatch, model: LlamaModel): void {
  const n = b.rows * b.length;
  for (const k of ['inputTokens', 'targetTokens', 'inputVisionMask', 'targetVisionMask', 'segmentIds', 'positions', 'lossWeights'] as const) {
    if (b[k].length !== n) throw new InputError(`training batch: ${k} has ${b[k].length} values, expected rows x length = ${n}`);
  }
  if (!model.isVision && (b.inputVisionMask.some((v) => v !== 0) || b.targetVisionMask.some((v) => v !== 0))) {
    throw new InputError('training batch has vision tokens but the model is text-only; use a vision preset (e.g. tiny-vision) or a vision checkpoint');
  }
}

/**
 * Σ_t w_t · CE_t · scale: CE against the text head, or against the vision head where the target is a
 * vision token (LWM's two vocabularies, spec 5.6). With LWM's per-row weights this is LWM's
 * 0.5 · vision + 0.5 · text loss; zero-weight tokens (padding, prompts) get exactly zero gradient.
 * Only weighted positions go through the heads: with prompts masked out (QA, passkey) that skips most
 * of the [tokens, vocabulary] logits, the biggest cost of a small model.
 */
export function weightedLoss(model: LlamaModel, b: LossBatch, opts: LossOptions = {}): LossValues {
  check(b, model);
  return tf.tidy(() => {
    const shape: [number, number] = [b.rows, b.length];
    const ids = tf.tensor2d(b.inputTokens, shape, 'int32');
    const h = model.hidden(ids, {
      visionMask: model.isVision ? tf.tensor2d(b.inputVisionMask, shape, 'int32') : undefined,
      segmentIds: tf.tensor2d(b.segmentIds, shape, 'int32'),
      positions: tf.tensor2d(b.positions, shape, 'int32'),
      ring: opts.ring,
      remat: opts.remat,
    });
    const flat = tf.reshape(h, [b.rows * b.length, model.config.hiddenSize]) as tf.Tensor2D;
    const scale = opts.scale ?? 1;
    const headLoss = (vision: boolean): tf.Scalar => {
      const rows: number[] = [];
      for (let i = 0; i < b.lossWeights.length; i++) if (b.lossWeights[i] !== 0 && (b.targetVisionMask[i] !== 0) === vision) rows.push(i);
      if (rows.length === 0) return tf.scalar(0);
      const sel = tf.gather(flat, tf.tensor1d(rows, 'int32'));
      const logits = vision ? model.visionLogits(tf.expandDims(sel, 0) as tf.Tensor3D) : model.textLogits(tf.expandDims(sel, 0) as tf.Tensor3D);
      const ce = crossEntropy(tf.squeeze(logits, [0]) as tf.Tensor2D, Int32Array.from(rows, (i) => b.targetTokens[i]!), vision ? 'vision' : 'text');
      return tf.sum(tf.mul(ce, tf.tensor1d(Float32Array.from(rows, (i) => b.lossWeights[i]! * scale), 'float32'))) as tf.Scalar;
    };
    const textLoss = headLoss(false);
    const visionLoss = model.isVision ? headLoss(true) : tf.scalar(0);
    // 0 · Σh keeps every layer in the gradient even when this row (or this rank's share of it) has
    // no weighted token: each rank of a ring must run the same backward, with its communication.
    const anchor = tf.mul(tf.sum(flat), 0);
    return { loss: tf.add(tf.add(textLoss, visionLoss), anchor) as tf.Scalar, visionLoss, textLoss };
  });
}

/**
 * logsumexp(logits) - logits[target] per row, with its own gradient, (softmax - onehot) * dy, in place
 * of tfjs's chain through max, gather and logSumExp, whose [rows, vocab] masks and scatters took
 * seconds per step on the cpu backend.
 */
function crossEntropy(logits: tf.Tensor2D, targets: Int32Array, head: string): tf.Tensor1D {
  const [n, v] = logits.shape;
  const index = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const id = targets[i]!;
    if (!(id >= 0 && id < v)) throw new InputError(`training batch: target ${id} is outside the ${head} vocabulary [0, ${v})`);
    index[i] = i * v + id;
  }
  const op = tf.customGrad((xIn, saveIn) => {
    const x = xIn as tf.Tensor2D;
    const save = saveIn as tf.GradSaveFunc;
    const shifted = tf.sub(x, tf.max(x, 1, true));
    const lse = tf.log(tf.sum(tf.exp(shifted), 1));
    const picked = tf.gather(tf.reshape(shifted, [n * v]), tf.tensor1d(index, 'int32'));
    save([shifted, lse]);
    return {
      value: tf.sub(lse, picked),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sh, l] = saved as [tf.Tensor2D, tf.Tensor1D];
        const p = tf.exp(tf.sub(sh, tf.expandDims(l, 1)));
        return tf.mul(tf.sub(p, tf.oneHot(tf.tensor1d(targets, 'int32'), v)), tf.expandDims(dy, 1));
      },
    };
  });
  return op(logits) as tf.Tensor1D;
}
