import { describe, expect, it } from '@jest/globals';
import { Rng } from '../../../ops/sample.js';
import { generateVision, sampleVisionTokens, frameCodes } from '../../../src/vision/generation.js';
import type { PromptRow } from '../../../src/vision/prompts.js';
import { noisyLogits, peaks, StubStepper, V } from './stub.js';

const cond: PromptRow = { tokens: [1, 11, 12, 13, 14, 15] };
const uncond: PromptRow = { tokens: [1, 11, 12] };
const sample = (stub: StubStepper, o: { count: number; cfgScale: number; temperature?: number; topK?: number; seed?: number }) =>
  sampleVisionTokens(stub, cond, uncond, { temperature: o.temperature ?? 1, topK: o.topK ?? 0, cfgScale: o.cfgScale, count: o.count, rng: new Rng(o.seed ?? 0) });

/** The indices the loop must force to <eof>: every 257th generated token. */
const markerIndices = (tokens: number[]) => tokens.flatMap((t, i) => (t === 8192 ? [i] : []));

describe('vision sampling loop (stub model, spec 11 item 18)', () => {
  it('guides with uncond + s * (cond - uncond) on raw logits', async () => {
    for (const s of [0, 0.5, 2, 5]) {
      const stub = new StubStepper(noisyLogits);
      const tokens = await sample(stub, { count: 40, cfgScale: s, temperature: 0 });
      tokens.forEach((t, i) => {
        const c = noisyLogits('cond', i);
        const u = noisyLogits('uncond', i);
        let best = 0;
        for (let j = 1; j < V; j++) if (u[j]! + s * (c[j]! - u[j]!) > u[best]! + s * (c[best]! - u[best]!)) best = j;
        expect(t).toBe(best);
      });
    }
  });

  it('a scale that favours the condition flips the choice (cond prefers 4, uncond 3)', async () => {
    const logits = (row: 'cond' | 'uncond') => (row === 'cond' ? peaks({ 3: 2, 4: 1.5 }) : peaks({ 3: 1.9, 4: 0 }));
    expect((await sample(new StubStepper(logits), { count: 1, cfgScale: 0, temperature: 0 }))[0]).toBe(3);
    expect((await sample(new StubStepper(logits), { count: 1, cfgScale: 5, temperature: 0 }))[0]).toBe(4);
  });

  it('top-k keeps exactly k candidates, ties going to the lowest ids', async () => {
    // Ten ids tie for the top; k = 4 may only ever draw the first four of them.
    const tie = peaks({ 100: 5, 101: 5, 102: 5, 103: 5, 104: 5, 105: 5, 106: 5, 107: 5, 108: 5, 109: 5 }, -1);
    const stub = new StubStepper(() => tie);
    const tokens = await sample(stub, { count: 514, cfgScale: 5, topK: 4 });
    const drawn = new Set(tokens.filter((_, i) => (i + 1) % 257 !== 0));
    expect([...drawn].sort((a, b) => a - b)).toEqual([100, 101, 102, 103]);
    const wide = await sample(new StubStepper(() => tie), { count: 256, cfgScale: 5, topK: 12 });
    // k = 12 keeps the ten tied ids and two of the rest (ids 0 and 1, the lowest of the -1 ties).
    expect(new Set(wide).size).toBeGreaterThan(4);
    for (const t of wide) expect((t >= 100 && t <= 109) || t === 0 || t === 1).toBe(true);
  });

  it('forces <eof> at generated indices 256 and 513 and only there', async () => {
    const tokens = await sample(new StubStepper(() => peaks({ 8192: -50 })), { count: 514, cfgScale: 5 });
    expect(tokens).toHaveLength(514);
    expect(markerIndices(tokens)).toEqual([256, 513]);
    expect(tokens).not.toContain(8193);
  });

  it('appends the same token to the cond and uncond rows, one step per token after the prompt', async () => {
    const stub = new StubStepper(noisyLogits);
    const tokens = await sample(stub, { count: 300, cfgScale: 3, topK: 50 });
    expect(stub.batch!.rows).toBe(2);
    expect(stub.steps).toHaveLength(299);
    stub.steps.forEach((pair, i) => expect(pair).toEqual([tokens[i], tokens[i]]));
  });

  it('produces exactly 257 * n tokens even when code 2 (the text EOS id) is sampled every time', async () => {
    const tokens = await sample(new StubStepper(() => peaks({ 2: 100 })), { count: 3 * 257, cfgScale: 5 });
    expect(tokens).toHaveLength(771);
    tokens.forEach((t, i) => expect(t).toBe((i + 1) % 257 === 0 ? 8192 : 2));
  });

  it('left-pads the unconditional row with masked zeros and counts positions over real tokens', async () => {
    const stub = new StubStepper(noisyLogits);
    await sample(stub, { count: 1, cfgScale: 2 });
    const b = stub.batch!;
    expect(b.length).toBe(6);
    expect(Array.from(b.tokens)).toEqual([1, 11, 12, 13, 14, 15, 0, 0, 0, 1, 11, 12]);
    expect(Array.from(b.attentionMask)).toEqual([1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1]);
    expect(Array.from(b.positions)).toEqual([0, 1, 2, 3, 4, 5, 0, 0, 0, 0, 1, 2]);
    expect(Array.from(b.visionMask)).toEqual(new Array(12).fill(0));
  });

  it('with cfg scale 1 runs only the conditional row', async () => {
    const stub = new StubStepper(noisyLogits);
    const tokens = await sample(stub, { count: 20, cfgScale: 1, temperature: 0 });
    expect(stub.batch!.rows).toBe(1);
    stub.steps.forEach((s) => expect(s).toHaveLength(1));
    tokens.forEach((t, i) => {
      const c = noisyLogits('cond', i);
      expect(c[t]).toBe(Math.max(...c));
    });
  });

  it('a seed reproduces the draw; another seed changes it', async () => {
    const run = (seed: number) => sample(new StubStepper(noisyLogits), { count: 100, cfgScale: 5, topK: 8192, seed });
    const a = await run(7);
    expect(await run(7)).toEqual(a);
    expect(await run(8)).not.toEqual(a);
  });
});

