import { oneLineError } from '../helpers/tensors.js';
import { describe, it, expect } from '@jest/globals';
import { ConfigError, InputError, LwmError } from '../../ops/errors.js';
import { packDocuments, type PackDocument, type PackedRows } from '../../data/packing.js';
import { BatchIterator, epochPermutation, packedRowSource, ROW_FIELDS, type Batch, type BatchOptions, type BatchState } from '../../data/batches.js';
import { RING_LAYOUTS } from '../../ops/ring/layout.js';

// Small hand-made documents: distinct token ids so every row is recognisable; some with vision tokens.
function makeDocs(count: number, maxLen: number): PackDocument[] {
  const docs: PackDocument[] = [];
  for (let d = 0; d < count; d++) {
    const n = 2 + ((d * 7) % (maxLen - 1));
    const tokens = Array.from({ length: n }, (_, t) => 1000 * (d + 1) + t);
    const visionMask = tokens.map((_, t) => d % 3 === 0 && t > 0 && t < n - 1);
    const lossMask = tokens.map((_, t) => (t === 0 ? 0 : 1));
    docs.push({ tokens, visionMask, lossMask });
  }
  return docs;
}

// seqLen 12: a multiple of 2, 3, 4 (zigzag size 2) and 6 (zigzag size 3).
const packed: PackedRows = packDocuments(makeDocs(23, 12), { seqLen: 12, strategy: 'greedy' });
const source = packedRowSource(packed);
const N = packed.rows;

function drain(it: BatchIterator, count: number): Batch[] {
  return Array.from({ length: count }, () => it.next());
}

function oneLine(fn: () => unknown, cls: typeof LwmError = LwmError): string {
  const msg = oneLineError(fn, cls);
  expect(msg.length).toBeGreaterThan(10);
  return msg;
}

describe('packed fixture', () => {
  it('has enough rows and distinct rows', () => {
    expect(N).toBeGreaterThanOrEqual(7);
    const keys = new Set(Array.from({ length: N }, (_, i) => Array.from(source.row(i).inputTokens).join(',')));
    expect(keys.size).toBe(N);
  });
});

describe('order', () => {
  it('is deterministic per seed and epoch, differs across seeds and epochs', () => {
    const a = drain(new BatchIterator(source, { batchSize: 3, seed: 7 }), 10).map((b) => Array.from(b.rowIndices));
    const b = drain(new BatchIterator(source, { batchSize: 3, seed: 7 }), 10).map((b) => Array.from(b.rowIndices));
    const c = drain(new BatchIterator(source, { batchSize: 3, seed: 8 }), 10).map((b) => Array.from(b.rowIndices));
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    expect(Array.from(epochPermutation(N, 7, 0))).not.toEqual(Array.from(epochPermutation(N, 7, 1)));
    // epoch e uses seed + e
    expect(Array.from(epochPermutation(N, 7, 1))).toEqual(Array.from(epochPermutation(N, 8, 0)));
    expect(Array.from(epochPermutation(N, 7, 0, false))).toEqual(Array.from({ length: N }, (_, i) => i));
  });

  it('visits every row exactly once per epoch; steps and epochs count', () => {
    const it = new BatchIterator(source, { batchSize: 3, seed: 1 });
    const per = Math.ceil(N / 3);
    expect(it.stepsPerEpoch).toBe(per);
    const batches = drain(it, per * 3);
    for (let e = 0; e < 3; e++) {
      const ep = batches.slice(e * per, (e + 1) * per);
      expect(ep.every((b) => b.epoch === e)).toBe(true);
      expect(ep.map((b) => b.epochStep)).toEqual(Array.from({ length: per }, (_, i) => i));
      const seen = ep.flatMap((b) => Array.from(b.rowIndices)).sort((x, y) => x - y);
      expect(seen).toEqual(Array.from({ length: N }, (_, i) => i));
      expect(Array.from(ep.flatMap((b) => Array.from(b.rowIndices)))).toEqual(Array.from(epochPermutation(N, 1, e)));
    }
    expect(batches.map((b) => b.step)).toEqual(batches.map((_, i) => i));
    // the tail batch is smaller without dropLast
    expect(batches[per - 1]?.rows).toBe(N - 3 * (per - 1));
  });

  it('batch contents are the source rows', () => {
    const b = new BatchIterator(source, { batchSize: 4, seed: 3 }).next();
    expect(b.length).toBe(12);
    for (let r = 0; r < b.rows; r++) {
      const row = source.row(b.rowIndices[r] as number);
      for (const f of ROW_FIELDS) expect(Array.from(b[f].subarray(r * 12, (r + 1) * 12))).toEqual(Array.from(row[f]));
    }
  });

  it('dropLast skips the short tail', () => {
    const B = 3;
    expect(N % B).not.toBe(0);
    const it = new BatchIterator(source, { batchSize: B, seed: 2, dropLast: true });
    const per = Math.floor(N / B);
    expect(it.stepsPerEpoch).toBe(per);
    const batches = drain(it, per * 2);
    expect(batches.every((b) => b.rows === B && b.inputTokens.length === B * 12)).toBe(true);
    expect(batches.map((b) => b.epoch)).toEqual([...Array(per).fill(0), ...Array(per).fill(1)]);
    const ep0 = batches.slice(0, per).flatMap((b) => Array.from(b.rowIndices));
    expect(new Set(ep0).size).toBe(per * B);
    expect(ep0).toEqual(Array.from(epochPermutation(N, 2, 0)).slice(0, per * B));
  });

  it('shuffle off keeps source order', () => {
    const got = drain(new BatchIterator(source, { batchSize: 2, shuffle: false }), Math.ceil(N / 2)).flatMap((b) => Array.from(b.rowIndices));
    expect(got).toEqual(Array.from({ length: N }, (_, i) => i));
  });
});

