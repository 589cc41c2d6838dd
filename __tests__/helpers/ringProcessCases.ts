// What the multi-process ring tests run, shared by the rank script and the test that checks it.
import * as tf from '@tensorflow/tfjs';
import { createModel, LlamaModel, ParamStore, paddedLength, shardSequence, type RingLayout, type ShardSpec } from '../../src/index.js';

export const OP_CASES: { layout: RingLayout; causal: boolean; kernel: 'native' | 'tfjs' }[] = [
  { layout: 'contiguous', causal: true, kernel: 'native' },
  { layout: 'zigzag', causal: true, kernel: 'native' },
  { layout: 'striped', causal: true, kernel: 'native' },
  { layout: 'contiguous', causal: false, kernel: 'native' },
  { layout: 'zigzag', causal: false, kernel: 'native' },
  { layout: 'striped', causal: false, kernel: 'native' },
  { layout: 'zigzag', causal: true, kernel: 'tfjs' },
];

export const opCaseName = (c: (typeof OP_CASES)[number]) => `${c.layout}-${c.causal ? 'causal' : 'full'}-${c.kernel}`;
export const MODEL_TOKENS = 45; // = sum of DOCS
export const MODEL_LAYOUT: RingLayout = 'zigzag';

/** The model of the test: `tiny` with a 256-token vocabulary (ids are < 250), the same weights everywhere. */
export function testModel(): LlamaModel {
  return createModel('tiny', { seed: 3, overrides: { vocabSize: 256 } });
}

/** Packed documents of the model test: their lengths (the rest is padding). */
const DOCS = [20, 15, 10];

/**
 * The model test's batch, the same on every rank and in the test: three packed documents with
 * RoPE positions restarting at each, padded for the layout. With `spec`, this rank's share.
 */
export function modelInputs(size: number, spec?: ShardSpec) {
  const s = paddedLength(MODEL_TOKENS, size, MODEL_LAYOUT);
  const ids = new Int32Array(s);
  const labels = new Int32Array(s);
  const weights = new Float32Array(s);
  const seg = new Int32Array(s).fill(-1);
  const pos = new Int32Array(s);
  const mask = new Float32Array(s);
  for (let i = 0; i < s; i++) ids[i] = (i * 7919 + 13) % 250;
  let start = 0;
  DOCS.forEach((len, d) => {
    for (let i = 0; i < len; i++) {
      const g = start + i;
      seg[g] = d;
      pos[g] = i;
      mask[g] = 1;
      if (i + 1 < len) {
        labels[g] = ids[g + 1]!;
        weights[g] = 1;
      }
    }
    start += len;
  });
  return tf.tidy(() => {
    const t = (a: Int32Array | Float32Array) => {
      const x = tf.tensor2d(a, [1, s], a instanceof Int32Array ? 'int32' : 'float32');
      return spec ? shardSequence(x, spec) : x;
    };
    return { ids: t(ids), labels: t(labels), weights: t(weights), segmentIds: t(seg), positions: t(pos), mask: t(mask), s };
  });
}

/** Sum of weighted token cross-entropies: the loss every rank adds its share of. */
export function lossSum(logits: tf.Tensor3D, labels: tf.Tensor2D, weights: tf.Tensor2D): tf.Scalar {
  const logp = tf.logSoftmax(logits);
  const picked = tf.sum(tf.mul(logp, tf.oneHot(labels, logits.shape[2]!)), -1);
  return tf.neg(tf.sum(tf.mul(picked, weights))) as tf.Scalar;
}

export function modelGrads(model: LlamaModel, fwd: (m: LlamaModel) => tf.Scalar): { loss: number; grads: Float32Array[] } {
  const names = model.params.names();
  const f = (...ws: tf.Tensor[]) => fwd(new LlamaModel(model.config, new ParamStore(new Map(names.map((n, i) => [n, ws[i]!])))));
  const { value, grads } = tf.valueAndGrads(f)(names.map((n) => model.params.get(n)));
  const out = { loss: value.dataSync()[0]!, grads: grads.map((g) => Float32Array.from(g.dataSync())) };
  tf.dispose([value, ...grads]);
  return out;
}

