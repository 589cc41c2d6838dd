import { describe, expect, it } from '@jest/globals';
import {
  allFinite, attentionMask, maxAbsErr, maxRelErr, naiveAttentionBackward, naiveAttentionForward,
  normRelErr, randn, randomSegments, toF64,
  type AttentionShape, type NaiveAttentionInput,
} from '../helpers/naiveAttention.js';

// Validates the test oracle itself (spec §8.2 item 1): finite differences, empty rows, agreement
// with a textbook softmax, and grouped-query semantics.

const SHAPE: AttentionShape = { b: 2, tq: 5, tk: 7, h: 4, hkv: 2, d: 3 };

function inputs(shape: AttentionShape, seed: number): Pick<NaiveAttentionInput, 'q' | 'k' | 'v' | 'shape'> {
  const { b, tq, tk, h, hkv, d } = shape;
  return {
    shape,
    q: toF64(randn(b * tq * h * d, seed)),
    k: toF64(randn(b * tk * hkv * d, seed + 1)),
    v: toF64(randn(b * tk * hkv * d, seed + 2)),
  };
}

/**
 * Causal with queries at positions r + 2 (the last Tq of Tk positions), packed segments and key
 * padding. Batch 1, rows 2 and 3 (segment 2, positions 4 and 5) see only the padded keys 4 and 5:
 * they are empty. Every other row sees 1 to 4 keys.
 */
function masked(shape: AttentionShape = SHAPE, seed = 11): NaiveAttentionInput {
  return {
    ...inputs(shape, seed),
    causal: true,
    qPos: Int32Array.from([2, 3, 4, 5, 6, 2, 3, 4, 5, 6]),
    kPos: Int32Array.from([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6]),
    qSeg: Int32Array.from([0, 1, 1, 1, 1, 1, 1, 2, 2, 2]),
    kSeg: Int32Array.from([0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 2, 2, 2]),
    keyValid: Uint8Array.from([1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1]),
  };
}
const EMPTY_ROWS: Array<[number, number]> = [[1, 2], [1, 3]]; // (batch, query row)
const PADDED_KEYS: Array<[number, number]> = [[0, 1], [1, 4], [1, 5]]; // (batch, key)

function lossTerms(x: NaiveAttentionInput, seed: number): { w: Float64Array; u: Float64Array } {
  const { b, tq, h, d } = x.shape;
  return { w: toF64(randn(b * tq * h * d, seed)), u: toF64(randn(b * h * tq, seed + 1)) };
}

/** sum(o * w) + sum over finite lse of lse * u. */
function loss(x: NaiveAttentionInput, w: Float64Array, u: Float64Array): number {
  const { o, lse } = naiveAttentionForward(x);
  let s = 0;
  for (let i = 0; i < o.length; i++) s += o[i]! * w[i]!;
  for (let i = 0; i < lse.length; i++) if (Number.isFinite(lse[i]!)) s += lse[i]! * u[i]!;
  return s;
}

/** Central differences of the loss w.r.t. every element of q, k and v. */
function finiteDifferences(x: NaiveAttentionInput, w: Float64Array, u: Float64Array, eps = 1e-6) {
  const grad = (name: 'q' | 'k' | 'v'): Float64Array => {
    const a = toF64(x[name]);
    const g = new Float64Array(a.length);
    for (let i = 0; i < a.length; i++) {
      const orig = a[i]!;
      a[i] = orig + eps;
      const up = loss({ ...x, [name]: a }, w, u);
      a[i] = orig - eps;
      const down = loss({ ...x, [name]: a }, w, u);
      a[i] = orig;
      g[i] = (up - down) / (2 * eps);
    }
    return g;
  };
  return { dq: grad('q'), dk: grad('k'), dv: grad('v') };
}

const rowOf = (shape: AttentionShape, bi: number, r: number) => {
  const n = shape.h * shape.d;
  return [(bi * shape.tq + r) * n, (bi * shape.tq + r + 1) * n] as const;
};