describe('resume', () => {
  const cases: [string, BatchOptions][] = [
    ['plain', { batchSize: 3, seed: 11 }],
    ['dropLast', { batchSize: 3, seed: 11, dropLast: true }],
    ['ring', { batchSize: 2, seed: 5, ring: { size: 3, rank: 1, layout: 'zigzag' } }],
  ];
  for (const [name, opts] of cases) {
    it(`continues exactly (${name}) at every cut point over 3 epochs, through JSON`, () => {
      const ref = new BatchIterator(source, opts);
      const total = ref.stepsPerEpoch * 3 + 1;
      const expected = drain(ref, total);
      for (let cut = 0; cut < total; cut++) {
        const it = new BatchIterator(source, opts);
        drain(it, cut);
        const state = JSON.parse(JSON.stringify(it.state())) as BatchState;
        const resumed = BatchIterator.resume(source, opts, state);
        const rest = drain(resumed, Math.min(3, total - cut));
        rest.forEach((b, k) => expect(b).toEqual(expected[cut + k]));
      }
    });
  }

  it('a state from another rank of the same ring resumes (rows do not depend on rank)', () => {
    const o0: BatchOptions = { batchSize: 2, seed: 5, ring: { size: 2, rank: 0, layout: 'striped' } };
    const o1: BatchOptions = { ...o0, ring: { size: 2, rank: 1, layout: 'striped' } };
    const it0 = new BatchIterator(source, o0);
    drain(it0, 4);
    const r1 = BatchIterator.resume(source, o1, it0.state());
    const ref1 = new BatchIterator(source, o1);
    drain(ref1, 4);
    expect(r1.next()).toEqual(ref1.next());
  });

  it('refuses a state from a different source or options', () => {
    const opts: BatchOptions = { batchSize: 3, seed: 11 };
    const it = new BatchIterator(source, opts);
    drain(it, 2);
    const st = it.state();
    const other = packedRowSource(packDocuments(makeDocs(30, 12), { seqLen: 12, strategy: 'greedy' }));
    expect(other.rows).not.toBe(N);
    expect(oneLine(() => BatchIterator.resume(other, opts, st), InputError)).toMatch(/rows/);
    expect(oneLine(() => BatchIterator.resume(source, { ...opts, batchSize: 4 }, st), InputError)).toMatch(/batchSize/);
    expect(oneLine(() => BatchIterator.resume(source, { ...opts, seed: 12 }, st), InputError)).toMatch(/seed/);
    expect(oneLine(() => BatchIterator.resume(source, { ...opts, dropLast: true }, st), InputError)).toMatch(/dropLast/);
    expect(oneLine(() => BatchIterator.resume(source, { ...opts, ring: { size: 2, rank: 0, layout: 'contiguous' } }, st), InputError)).toMatch(/ring/);
    oneLine(() => BatchIterator.resume(source, opts, { ...st, cursor: 4 }), InputError);
    oneLine(() => BatchIterator.resume(source, opts, { ...st, epoch: -1 }), InputError);
    oneLine(() => BatchIterator.resume(source, opts, {} as BatchState), InputError);
  });
});

