import * as tf from '@tensorflow/tfjs';
import { InputError } from '../../ops/errors.js';
import type { RingGroup, RingLayout } from '../../ops/index.js';
import type { LlamaModel } from '../../models/llama.js';

/** Row-major [rows, length] arrays of one (micro-)batch, as BatchIterator yields them. */
export interface LossBatch {
  rows: number;
  length: number;
  inputTokens: Int32Array;
  targetTokens: Int32Array;
  inputVisionMask: Uint8Array;
  targetVisionMask: Uint8Array;
  segmentIds: Int32Array;
  positions: Int32Array;
  lossWeights: Float32Array;
}

export interface LossOptions {
  /** Sequence parallel: this rank holds its layout share of every row. */
  ring?: { group: RingGroup; layout: RingLayout };
  /** Multiplies the weighted sum (e.g. packing group rows / batch rows). */
  scale?: number;
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
 * Segment ids keep packed documents apart; positions restart per document.
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
    });
    const weights = tf.tensor1d(b.lossWeights, 'float32');
    const tvm = tf.tensor1d(b.targetVisionMask, 'float32');
    const textCe = crossEntropy(model.textLogits(h), b.targetTokens, b.targetVisionMask, false);
    const ce = model.isVision ? tf.add(textCe, crossEntropy(model.visionLogits(h), b.targetTokens, b.targetVisionMask, true)) : textCe;
    const scale = opts.scale ?? 1;
    const wce = tf.mul(tf.mul(weights, ce), scale);
    const visionLoss = tf.sum(tf.mul(wce, tvm)) as tf.Scalar;
    const loss = tf.sum(wce) as tf.Scalar;
    return { loss, visionLoss, textLoss: tf.sub(loss, visionLoss) as tf.Scalar };
  });
}

/**
 * Per-token logsumexp(logits) - logits[target] for the positions whose target belongs to this head
 * (0 elsewhere). Its own gradient, (softmax - onehot) * dy, replaces tfjs's chain through max, gather
 * and logSumExp, whose [tokens, vocab] masks and scatters took seconds per step on the cpu backend.
 */
function crossEntropy(logits: tf.Tensor3D, targets: Int32Array, targetVision: Uint8Array, visionHead: boolean): tf.Tensor1D {
  const [b, t, v] = logits.shape;
  const n = b * t;
  const index = new Int32Array(n);
  const target = new Int32Array(n);
  const mine = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const ours = (targetVision[i] !== 0) === visionHead;
    const id = targets[i] as number;
    if (ours && (id < 0 || id >= v)) throw new InputError(`training batch: target ${id} at ${i} is outside the ${visionHead ? 'vision' : 'text'} vocabulary [0, ${v})`);
    mine[i] = ours ? 1 : 0;
    target[i] = ours ? id : 0;
    index[i] = i * v + target[i]!;
  }
  const op = tf.customGrad((xIn, saveIn) => {
    const x = xIn as tf.Tensor;
    const save = saveIn as tf.GradSaveFunc;
    const flat = tf.reshape(x, [n, v]);
    const shifted = tf.sub(flat, tf.max(flat, 1, true));
    const lse = tf.log(tf.sum(tf.exp(shifted), 1));
    const picked = tf.gather(tf.reshape(shifted, [n * v]), tf.tensor1d(index, 'int32'));
    const m = tf.tensor1d(mine, 'float32');
    save([shifted, lse, m]);
    return {
      value: tf.mul(tf.sub(lse, picked), m),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sh, l, mk] = saved as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
        const p = tf.exp(tf.sub(sh, tf.expandDims(l, 1)));
        const g = tf.mul(tf.sub(p, tf.oneHot(tf.tensor1d(target, 'int32'), v)), tf.expandDims(tf.mul(dy, mk), 1));
        return tf.reshape(g, [b, t, v]);
      },
    };
  });
  return op(logits) as tf.Tensor1D;
}
