import { beforeAll, describe, expect, it } from '@jest/globals';
import * as tf from '@tensorflow/tfjs';
import { presetConfig } from '../../../models/config.js';
import { LlamaModel } from '../../../models/llama.js';
import { initParams, paramName, ParamStore } from '../../../models/params.js';
import { mulberry32 } from '../../../data/batches.js';
import { initBackend } from '../../../src/backend.js';
import { weightedLoss, type LossBatch } from '../../../src/train/loss.js';
import { Trainer } from '../../../src/train/trainer.js';

const config = presetConfig('tiny', { vocabSize: 256, maxSeqLen: 64 });
const visionConfig = presetConfig('tiny-vision', { vocabSize: 256, maxSeqLen: 64 });

/** Random rows of two packed documents each; weights 1/(weighted tokens of the row) on the second half. */
function batch(rows: number, length: number, seed: number, vision = false): LossBatch {
  const rnd = mulberry32(seed);
  const n = rows * length;
  const b: LossBatch = {
    rows,
    length,
    inputTokens: new Int32Array(n),
    targetTokens: new Int32Array(n),
    inputVisionMask: new Uint8Array(n),
    targetVisionMask: new Uint8Array(n),
    segmentIds: new Int32Array(n),
    positions: new Int32Array(n),
    lossWeights: new Float32Array(n),
  };
  const cut = length / 2;
  for (let i = 0; i < n; i++) {
    const col = i % length;
    const vis = vision && col % 4 === 1;
    b.inputVisionMask[i] = vis ? 1 : 0;
    b.inputTokens[i] = 3 + Math.floor(rnd() * (vis ? 8000 : 250));
    b.targetVisionMask[i] = vision && col % 4 === 0 ? 1 : 0;
    b.targetTokens[i] = 3 + Math.floor(rnd() * (b.targetVisionMask[i] ? 8000 : 250));
    b.segmentIds[i] = col < length / 4 ? 0 : 1;
    b.positions[i] = col < length / 4 ? col : col - length / 4;
    b.lossWeights[i] = col >= cut ? 1 / (length - cut) : 0;
  }
  return b;
}

const model = (c = config, seed = 1) => new LlamaModel(c, initParams(c, seed));

beforeAll(async () => {
  await initBackend();
});

