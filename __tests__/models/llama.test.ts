import * as tf from '@tensorflow/tfjs';
import { describe, expect, it, afterAll } from '@jest/globals';
import { initParams, KVCache, LlamaModel, paramName, ParamStore, presetConfig } from '../../models/index.js';
import { expectNoLeaks, maxAbsDiff } from '../helpers/tensors.js';

// Larger-than-default init so attention and every layer visibly shape the output.
const config = presetConfig('tiny', { vocabSize: 512, maxSeqLen: 128, ropeTheta: 1e4 });
const model = new LlamaModel(config, initParams(config, 1, 0.2));
afterAll(() => model.dispose());

const ids = (row: number[]) => tf.tensor2d([row], [1, row.length], 'int32');
const tokens = [1, 17, 300, 42, 5, 99, 260, 7, 8, 11, 500, 3];

describe('LlamaModel', () => {
  it('returns logits [B, T, V]', () => {
    const y = model.forward(tf.tensor2d([tokens, tokens.slice().reverse()], [2, tokens.length], 'int32'));
    expect(y.shape).toEqual([2, tokens.length, 512]);
    expect(Array.from(y.dataSync()).every(Number.isFinite)).toBe(true);
  });

  it('token-by-token decoding with the KV cache equals the full forward (1e-4)', () => {
    const full = model.forward(ids(tokens)).dataSync();
    const cache = new KVCache(config.numLayers);
    const rows: number[] = [];
    // A 5-token prefill, then one token at a time.
    rows.push(...model.forward(ids(tokens.slice(0, 5)), { cache }).dataSync());
    for (let i = 5; i < tokens.length; i++) rows.push(...model.forward(ids([tokens[i]!]), { cache }).dataSync());
    expect(cache.length).toBe(tokens.length);
    cache.dispose();
    expect(maxAbsDiff(rows, full)).toBeLessThan(1e-4);
  });

  it('lastOnly returns the final position of the full forward', () => {
    const full = model.forward(ids(tokens));
    const last = model.forward(ids(tokens), { lastOnly: true });
    expect(last.shape).toEqual([1, 1, 512]);
    expect(maxAbsDiff(last.dataSync(), full.slice([0, tokens.length - 1, 0], [1, 1, 512]).dataSync())).toBeLessThan(1e-5);
  });

  it('chunked MLP and blockwise attention do not change the result', () => {
    const full = model.forward(ids(tokens)).dataSync();
    const chunked = model.forward(ids(tokens), { mlpChunkSize: 5, attentionBlockSize: 4 }).dataSync();
    expect(maxAbsDiff(chunked, full)).toBeLessThan(1e-5);
  });

  it('is causal: changing a later token leaves earlier logits unchanged', () => {
    const a = model.forward(ids(tokens)).slice([0, 0, 0], [1, 6, 512]).dataSync();
    const changed = tokens.slice();
    changed[8] = 77;
    const b = model.forward(ids(changed)).slice([0, 0, 0], [1, 6, 512]).dataSync();
    expect(maxAbsDiff(a, b)).toBe(0);
  });

  it('left padding with positions cumsum(mask)-1 gives the unpadded logits', () => {
    const row = tokens.slice(0, 6);
    const plain = model.forward(ids(row)).slice([0, 5, 0], [1, 1, 512]).dataSync();
    const padded = model.forward(ids([0, 0, ...row]), {
      attentionMask: tf.tensor2d([[0, 0, 1, 1, 1, 1, 1, 1]]),
      positions: tf.tensor2d([[0, 0, 0, 1, 2, 3, 4, 5]], [1, 8], 'int32'),
    });
    expect(maxAbsDiff(padded.slice([0, 7, 0], [1, 1, 512]).dataSync(), plain)).toBeLessThan(1e-4);
  });

  it('rejects ids outside the vocabulary and over-long inputs with clear messages', () => {
    expect(() => model.forward(ids([1, 512]))).toThrow(/token id 512 at position 1 is outside the vocabulary \[0, 512\)/);
    expect(() => model.forward(ids(new Array(129).fill(1)))).toThrow(/needs 129 positions, but the model's context is 128/);
    expect(() => model.forward(tf.tensor2d([[1.5]], [1, 1], 'float32'))).toThrow(/int32/);
  });

  it('100 decode steps leave tf.memory().numTensors unchanged', async () => {
    const cache = new KVCache(config.numLayers);
    const step = (t: number) => tf.tidy(() => model.forward(ids([t]), { cache, lastOnly: true })).dispose();
    step(1); // the cache now holds its tensors
    const before = tf.memory().numTensors;
    for (let i = 0; i < 100; i++) step((i * 37) % 512);
    expect(tf.memory().numTensors).toBe(before);
    cache.dispose();
    const input = ids(tokens);
    await expectNoLeaks(() => model.forward(input).dispose());
    input.dispose();
  });
});

describe('vision-language variant', () => {
  const vc = presetConfig('tiny', { vocabSize: 512, visionVocabSize: 300, maxSeqLen: 64, ropeTheta: 1e4 });
  const vparams = initParams(vc, 2, 0.2);
  const vision = new LlamaModel(vc, vparams);
  // The text model sharing wte, layers, ln_f and lm_head of the vision model.
  const shared = new Map<string, tf.Tensor>();
  for (const n of vparams.names()) if (n !== paramName.visionEmbed && n !== paramName.visionHead) shared.set(n, vparams.get(n));
  const text = new LlamaModel(presetConfig('tiny', { vocabSize: 512, maxSeqLen: 64, ropeTheta: 1e4 }), new ParamStore(shared));
  afterAll(() => vision.dispose());

  it('with vision mask all false equals the text model', () => {
    const t = ids(tokens);
    const a = vision.forward(t, { visionMask: tf.zeros([1, tokens.length], 'bool') as tf.Tensor2D }).dataSync();
    expect(maxAbsDiff(a, text.forward(t).dataSync())).toBeLessThan(1e-6);
  });

  it('a vision id embeds from the vision table, a text id from the text table', () => {
    // Same id 5 in both positions; swapping which one is vision must change the output.
    const t = ids([1, 5, 5, 6]);
    const vmA = tf.tensor2d([[0, 1, 0, 0]], [1, 4], 'bool');
    const vmB = tf.tensor2d([[0, 0, 1, 0]], [1, 4], 'bool');
    const a = vision.forward(t, { visionMask: vmA }).dataSync();
    const b = vision.forward(t, { visionMask: vmB }).dataSync();
    expect(maxAbsDiff(a, b)).toBeGreaterThan(1e-3);
    // A single vision-mode step embeds with the vision table, exactly as a vision-masked token.
    const cache = new KVCache(vc.numLayers);
    vision.forward(ids([1]), { cache }).dispose();
    const step = vision.forward(ids([5]), { cache, sampleMode: 'vision' }).dataSync();
    cache.dispose();
    const whole = vision.forward(ids([1, 5]), { visionMask: tf.tensor2d([[0, 1]], [1, 2], 'bool'), sampleMode: 'vision' }).slice([0, 1, 0], [1, 1, 300]).dataSync();
    expect(maxAbsDiff(step, whole)).toBeLessThan(1e-4);
  });

  it('heads have shapes [B, T, 8448-style vision vocab] and [B, T, V]; sampleMode all is refused for forward', () => {
    const h = vision.hidden(ids(tokens));
    expect(vision.visionLogits(h).shape).toEqual([1, tokens.length, 300]);
    expect(vision.textLogits(h).shape).toEqual([1, tokens.length, 512]);
    expect(() => vision.forward(ids(tokens), { sampleMode: 'all' })).toThrow(/two heads/);
    expect(() => vision.hidden(ids([5]), { sampleMode: 'all' })).toThrow(/ambiguous/);
    expect(() => text.visionLogits(h)).toThrow(/text model/);
  });
});