describe('ring shards', () => {
  for (const size of [2, 3]) {
    for (const layout of RING_LAYOUTS) {
      it(`size ${size} ${layout}: concatenated, un-permuted shards give back every field of every row`, () => {
        const L = 12;
        const c = L / size;
        const base: BatchOptions = { batchSize: 3, seed: 4 };
        const full = new BatchIterator(source, base);
        const shards = Array.from({ length: size }, (_, rank) => new BatchIterator(source, { ...base, ring: { size, rank, layout } }));
        for (let step = 0; step < full.stepsPerEpoch + 1; step++) {
          const want = full.next();
          const got = shards.map((s) => s.next());
          const covered = new Set<number>();
          for (const g of got) {
            expect(g.length).toBe(c);
            expect(Array.from(g.rowIndices)).toEqual(Array.from(want.rowIndices));
            g.globalIndices.forEach((x) => covered.add(x));
          }
          expect(covered.size).toBe(L);
          for (const f of ROW_FIELDS) {
            const rebuilt = new Float64Array(want.rows * L).fill(NaN);
            for (const g of got) {
              for (let r = 0; r < g.rows; r++) {
                for (let a = 0; a < c; a++) rebuilt[r * L + (g.globalIndices[a] as number)] = g[f][r * c + a] as number;
              }
            }
            expect(Array.from(rebuilt)).toEqual(Array.from(want[f]));
          }
        }
      });
    }
  }

  it('positions and segment ids follow their tokens (zigzag)', () => {
    const b = new BatchIterator(source, { batchSize: 1, shuffle: false, ring: { size: 2, rank: 1, layout: 'zigzag' } }).next();
    const row = source.row(0);
    b.globalIndices.forEach((g, a) => {
      expect(b.inputTokens[a]).toBe(row.inputTokens[g]);
      expect(b.positions[a]).toBe(row.positions[g]);
      expect(b.segmentIds[a]).toBe(row.segmentIds[g]);
      expect(b.lossWeights[a]).toBe(row.lossWeights[g]);
    });
    // zigzag rank 1 of 2 over 12 tokens holds chunks 1 and 2 of 4 (3 tokens each)
    expect(Array.from(b.globalIndices)).toEqual([3, 4, 5, 6, 7, 8]);
  });
});

describe('bad options', () => {
  it('give one-line errors', () => {
    expect(oneLine(() => new BatchIterator(source, { batchSize: 0 }), ConfigError)).toMatch(/batchSize/);
    expect(oneLine(() => new BatchIterator(source, { batchSize: 1.5 }), ConfigError)).toMatch(/batchSize/);
    expect(oneLine(() => new BatchIterator(source, { batchSize: 2, seed: 0.5 }), ConfigError)).toMatch(/seed/);
    expect(oneLine(() => new BatchIterator(source, { batchSize: N + 1, dropLast: true }), ConfigError)).toMatch(/dropLast/);
    // 12 is not a multiple of 2·4 = 8 (zigzag) nor of 5
    expect(oneLine(() => new BatchIterator(source, { batchSize: 2, ring: { size: 4, rank: 0, layout: 'zigzag' } }), InputError)).toMatch(/multiple of 8/);
    expect(oneLine(() => new BatchIterator(source, { batchSize: 2, ring: { size: 5, rank: 0, layout: 'striped' } }), InputError)).toMatch(/multiple of 5/);
    expect(oneLine(() => new BatchIterator(source, { batchSize: 2, ring: { size: 3, rank: 3, layout: 'striped' } }), ConfigError)).toMatch(/rank 3/);
    expect(oneLine(() => new BatchIterator(source, { batchSize: 2, ring: { size: 3, rank: -1, layout: 'striped' } }), ConfigError)).toMatch(/rank -1/);
    oneLine(() => new BatchIterator(source, { batchSize: 2, ring: { size: 2, rank: 0, layout: 'diagonal' as never } }), InputError);
  });
});
