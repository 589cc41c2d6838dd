import { describe, it, expect } from '@jest/globals';
import { InputError } from '../../ops/errors.js';
import { computeLossWeights, packDocuments, type PackDocument } from '../../data/packing.js';
import { mulberry32 } from '../../data/batches.js';
import { processJsonl } from '../../data/examples.js';

const T = true;
const F = false;
// A: text prompt/answer; B: generation doc with vision targets; C: short text; D: 9 tokens (split at seqLen 8).
const A: PackDocument = { tokens: [1, 10, 11, 2], lossMask: [0, 0, 1, 1] };
const B: PackDocument = { tokens: [1, 40, 41, 7, 8, 8193, 2], visionMask: [F, F, F, T, T, T, F], lossMask: [0, 0, 0, 1, 1, 1, 1] };
const C: PackDocument = { tokens: [1, 50, 2], lossMask: [0, 1, 1] };
const D: PackDocument = { tokens: [100, 101, 102, 103, 104, 105, 106, 107, 108] };
const docs = [A, B, C, D];

const f32 = (xs: number[]) => Array.from(new Float32Array(xs));

describe('masked packing, by hand (seqLen 8)', () => {
  // FFD order: D[0:8] (8), B (7), A (4), C (3), D[8:9] (1)
  //   row 0: D[0:8]            row 1: B + D[8:9]        row 2: A + C + 1 pad
  const packed = packDocuments(docs, { seqLen: 8 });

  it('rows, inputs, targets, masks, segment ids and positions', () => {
    expect(packed.rows).toBe(3);
    expect(Array.from(packed.inputTokens)).toEqual([
      100, 101, 102, 103, 104, 105, 106, 107,
      1, 40, 41, 7, 8, 8193, 2, 108,
      1, 10, 11, 2, 1, 50, 2, 0,
    ]);
    expect(Array.from(packed.targetTokens)).toEqual([
      101, 102, 103, 104, 105, 106, 107, 108, // the split chunk's last target is the next chunk's first token
      40, 41, 7, 8, 8193, 2, 0, 0,
      10, 11, 2, 0, 50, 2, 0, 0,
    ]);
    expect(Array.from(packed.inputVisionMask)).toEqual([
      0, 0, 0, 0, 0, 0, 0, 0,
      0, 0, 0, 1, 1, 1, 0, 0,
      0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    expect(Array.from(packed.targetVisionMask)).toEqual([
      0, 0, 0, 0, 0, 0, 0, 0,
      0, 0, 1, 1, 1, 0, 0, 0,
      0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    expect(Array.from(packed.segmentIds)).toEqual([
      0, 0, 0, 0, 0, 0, 0, 0,
      0, 0, 0, 0, 0, 0, 0, 1,
      0, 0, 0, 0, 1, 1, 1, -1,
    ]);
    expect(Array.from(packed.positions)).toEqual([
      0, 1, 2, 3, 4, 5, 6, 7,
      0, 1, 2, 3, 4, 5, 6, 0,
      0, 1, 2, 3, 0, 1, 2, 0,
    ]);
    expect(Array.from(packed.lossMask)).toEqual([
      1, 1, 1, 1, 1, 1, 1, 1,
      0, 0, 1, 1, 1, 1, 0, 0,
      0, 1, 1, 0, 1, 1, 0, 0,
    ]);
    expect(packed.placements.map((r) => r.map((p) => [p.doc, p.docStart, p.length, p.rowStart, p.segment]))).toEqual([
      [[3, 0, 8, 0, 0]],
      [[1, 0, 7, 0, 0], [3, 8, 1, 7, 1]],
      [[0, 0, 4, 0, 0], [2, 0, 3, 4, 1]],
    ]);
    expect(packed.tokens).toBe(23);
    expect(packed.paddingTokens).toBe(1);
    expect(packed.paddingWaste).toBeCloseTo(1 / 24, 12);
  });

  it("LWM weighting: per row 0.5 x vision + 0.5 x text, mean over the batch's rows", () => {
    // one batch of 3 rows: row 0 8 text targets; row 1 3 vision + 1 text; row 2 4 text
    const t0 = 0.5 / (3 * 8);
    const v1 = 0.5 / (3 * 3);
    const t1 = 0.5 / 3;
    const t2 = 0.5 / (3 * 4);
    expect(Array.from(packed.lossWeights)).toEqual(f32([
      t0, t0, t0, t0, t0, t0, t0, t0,
      0, 0, v1, v1, v1, t1, 0, 0,
      0, t2, t2, 0, t2, t2, 0, 0,
    ]));
    // per-row batches (batchRows 1): each row is its own mean
    const perRow = packDocuments(docs, { seqLen: 8, batchRows: 1 });
    expect(Array.from(perRow.lossWeights)).toEqual(f32([
      1 / 16, 1 / 16, 1 / 16, 1 / 16, 1 / 16, 1 / 16, 1 / 16, 1 / 16,
      0, 0, 1 / 6, 1 / 6, 1 / 6, 1 / 2, 0, 0,
      0, 1 / 8, 1 / 8, 0, 1 / 8, 1 / 8, 0, 0,
    ]));
    const text = packDocuments(docs, { seqLen: 8, weighting: { mode: 'lwm-text' } });
    expect(Array.from(text.lossWeights)).toEqual(f32([
      1 / 24, 1 / 24, 1 / 24, 1 / 24, 1 / 24, 1 / 24, 1 / 24, 1 / 24,
      0, 0, 1 / 12, 1 / 12, 1 / 12, 1 / 12, 0, 0,
      0, 1 / 12, 1 / 12, 0, 1 / 12, 1 / 12, 0, 0,
    ]));
  });

  it('per-token mean with a vision weight', () => {
    // valid targets: 13 text (weight 1) + 3 vision (weight 2) = 19
    const tok = packDocuments(docs, { seqLen: 8, weighting: { mode: 'token', visionWeight: 2 } });
    const t = 1 / 19;
    const v = 2 / 19;
    expect(Array.from(tok.lossWeights)).toEqual(f32([
      t, t, t, t, t, t, t, t,
      0, 0, v, v, v, t, 0, 0,
      0, t, t, 0, t, t, 0, 0,
    ]));
    const sum = tok.lossWeights.reduce((a, b) => a + b, 0);
    expect(sum).toBeCloseTo(1, 6);
    const mask = packDocuments(docs, { seqLen: 8, weighting: { mode: 'mask' } });
    expect(Array.from(mask.lossWeights)).toEqual(Array.from(mask.lossMask));
    expect(() => computeLossWeights({ rows: 1, seqLen: 1, lossMask: [1], targetVisionMask: [0] }, { mode: 'token', visionWeight: -1 }, 1)).toThrow(InputError);
  });

  it('greedy keeps corpus order; overlong documents can be rejected', () => {
    const g = packDocuments(docs, { seqLen: 8, strategy: 'greedy' });
    expect(g.placements.map((r) => r.map((p) => [p.doc, p.docStart]))).toEqual([[[0, 0]], [[1, 0]], [[2, 0]], [[3, 0]], [[3, 8]]]);
    expect(g.paddingTokens).toBe(5 * 8 - 23);
    expect(() => packDocuments(docs, { seqLen: 8, overlong: 'reject' })).toThrow(/document 3 has 9 tokens, more than the row length 8/);
    expect(() => packDocuments([{ tokens: [1, 2], lossMask: [1] }], { seqLen: 8 })).toThrow(/document 0: 1 loss-mask entries for 2 tokens/);
    expect(packDocuments([], { seqLen: 8 }).rows).toBe(0);
  });
});

const rng = mulberry32;

describe('padding waste on a realistic mixed set', () => {
  it('first-fit-decreasing wastes < 5% of a 4096-token layout', () => {
    const r = rng(12345);
    const logUniform = (lo: number, hi: number) => Math.round(Math.exp(Math.log(lo) + r() * (Math.log(hi) - Math.log(lo))));
    const doc = (textLen: number, frames: number): PackDocument => {
      const n = textLen + (frames > 0 ? 257 * frames + 6 : 0);
      const visionMask = Array.from({ length: n }, (_, i) => frames > 0 && i >= textLen + 3 && i < n - 3);
      return { tokens: Array.from({ length: n }, (_, i) => i % 8192), visionMask, lossMask: new Array<number>(n).fill(1) };
    };
    const set: PackDocument[] = [];
    for (let i = 0; i < 150; i++) set.push(doc(logUniform(30, 3000), 0)); // text documents
    for (let i = 0; i < 100; i++) set.push(doc(logUniform(10, 200), 1)); // image-text
    for (let i = 0; i < 40; i++) set.push(doc(logUniform(10, 200), 2 + Math.floor(r() * 7))); // 2-8 frame clips
    for (let i = 0; i < 10; i++) set.push(doc(logUniform(5000, 20000), 0)); // books, split
    const ffd = packDocuments(set, { seqLen: 4096 });
    const greedy = packDocuments(set, { seqLen: 4096, strategy: 'greedy' });
    const lower = Math.ceil(ffd.tokens / 4096);
    console.log(
      `padding waste, ${set.length} docs, ${ffd.tokens} tokens, seqLen 4096: ` +
        `FFD ${(100 * ffd.paddingWaste).toFixed(2)}% (${ffd.rows} rows, lower bound ${lower}); ` +
        `greedy in order ${(100 * greedy.paddingWaste).toFixed(2)}% (${greedy.rows} rows)`,
    );
    expect(ffd.tokens).toBe(set.reduce((a, d) => a + d.tokens.length, 0));
    expect(ffd.paddingWaste).toBeLessThan(0.05);
    // every placed token's target is the next token of its document
    let bad = 0;
    for (const row of ffd.placements) {
      for (const p of row) {
        const d = set[p.doc] as PackDocument;
        for (let k = 0; k < p.length; k++) {
          const o = p.row * 4096 + p.rowStart + k;
          const t = p.docStart + k;
          if (ffd.inputTokens[o] !== d.tokens[t] || ffd.positions[o] !== k || ffd.segmentIds[o] !== p.segment) bad++;
          if (t + 1 < d.tokens.length ? ffd.targetTokens[o] !== d.tokens[t + 1] : ffd.lossMask[o] !== 0) bad++;
        }
      }
    }
    expect(bad).toBe(0);
  });

  it('packs processed JSONL examples end to end', () => {
    const codes = Array.from({ length: 512 }, (_, i) => i);
    const jsonl = [
      { fields: '[vision+question],answer', vision: codes, question: 'What?', answer: 'A clip.' },
      { fields: 'text', text: 'Plain text document.' },
    ].map((o) => JSON.stringify(o)).join('\n');
    const exs = processJsonl(jsonl);
    expect(exs[0]?.tokens.length).toBeGreaterThan(520);
    const p = packDocuments(exs, { seqLen: 1024 });
    expect(p.rows).toBe(1);
    // the answer is text, so the LWM vision half is empty in this row; text weights sum to 0.5
    const s = p.lossWeights.reduce((a, b) => a + b, 0);
    expect(s).toBeCloseTo(0.5, 6);
    expect(Array.from(p.targetVisionMask).filter((v, i) => v && (p.lossMask[i] as number) > 0).length).toBe(0);
  });
});