describe('naiveAttention reference', () => {
  const configs: Array<[string, () => NaiveAttentionInput]> = [
    ['causal offset + segments + padding (empty rows), GQA 4/2', () => masked()],
    ['causal only, offset queries, GQA 4/1', () => ({
      ...inputs({ ...SHAPE, hkv: 1 }, 21), causal: true, qPos: Int32Array.from([2, 3, 4, 5, 6, 2, 3, 4, 5, 6]),
    })],
    ['no mask, custom scale, MHA', () => ({ ...inputs({ ...SHAPE, hkv: 4 }, 31), scale: 0.7 })],
  ];

  it.each(configs)('gradients match central finite differences: %s', (_name, make) => {
    const x = make();
    const { w, u } = lossTerms(x, 101);
    const an = naiveAttentionBackward(x, w, u);
    const fd = finiteDifferences(x, w, u);
    for (const key of ['dq', 'dk', 'dv'] as const) {
      expect(allFinite(an[key])).toBe(true);
      // |fd - an| relative to the largest gradient entry, and elementwise with a small floor.
      expect(normRelErr(fd[key], an[key])).toBeLessThan(1e-7);
      expect(maxRelErr(fd[key], an[key], 1e-2)).toBeLessThan(1e-6);
      expect(maxAbsErr(fd[key], an[key])).toBeLessThan(1e-8);
    }
  });

  it('the lse gradient alone (dO = 0) matches finite differences of sum(lse * u)', () => {
    const x = masked();
    const { u } = lossTerms(x, 202);
    const w = new Float64Array(x.q.length);
    const an = naiveAttentionBackward(x, w, u);
    const fd = finiteDifferences(x, w, u);
    expect(maxAbsErr(an.dv, new Float64Array(an.dv.length))).toBe(0); // lse does not depend on v
    for (const key of ['dq', 'dk'] as const) expect(normRelErr(fd[key], an[key])).toBeLessThan(1e-7);
  });

  it('empty rows: o = 0, lse = -Infinity, zero gradient contributions, no NaN', () => {
    const x = masked();
    const { h, d, tq, tk, hkv } = x.shape;
    const mask = attentionMask(x);
    for (const [bi, r] of EMPTY_ROWS) for (let t = 0; t < tk; t++) expect(mask[(bi * tq + r) * tk + t]).toBe(0);
    const { o, lse } = naiveAttentionForward(x);
    expect(allFinite(o)).toBe(true);
    let emptyCount = 0;
    for (let bi = 0; bi < x.shape.b; bi++)
      for (let hi = 0; hi < h; hi++)
        for (let r = 0; r < tq; r++) {
          const L = lse[(bi * h + hi) * tq + r]!;
          const empty = EMPTY_ROWS.some(([eb, er]) => eb === bi && er === r);
          if (empty) { expect(L).toBe(-Infinity); emptyCount++; } else expect(Number.isFinite(L)).toBe(true);
        }
    expect(emptyCount).toBe(EMPTY_ROWS.length * h);
    for (const [bi, r] of EMPTY_ROWS) {
      const [s, e] = rowOf(x.shape, bi, r);
      for (let i = s; i < e; i++) expect(o[i]).toBe(0);
    }

    // Huge, even non-finite, upstream gradients on empty rows are ignored.
    const dO = toF64(randn(o.length, 5));
    const dLse = toF64(randn(lse.length, 6));
    for (const [bi, r] of EMPTY_ROWS) {
      const [s, e] = rowOf(x.shape, bi, r);
      for (let i = s; i < e; i++) dO[i] = 1e300;
      for (let hi = 0; hi < h; hi++) dLse[(bi * h + hi) * tq + r] = Number.NaN;
    }
    const g = naiveAttentionBackward(x, dO, dLse);
    for (const a of [g.dq, g.dk, g.dv]) expect(allFinite(a)).toBe(true);
    for (const [bi, r] of EMPTY_ROWS) {
      const [s, e] = rowOf(x.shape, bi, r);
      for (let i = s; i < e; i++) expect(g.dq[i]).toBe(0);
    }
    for (const [bi, t] of PADDED_KEYS) // padding keys are never visible: exactly zero gradient
      for (let i = (bi * tk + t) * hkv * d; i < (bi * tk + t + 1) * hkv * d; i++) {
        expect(g.dk[i]).toBe(0);
        expect(g.dv[i]).toBe(0);
      }

    // Everything masked: all outputs zero, lse all -Infinity, all gradients zero.
    const none = { ...x, keyValid: new Uint8Array(x.shape.b * tk) };
    const f = naiveAttentionForward(none);
    expect(f.o.every((y) => y === 0)).toBe(true);
    expect(f.lse.every((y) => y === -Infinity)).toBe(true);
    const gz = naiveAttentionBackward(none, dO, dLse);
    for (const a of [gz.dq, gz.dk, gz.dv]) expect(a.every((y) => y === 0)).toBe(true);
  });

  it('without masks equals a textbook softmax(QKᵀ/√d)V', () => {
    const shape: AttentionShape = { b: 2, tq: 6, tk: 9, h: 3, hkv: 3, d: 5 };
    const x = inputs(shape, 41);
    const { o, lse } = naiveAttentionForward(x);
    const { b, tq, tk, h, d } = shape;
    const oRef = new Float64Array(o.length);
    const lseRef = new Float64Array(lse.length);
    for (let bi = 0; bi < b; bi++)
      for (let hi = 0; hi < h; hi++)
        for (let r = 0; r < tq; r++) {
          const e: number[] = [];
          for (let t = 0; t < tk; t++) {
            let dot = 0;
            for (let c = 0; c < d; c++) dot += x.q[((bi * tq + r) * h + hi) * d + c]! * x.k[((bi * tk + t) * h + hi) * d + c]!;
            e.push(Math.exp(dot / Math.sqrt(d)));
          }
          const z = e.reduce((a, c) => a + c, 0);
          lseRef[(bi * h + hi) * tq + r] = Math.log(z);
          for (let c = 0; c < d; c++) {
            let acc = 0;
            for (let t = 0; t < tk; t++) acc += (e[t]! / z) * x.v[((bi * tk + t) * h + hi) * d + c]!;
            oRef[((bi * tq + r) * h + hi) * d + c] = acc;
          }
        }
    expect(maxAbsErr(o, oRef)).toBeLessThan(1e-14);
    expect(maxAbsErr(lse, lseRef)).toBeLessThan(1e-14);
    // Causal with default positions equals causal with explicit positions r / t.
    const c1 = naiveAttentionForward({ ...x, causal: true });
    const c2 = naiveAttentionForward({
      ...x, causal: true,
      qPos: Int32Array.from({ length: b * tq }, (_, i) => i % tq),
      kPos: Int32Array.from({ length: b * tk }, (_, i) => i % tk),
    });
    expect(maxAbsErr(c1.o, c2.o)).toBe(0);
    expect(maxAbsErr(c1.lse, c2.lse)).toBe(0);
  });

  it('grouped-query attention equals MHA with each kv head repeated (dk, dv summed over the group)', () => {
    const gqa = masked();
    const { b, tk, h, hkv, d } = gqa.shape;
    const grp = h / hkv;
    const repeat = (a: Float64Array | Float32Array): Float64Array => {
      const out = new Float64Array(b * tk * h * d);
      for (let bt = 0; bt < b * tk; bt++)
        for (let hi = 0; hi < h; hi++)
          for (let c = 0; c < d; c++) out[(bt * h + hi) * d + c] = a[(bt * hkv + Math.floor(hi / grp)) * d + c]!;
      return out;
    };
    const mha: NaiveAttentionInput = { ...gqa, k: repeat(gqa.k), v: repeat(gqa.v), shape: { ...gqa.shape, hkv: h } };
    const fg = naiveAttentionForward(gqa);
    const fm = naiveAttentionForward(mha);
    expect(maxAbsErr(fg.o, fm.o)).toBe(0);
    expect(maxAbsErr(fg.lse, fm.lse)).toBe(0);
    const { w, u } = lossTerms(gqa, 303);
    const gg = naiveAttentionBackward(gqa, w, u);
    const gm = naiveAttentionBackward(mha, w, u);
    expect(maxAbsErr(gg.dq, gm.dq)).toBe(0);
    const fold = (a: Float64Array): Float64Array => {
      const out = new Float64Array(b * tk * hkv * d);
      for (let bt = 0; bt < b * tk; bt++)
        for (let hi = 0; hi < h; hi++)
          for (let c = 0; c < d; c++) out[(bt * hkv + Math.floor(hi / grp)) * d + c]! += a[(bt * h + hi) * d + c]!;
      return out;
    };
    expect(maxAbsErr(gg.dk, fold(gm.dk))).toBeLessThan(1e-14);
    expect(maxAbsErr(gg.dv, fold(gm.dv))).toBeLessThan(1e-14);
  });

  it('key order does not matter when positions, segments and validity travel with the keys', () => {
    const x = masked();
    const { b, tk, hkv, d } = x.shape;
    const perm = [4, 0, 6, 2, 5, 1, 3]; // new key t' holds old key perm[t']
    const pk = <T extends Float64Array | Float32Array | Int32Array | Uint8Array>(a: T, width: number): T => {
      const out = a.slice() as T;
      for (let bi = 0; bi < b; bi++)
        for (let t = 0; t < tk; t++)
          for (let c = 0; c < width; c++) out[(bi * tk + t) * width + c] = a[(bi * tk + perm[t]!) * width + c]!;
      return out;
    };
    const y: NaiveAttentionInput = {
      ...x, k: pk(x.k, hkv * d), v: pk(x.v, hkv * d),
      kPos: pk(x.kPos!, 1), kSeg: pk(x.kSeg!, 1), keyValid: pk(x.keyValid!, 1),
    };
    const fx = naiveAttentionForward(x), fy = naiveAttentionForward(y);
    expect(maxAbsErr(fx.o, fy.o)).toBeLessThan(1e-14);
    expect(maxAbsErr(fx.lse, fy.lse)).toBeLessThan(1e-14);
    const { w, u } = lossTerms(x, 404);
    const gx = naiveAttentionBackward(x, w, u), gy = naiveAttentionBackward(y, w, u);
    expect(maxAbsErr(gx.dq, gy.dq)).toBeLessThan(1e-14);
    expect(maxAbsErr(pk(gx.dk, hkv * d), gy.dk)).toBeLessThan(1e-14);
    expect(maxAbsErr(pk(gx.dv, hkv * d), gy.dv)).toBeLessThan(1e-14);
  });

  it("precision 'float32' gives a float32-rounded baseline close to float64", () => {
    const x = masked({ b: 2, tq: 5, tk: 7, h: 4, hkv: 2, d: 3 }, 51);
    const f64 = naiveAttentionForward(x);
    const f32 = naiveAttentionForward({ ...x, precision: 'float32' });
    const e = maxAbsErr(f32.o, f64.o);
    expect(e).toBeGreaterThan(0);
    expect(e).toBeLessThan(1e-5);
    expect(maxAbsErr(f32.lse, f64.lse)).toBeLessThan(1e-5);
    expect(f32.o.every((y) => Math.fround(y) === y)).toBe(true);
    const { w, u } = lossTerms(x, 505);
    const g64 = naiveAttentionBackward(x, w, u);
    const g32 = naiveAttentionBackward({ ...x, precision: 'float32' }, w, u);
    for (const key of ['dq', 'dk', 'dv'] as const) expect(maxAbsErr(g32[key], g64[key])).toBeLessThan(1e-5);
  });

  it('rejects inconsistent inputs', () => {
    const x = masked();
    expect(() => naiveAttentionForward({ ...x, shape: { ...x.shape, hkv: 3 } })).toThrow(/not a multiple/);
    expect(() => naiveAttentionForward({ ...x, q: x.q.subarray(1) })).toThrow(/q has length/);
    expect(() => naiveAttentionForward({ ...x, kSeg: undefined })).toThrow(/together/);
    expect(() => naiveAttentionBackward(x, new Float64Array(3))).toThrow(/dO has length/);
  });
});