describe('generateVision (stub model)', () => {
  it('video: the first frame from the image prompt, then the video prompt + that frame, 257 per frame', async () => {
    const stubs: StubStepper[] = [];
    const progress: number[] = [];
    const r = await generateVision(
      () => {
        stubs.push(new StubStepper(noisyLogits));
        return stubs[stubs.length - 1]!;
      },
      { prompt: 'Fireworks over the city', frames: 3, video: { cfgScale: 2 }, seed: 1, onProgress: (d, t) => progress.push(d / t) },
    );
    expect(stubs).toHaveLength(2);
    expect(stubs.every((s) => s.disposed)).toBe(true);
    expect(r.tokens).toHaveLength(771);
    expect(markerIndices(r.tokens)).toEqual([256, 513, 770]);
    expect(progress).toHaveLength(771);
    expect(progress[progress.length - 1]).toBe(1);
    // Stage 1: image prompt (28 ids) vs "<s><vision>" (4 ids), no vision tokens.
    const b1 = stubs[0]!.batch!;
    expect(b1.rows).toBe(2);
    expect(Array.from(b1.tokens.subarray(0, 28))).toEqual(r.prompts.image);
    expect(Array.from(b1.tokens.subarray(28 + 24, 56))).toEqual([1, 529, 4924, 29958]);
    // Stage 2: video prompt + first frame (257 vision ids) in each row.
    const b2 = stubs[1]!.batch!;
    const first = r.tokens.slice(0, 257);
    expect(b2.length).toBe(28 + 257);
    expect(Array.from(b2.tokens.subarray(0, 28))).toEqual(r.prompts.video);
    expect(Array.from(b2.tokens.subarray(28, 285))).toEqual(first);
    expect(Array.from(b2.tokens.subarray(285 + 24, 285 + 28))).toEqual([1, 529, 4924, 29958]);
    expect(Array.from(b2.tokens.subarray(285 + 28))).toEqual(first);
    for (const row of [0, 1]) {
      const vm = Array.from(b2.visionMask.subarray(row * 285, (row + 1) * 285));
      expect(vm).toEqual([...new Array(28).fill(0), ...new Array(257).fill(1)]);
    }
    expect(b2.positions[285 + 24]).toBe(0);
    expect(b2.positions[2 * 285 - 1]).toBe(4 + 257 - 1);
    expect(stubs[1]!.steps).toHaveLength(2 * 257 - 1);
    expect(Array.from(r.codes)).toEqual(Array.from(frameCodes(r.tokens)));
    expect(r.codes).toHaveLength(3 * 256);
    expect(Array.from(r.codes.subarray(256, 512))).toEqual(r.tokens.slice(257, 513));
  });

  it('image: LWM defaults (cfg 5: two rows, top-k 8192), one stage', async () => {
    const stubs: StubStepper[] = [];
    const r = await generateVision(() => {
      stubs.push(new StubStepper(() => peaks({ 7: 3, 9: 3 })));
      return stubs[stubs.length - 1]!;
    }, { prompt: 'a cat' });
    expect(stubs).toHaveLength(1);
    expect(stubs[0]!.batch!.rows).toBe(2);
    expect(r.frames).toBe(1);
    expect(r.tokens).toHaveLength(257);
    expect(r.tokens[256]).toBe(8192);
    expect(r.prompts.video).toBeUndefined();
  });

  it('refuses a sequence longer than the model context, before sampling', async () => {
    const stub = Object.assign(new StubStepper(noisyLogits), { contextLength: 200 });
    await expect(generateVision(() => stub, { prompt: 'x' })).rejects.toThrow(/needs 2\d\d positions but the model's context is 200/);
    expect(stub.batch).toBeNull();
    expect(stub.disposed).toBe(true);
  });
});
