import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as tf from '@tensorflow/tfjs';
import { presetConfig } from '../../../models/config.js';
import { LlamaModel } from '../../../models/llama.js';
import { initParams } from '../../../models/params.js';
import { initBackend } from '../../../src/backend.js';
import { createModel } from '../../../src/createModel.js';
import { generateVision } from '../../../src/vision/generation.js';
import { LlamaVisionStepper } from '../../../src/vision/llamaStepper.js';
import { leftPadBatch, type PromptRow } from '../../../src/vision/prompts.js';

// Small text vocabulary keeps the model fast; the vision vocabulary must still hold <eof> 8192.
const small = presetConfig('tiny-vision', { vocabSize: 256, visionVocabSize: 8448, maxSeqLen: 256 });
let model: LlamaModel;
let full: LlamaModel;

beforeAll(async () => {
  await initBackend();
  model = new LlamaModel(small, initParams(small, 5));
  // The built-in tokenizer's prompt ids need the whole LLaMA-2 text vocabulary.
  full = createModel('tiny-vision', { seed: 2 });
});

afterAll(() => {
  model.dispose();
  full.dispose();
});

/** Logits of every position of the whole sequence in one forward pass, without a cache. */
function fullForward(rows: PromptRow[]): Float32Array[][] {
  const b = leftPadBatch(rows);
  const shape: [number, number] = [b.rows, b.length];
  const out = tf.tidy(() =>
    model.forward(tf.tensor2d(b.tokens, shape, 'int32'), {
      positions: tf.tensor2d(b.positions, shape, 'int32'),
      attentionMask: tf.tensor2d(b.attentionMask, shape, 'int32'),
      visionMask: tf.tensor2d(b.visionMask, shape, 'int32'),
      sampleMode: 'vision',
    }),
  );
  const data = out.dataSync() as Float32Array;
  out.dispose();
  const v = small.visionVocabSize;
  return Array.from({ length: b.rows }, (_, r) => Array.from({ length: b.length }, (_, t) => data.slice((r * b.length + t) * v, (r * b.length + t + 1) * v)));
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('LlamaVisionStepper', () => {
  it('prefill + cached steps equal one uncached forward over the whole sequence (2 left-padded rows)', async () => {
    // Video-style rows: text prompt, then vision ids; the second row is shorter, so it is padded.
    const cond: PromptRow = { tokens: [1, 30, 31, 32, 33, 34, 7, 8192], visionMask: [false, false, false, false, false, false, true, true] };
    const uncond: PromptRow = { tokens: [1, 30, 7, 8192], visionMask: [false, false, true, true] };
    const generated = [5, 8191, 8192, 123, 8447];
    const stepper = new LlamaVisionStepper(model);
    const got: Float32Array[] = [];
    try {
      got.push(await stepper.prefill(leftPadBatch([cond, uncond])));
      for (const t of generated.slice(0, -1)) got.push(await stepper.step([t, t]));
    } finally {
      stepper.dispose();
    }
    const extend = (r: PromptRow): PromptRow => ({
      tokens: [...r.tokens, ...generated.slice(0, -1)],
      visionMask: [...r.visionMask!, ...generated.slice(0, -1).map(() => true)],
    });
    const ref = fullForward([extend(cond), extend(uncond)]);
    const v = small.visionVocabSize;
    got.forEach((logits, i) => {
      for (const row of [0, 1]) {
        expect(maxDiff(logits.subarray(row * v, (row + 1) * v), ref[row]![cond.tokens.length - 1 + i]!)).toBeLessThan(1e-4);
      }
    });
  });

  it('refuses a text model with a one-line reason', () => {
    const text = new LlamaModel(presetConfig('tiny', { vocabSize: 256 }), initParams(presetConfig('tiny', { vocabSize: 256 }), 0));
    try {
      expect(() => new LlamaVisionStepper(text)).toThrow(/text model \(vision_vocab_size 0\)/);
    } finally {
      text.dispose();
    }
  });
});

describe('generateVision on a tiny-vision model', () => {
  it('a seed reproduces the tokens exactly and no tensors are left behind', async () => {
    const opts = { prompt: 'Fireworks over the city', seed: 11, image: { topK: 100 } };
    // The first run also creates tfjs's lazily made tensors, so counting starts after it.
    const a = await generateVision(full, opts);
    const before = tf.memory().numTensors;
    const b = await generateVision(full, opts);
    expect(tf.memory().numTensors).toBe(before);
    expect(b.tokens).toEqual(a.tokens);
    expect(a.tokens).toHaveLength(257);
    expect(a.tokens[256]).toBe(8192);
    expect(new Set(a.tokens).size).toBeGreaterThan(50);
  });
});
