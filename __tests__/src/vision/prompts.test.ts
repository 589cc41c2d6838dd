import { describe, expect, it } from '@jest/globals';
import { Rng } from '../../../ops/sample.js';
import { conditionalPrompt, leftPadBatch, visionPromptIds } from '../../../src/vision/prompts.js';
import { classifierFreeGuidance, sampleVisionToken, topKIndices } from '../../../src/vision/sampling.js';

// lwm-spec 3.7, "Fireworks over the city" with the original tokenizer (no automatic BOS).
const IMAGE = [1, 887, 526, 263, 8444, 20255, 29889, 3148, 1001, 29901, 3251, 403, 385, 1967, 310, 6438, 13129, 975, 278, 4272, 319, 1799, 9047, 13566, 29901, 529, 4924, 29958];
const VIDEO = [...IMAGE.slice(0, 12), 263, 4863, ...IMAGE.slice(14)];
const UNCOND = [1, 529, 4924, 29958];

describe('vision generation prompts (spec 3.7)', () => {
  it('image, video and unconditional prompt ids are exactly LWM\'s', () => {
    expect(conditionalPrompt('image', 'X')).toBe('<s>You are a helpful assistant. USER: Generate an image of X ASSISTANT: <vision>');
    const img = visionPromptIds('image', 'Fireworks over the city');
    const vid = visionPromptIds('video', 'Fireworks over the city');
    expect(img.conditional).toEqual(IMAGE);
    expect(vid.conditional).toEqual(VIDEO);
    expect(img.unconditional).toEqual(UNCOND);
    expect(vid.unconditional).toEqual(UNCOND);
  });

  it('an empty description is refused', () => {
    expect(() => visionPromptIds('image', '  ')).toThrow(/description is empty/);
  });

  it('leftPadBatch: pads left with masked 0, positions cumsum(mask) - 1, vision mask carried', () => {
    const b = leftPadBatch([{ tokens: [5, 6, 7], visionMask: [false, true, true] }, { tokens: [8] }]);
    expect(b.padded).toBe(true);
    expect(Array.from(b.tokens)).toEqual([5, 6, 7, 0, 0, 8]);
    expect(Array.from(b.attentionMask)).toEqual([1, 1, 1, 0, 0, 1]);
    expect(Array.from(b.visionMask)).toEqual([0, 1, 1, 0, 0, 0]);
    expect(Array.from(b.positions)).toEqual([0, 1, 2, 0, 0, 0]);
    expect(leftPadBatch([{ tokens: [1, 2] }]).padded).toBe(false);
  });
});

describe('vision sampling pieces', () => {
  it('classifierFreeGuidance is uncond + s * (cond - uncond) in float32', () => {
    const g = classifierFreeGuidance([1, 2, -3], [0.5, 4, -1], 5);
    expect(Array.from(g)).toEqual([3, -6, -11]);
  });

  it('topKIndices keeps exactly k, lowest ids first among ties at the cut', () => {
    expect(Array.from(topKIndices([1, 3, 3, 2, 3, 0], 2))).toEqual([1, 2]);
    expect(Array.from(topKIndices([1, 3, 3, 2, 3, 0], 4))).toEqual([1, 2, 3, 4]);
    expect(Array.from(topKIndices([5, 5, 5], 0))).toEqual([0, 1, 2]);
    const big = Float32Array.from({ length: 8448 }, (_, i) => (i * 7919) % 8448);
    const k = topKIndices(big, 8192);
    expect(k).toHaveLength(8192);
    const kept = new Set(k);
    for (let i = 0; i < big.length; i++) expect(kept.has(i)).toBe(big[i]! >= 256);
  });

  it('sampleVisionToken: temperature 0 is argmax; a draw never leaves the top k', () => {
    const rng = new Rng(3);
    expect(sampleVisionToken([0, 9, 1], { temperature: 0, topK: 0 }, rng)).toBe(1);
    const seen = new Set<number>();
    for (let i = 0; i < 400; i++) seen.add(sampleVisionToken([4, 0, 4, 4, 3, 4], { temperature: 2, topK: 3 }, rng));
    expect([...seen].sort()).toEqual([0, 2, 3]);
    expect(() => sampleVisionToken([0, NaN], { temperature: 1, topK: 0 }, rng)).toThrow(/NaN/);
  });
});