describe('training step', () => {
  it('the loss falls on a fixed batch, and nothing leaks', () => {
    const m = model();
    const t = new Trainer(m, { lr: () => 1e-2, weightDecay: 0 });
    m.dispose();
    const b = batch(2, 32, 7);
    const before = tf.memory().numTensors;
    const losses = Array.from({ length: 12 }, () => t.step([b]).loss);
    expect(tf.memory().numTensors).toBe(before);
    expect(losses[0]).toBeGreaterThan(Math.log(256) - 0.5);
    expect(losses.at(-1)!).toBeLessThan(losses[0]! * 0.6);
    t.dispose();
  });

  it('zero-weight tokens get exactly zero gradient: their targets do not change the loss or any gradient', () => {
    const m = model();
    const a = batch(2, 32, 9);
    const b = { ...a, targetTokens: a.targetTokens.slice() };
    for (let i = 0; i < b.targetTokens.length; i++) if (b.lossWeights[i] === 0) b.targetTokens[i] = (b.targetTokens[i]! * 31 + 5) % 250 + 3;
    const names = [paramName.lmHead, paramName.embed, paramName.layer(0, 'self_attn.q_proj')];
    const vars = names.map((n) => tf.variable(m.params.get(n), true, `zw/${n}`));
    const withVars = new LlamaModel(config, new ParamStore(new Map(m.params.names().map((n) => [n, names.includes(n) ? vars[names.indexOf(n)]! : m.params.get(n)]))));
    const grads = (x: LossBatch) => {
      const g = tf.variableGrads(() => weightedLoss(withVars, x).loss, vars);
      const out = { loss: g.value.dataSync()[0], grads: vars.map((v) => Array.from(g.grads[v.name]!.dataSync())) };
      tf.dispose([g.value, ...Object.values(g.grads)]);
      return out;
    };
    const ga = grads(a);
    const gb = grads(b);
    expect(gb.loss).toBe(ga.loss);
    gb.grads.forEach((g, i) => expect(g).toEqual(ga.grads[i]));
    vars.forEach((v) => v.dispose());
    m.dispose();
  });

  it('gradient accumulation of 2 x B/2 equals one update of B (fp32 tolerance)', () => {
    const b = batch(4, 32, 11);
    const half = (k: number): LossBatch => {
      const L = b.length;
      const sl = <T extends Int32Array | Uint8Array | Float32Array>(x: T) => x.slice(k * 2 * L, (k + 1) * 2 * L) as T;
      return { rows: 2, length: L, inputTokens: sl(b.inputTokens), targetTokens: sl(b.targetTokens), inputVisionMask: sl(b.inputVisionMask), targetVisionMask: sl(b.targetVisionMask), segmentIds: sl(b.segmentIds), positions: sl(b.positions), lossWeights: sl(b.lossWeights) };
    };
    const m = model();
    const t = new Trainer(m, { lr: () => 1e-2 });
    m.dispose();
    const whole = t.gradients([b]);
    const split = t.gradients([half(0), half(1)]);
    expect(Math.abs(whole.loss - split.loss)).toBeLessThan(1e-5 * whole.loss);
    let maxDiff = 0;
    let maxAbs = 0;
    for (const [n, g] of whole.grads) {
      const a = g.dataSync();
      const c = split.grads.get(n)!.dataSync();
      for (let i = 0; i < a.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(a[i]! - c[i]!));
        maxAbs = Math.max(maxAbs, Math.abs(a[i]!));
      }
    }
    expect(maxAbs).toBeGreaterThan(0);
    expect(maxDiff).toBeLessThan(1e-5 * maxAbs);
    tf.dispose([...whole.grads.values(), ...split.grads.values()]);
    t.dispose();
  });

  it('remat (recomputing each layer in the backward pass) gives the same gradients', () => {
    const m = model();
    const plain = new Trainer(m, { lr: () => 1e-2 });
    const remat = new Trainer(m, { lr: () => 1e-2, remat: true });
    m.dispose();
    const b = batch(2, 32, 17);
    const before = tf.memory().numTensors;
    const a = plain.gradients([b]);
    const r = remat.gradients([b]);
    expect(r.loss).toBe(a.loss);
    for (const [n, g] of a.grads) {
      const x = g.dataSync();
      const y = r.grads.get(n)!.dataSync();
      let d = 0;
      let s = 0;
      for (let i = 0; i < x.length; i++) {
        d = Math.max(d, Math.abs(x[i]! - y[i]!));
        s = Math.max(s, Math.abs(x[i]!));
      }
      expect({ n, ok: d <= 1e-6 * Math.max(s, 1e-12) }).toEqual({ n, ok: true });
    }
    tf.dispose([...a.grads.values(), ...r.grads.values()]);
    expect(tf.memory().numTensors).toBe(before);
    plain.dispose();
    remat.dispose();
  });

  it("a vision model trains both heads: LWM's loss is the weighted sum of the vision and text parts", () => {
    const m = model(visionConfig, 3);
    const t = new Trainer(m, { lr: () => 5e-3, weightDecay: 0 });
    m.dispose();
    const b = batch(2, 32, 13, true);
    const r = t.step([b]);
    expect(r.visionLoss).toBeGreaterThan(0);
    expect(r.textLoss).toBeGreaterThan(0);
    expect(Math.abs(r.loss - (r.visionLoss + r.textLoss))).toBeLessThan(1e-5 * r.loss);
    const before = t.evaluate(b).loss;
    for (let i = 0; i < 5; i++) t.step([b]);
    expect(t.evaluate(b).loss).toBeLessThan(before);
    t.dispose();
  });

  it('refuses vision tokens for a text model and targets outside the vocabulary', () => {
    const m = model();
    expect(() => weightedLoss(m, batch(1, 32, 1, true))).toThrow(/vision tokens but the model is text-only/);
    const bad = batch(1, 32, 1);
    bad.targetTokens[31] = 999;
    expect(() => weightedLoss(m, bad)).toThrow(/target 999 is outside the text vocabulary \[0, 256\)/);
    m.dispose();
  });
});