describe('test utilities', () => {
  it('randn is deterministic and standard normal', () => {
    const a = randn(20001, 7);
    expect(maxAbsErr(a, randn(20001, 7))).toBe(0);
    expect(maxAbsErr(a, randn(20001, 8))).toBeGreaterThan(0);
    let m = 0, s = 0;
    for (const y of a) m += y;
    m /= a.length;
    for (const y of a) s += (y - m) ** 2;
    s /= a.length;
    expect(Math.abs(m)).toBeLessThan(0.03);
    expect(Math.abs(s - 1)).toBeLessThan(0.05);
    expect(allFinite(a)).toBe(true);
  });

  it('randomSegments packs uneven contiguous documents, short and long', () => {
    const b = 3, t = 64;
    const seg = randomSegments(b, t, 9);
    expect(maxAbsErr(seg, randomSegments(b, t, 9))).toBe(0);
    for (let bi = 0; bi < b; bi++) {
      const row = Array.from(seg.subarray(bi * t, (bi + 1) * t));
      expect(row[0]).toBe(0);
      const lengths: number[] = [];
      let len = 1;
      for (let i = 1; i <= t; i++) {
        if (i < t && row[i] === row[i - 1]) { len++; continue; }
        if (i < t) expect(row[i]).toBe(row[i - 1]! + 1);
        lengths.push(len);
        len = 1;
      }
      expect(lengths.reduce((a, c) => a + c, 0)).toBe(t);
      expect(lengths.some((l) => l < 3)).toBe(true);
      expect(lengths.some((l) => l >= Math.ceil(t / 3))).toBe(true);
      expect(lengths.length).toBeGreaterThanOrEqual(3);
    }
    // Different rows are cut differently; firstId shifts the ids.
    expect(maxAbsErr(seg.subarray(0, t), seg.subarray(t, 2 * t))).toBeGreaterThan(0);
    const shifted = randomSegments(b, t, 9, { firstId: 10 });
    expect(maxAbsErr(shifted, seg.map((y) => y + 10))).toBe(0);
    expect(randomSegments(1, 1, 3)).toEqual(Int32Array.from([0]));
  });

  it('error helpers treat matching infinities as equal and NaN as infinite error', () => {
    expect(maxAbsErr([1, -Infinity, 3], [1, -Infinity, 3.5])).toBe(0.5);
    expect(maxAbsErr([1, -Infinity], [1, 0])).toBe(Infinity);
    expect(maxAbsErr([Number.NaN], [Number.NaN])).toBe(Infinity);
    expect(maxRelErr([2, 0], [1, 0])).toBe(1);
    expect(maxRelErr([1e-9], [0], 1e-3)).toBeCloseTo(1e-6, 15);
    expect(normRelErr([1, 2.5], [1, 2])).toBe(0.25);
    expect(() => maxAbsErr([1], [1, 2])).toThrow(/length mismatch/);
    expect(allFinite([1, -Infinity])).toBe(false);
  });
});
