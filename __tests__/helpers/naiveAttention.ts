/**
 * Plain-JS reference ("naive") attention with gradients: the float64 test oracle for the blockwise
 * and ring attention ops. No tfjs, so it can run anywhere and cannot share a bug with the op.
 *
 * Semantics (shared/docs/ringattention-spec.md §1, §3.5, §4):
 * - q [B, Tq, H, D], k and v [B, Tk, Hkv, D], row-major. Query head h reads kv head floor(h / (H/Hkv)).
 * - Key t is visible to query r (same batch row) iff
 *     keyValid[t] (if given) ∧ qSeg[r] == kSeg[t] (if given) ∧ kPos[t] <= qPos[r] (if causal).
 *   Positions default to the index (r, t); positions and segments travel with the tokens, so any
 *   layout (contiguous, striped, zigzag, shuffled) is expressed by passing the right arrays.
 * - Scores are materialized; masked scores are excluded (never a finite sentinel).
 * - A row with no visible key: o = 0, lse = -Infinity, and it contributes nothing to any gradient.
 * - Backward uses the direct formulas of §4: P = exp(s - L), D = rowsum(dO ∘ O),
 *   dS = P ∘ (dP - D + dLse), dQ = τ dS K, dK = τ dSᵀ Q, dV = Pᵀ dO.
 *
 * `precision: 'float32'` rounds every intermediate to float32 (Math.fround). That gives a
 * "naive fp32" baseline for the flash-attn style tolerance of spec §8.2 item 9:
 *   error(op fp32 vs naive fp64) <= 2 · error(naive fp32 vs naive fp64) + 1e-6.
 */

import { mulberry32 } from '../../data/batches.js';

export interface AttentionShape {
  b: number;
  tq: number;
  tk: number;
  h: number;
  hkv: number;
  d: number;
}

export interface NaiveAttentionInput {
  /** [B, Tq, H, D] row-major. */
  q: Float64Array | Float32Array;
  /** [B, Tk, Hkv, D] row-major. */
  k: Float64Array | Float32Array;
  /** [B, Tk, Hkv, D] row-major. */
  v: Float64Array | Float32Array;
  shape: AttentionShape;
  /** Key t visible to query r only if kPos[t] <= qPos[r]. */
  causal?: boolean;
  /** [B*Tq] global positions of the queries (default r). */
  qPos?: Int32Array;
  /** [B*Tk] global positions of the keys (default t). */
  kPos?: Int32Array;
  /** [B*Tq] segment ids; must be given together with kSeg. Visible only if equal. */
  qSeg?: Int32Array;
  /** [B*Tk] segment ids; must be given together with qSeg. */
  kSeg?: Int32Array;
  /** [B*Tk] 1 = real key, 0 = padding (never visible). */
  keyValid?: Uint8Array;
  /** Softmax scale τ (default 1/sqrt(d)). */
  scale?: number;
  /** 'float64' (default) or 'float32': round every intermediate to float32 (baseline error). */
  precision?: 'float64' | 'float32';
}

export interface NaiveAttentionOutput {
  /** [B, Tq, H, D]; 0 on rows with no visible key. */
  o: Float64Array;
  /** [B, H, Tq]; -Infinity on rows with no visible key. */
  lse: Float64Array;
}

export interface NaiveAttentionGrads {
  /** [B, Tq, H, D] */
  dq: Float64Array;
  /** [B, Tk, Hkv, D] */
  dk: Float64Array;
  /** [B, Tk, Hkv, D] */
  dv: Float64Array;
}

type Arr = Float64Array | Float32Array;
const identity = (x: number): number => x;

interface Prepared {
  b: number; tq: number; tk: number; h: number; hkv: number; d: number; g: number;
  scale: number;
  round: (x: number) => number;
  mask: Uint8Array; // [B, Tq, Tk]
}

function checkLength(name: string, a: ArrayLike<number> | undefined, n: number): void {
  if (a !== undefined && a.length !== n) throw new Error(`naiveAttention: ${name} has length ${a.length}, expected ${n}`);
}

function prepare(x: NaiveAttentionInput): Prepared {
  const { b, tq, tk, h, hkv, d } = x.shape;
  for (const [name, n] of Object.entries(x.shape)) {
    if (!Number.isInteger(n) || n < 0) throw new Error(`naiveAttention: shape.${name} = ${n} is not a non-negative integer`);
  }
  if (hkv < 1 || h % hkv !== 0) throw new Error(`naiveAttention: ${h} query heads are not a multiple of ${hkv} kv heads`);
  if (d < 1) throw new Error('naiveAttention: head dim must be >= 1');
  checkLength('q', x.q, b * tq * h * d);
  checkLength('k', x.k, b * tk * hkv * d);
  checkLength('v', x.v, b * tk * hkv * d);
  checkLength('qPos', x.qPos, b * tq);
  checkLength('kPos', x.kPos, b * tk);
  checkLength('qSeg', x.qSeg, b * tq);
  checkLength('kSeg', x.kSeg, b * tk);
  checkLength('keyValid', x.keyValid, b * tk);
  if ((x.qSeg === undefined) !== (x.kSeg === undefined)) throw new Error('naiveAttention: give qSeg and kSeg together');
  const scale = x.scale ?? 1 / Math.sqrt(d);
  const round = x.precision === 'float32' ? Math.fround : identity;
  return { b, tq, tk, h, hkv, d, g: h / hkv, scale: round(scale), round, mask: attentionMask(x) };
}

/** The visibility mask [B, Tq, Tk] (1 = key t visible to query r), shared by all heads. */
export function attentionMask(x: NaiveAttentionInput): Uint8Array {
  const { b, tq, tk } = x.shape;
  const { causal = false, qPos, kPos, qSeg, kSeg, keyValid } = x;
  const mask = new Uint8Array(b * tq * tk);
  for (let bi = 0; bi < b; bi++)
    for (let r = 0; r < tq; r++) {
      const qi = bi * tq + r;
      const qp = qPos ? qPos[qi]! : r;
      for (let t = 0; t < tk; t++) {
        const ki = bi * tk + t;
        if (keyValid && !keyValid[ki]) continue;
        if (qSeg && kSeg && qSeg[qi] !== kSeg[ki]) continue;
        if (causal && (kPos ? kPos[ki]! : t) > qp) continue;
        mask[qi * tk + t] = 1;
      }
    }
  return mask;
}

/** Masked logit τ·⟨q_r, k_t⟩ for one (batch, head, row, key). */
function score(x: NaiveAttentionInput, p: Prepared, bi: number, hi: number, r: number, t: number): number {
  const { tq, tk, h, hkv, d, g, round } = p;
  const qo = ((bi * tq + r) * h + hi) * d;
  const ko = ((bi * tk + t) * hkv + Math.floor(hi / g)) * d;
  let dot = 0;
  for (let c = 0; c < d; c++) dot = round(dot + round(x.q[qo + c]! * x.k[ko + c]!));
  return round(dot * p.scale);
}

function forward(x: NaiveAttentionInput, p: Prepared): NaiveAttentionOutput {
  const { b, tq, tk, h, hkv, d, g, round, mask } = p;
  const o = new Float64Array(b * tq * h * d);
  const lse = new Float64Array(b * h * tq);
  const s = new Float64Array(tk);
  for (let bi = 0; bi < b; bi++)
    for (let hi = 0; hi < h; hi++) {
      const kh = Math.floor(hi / g);
      for (let r = 0; r < tq; r++) {
        const mo = (bi * tq + r) * tk;
        let m = -Infinity;
        for (let t = 0; t < tk; t++) {
          if (!mask[mo + t]) continue;
          s[t] = score(x, p, bi, hi, r, t);
          if (s[t]! > m) m = s[t]!;
        }
        const li = (bi * h + hi) * tq + r;
        if (m === -Infinity) { lse[li] = -Infinity; continue; } // empty row: o stays 0
        let l = 0;
        const oo = ((bi * tq + r) * h + hi) * d;
        for (let t = 0; t < tk; t++) {
          if (!mask[mo + t]) continue;
          const e = round(Math.exp(round(s[t]! - m)));
          l = round(l + e);
          const vo = ((bi * tk + t) * hkv + kh) * d;
          for (let c = 0; c < d; c++) o[oo + c] = round(o[oo + c]! + round(e * x.v[vo + c]!));
        }
        for (let c = 0; c < d; c++) o[oo + c] = round(o[oo + c]! / l);
        lse[li] = round(m + round(Math.log(l)));
      }
    }
  return { o, lse };
}

/** Forward pass: o [B, Tq, H, D] and lse [B, H, Tq] (-Infinity for rows with no visible key). */
export function naiveAttentionForward(x: NaiveAttentionInput): NaiveAttentionOutput {
  return forward(x, prepare(x));
}

/**
 * Gradients of a loss with dL/do = dO [B, Tq, H, D] and, optionally, dL/dlse = dLse [B, H, Tq]
 * (entries on rows with lse = -Infinity are ignored). Returns dq, dk, dv in the layouts of q, k, v.
 */
export function naiveAttentionBackward(x: NaiveAttentionInput, dO: Arr, dLse?: Arr): NaiveAttentionGrads {
  const p = prepare(x);
  const { b, tq, tk, h, hkv, d, g, scale, round, mask } = p;
  checkLength('dO', dO, b * tq * h * d);
  checkLength('dLse', dLse, b * h * tq);
  const { o, lse } = forward(x, p);
  const dq = new Float64Array(b * tq * h * d);
  const dk = new Float64Array(b * tk * hkv * d);
  const dv = new Float64Array(b * tk * hkv * d);
  for (let bi = 0; bi < b; bi++)
    for (let hi = 0; hi < h; hi++) {
      const kh = Math.floor(hi / g);
      for (let r = 0; r < tq; r++) {
        const li = (bi * h + hi) * tq + r;
        const L = lse[li]!;
        if (L === -Infinity) continue; // empty row: P = 0, no contribution anywhere
        const qo = ((bi * tq + r) * h + hi) * d;
        let D = 0;
        for (let c = 0; c < d; c++) D = round(D + round(dO[qo + c]! * o[qo + c]!));
        const dl = dLse ? dLse[li]! : 0;
        const mo = (bi * tq + r) * tk;
        for (let t = 0; t < tk; t++) {
          if (!mask[mo + t]) continue;
          const P = round(Math.exp(round(score(x, p, bi, hi, r, t) - L)));
          const ko = ((bi * tk + t) * hkv + kh) * d;
          let dP = 0;
          for (let c = 0; c < d; c++) dP = round(dP + round(dO[qo + c]! * x.v[ko + c]!));
          const dS = round(P * round(round(dP - D) + dl));
          const tdS = round(scale * dS);
          for (let c = 0; c < d; c++) {
            dq[qo + c] = round(dq[qo + c]! + round(tdS * x.k[ko + c]!));
            dk[ko + c] = round(dk[ko + c]! + round(tdS * x.q[qo + c]!));
            dv[ko + c] = round(dv[ko + c]! + round(P * dO[qo + c]!));
          }
        }
      }
    }
  return { dq, dk, dv };
}

// ---------------------------------------------------------------------------------------------
// Utilities for the ring tests. (maxAbsDiff / expectClose / randomArray live in ./tensors.ts; the
// error helpers below differ: they accept ±Infinity in matching places, as lse has, and count any
// NaN as an infinite error, and they do not depend on jest or tfjs.)

export { mulberry32 };

/** n deterministic standard-normal samples (mulberry32 + Box-Muller). */
export function randn(n: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = 1 - rand(); // (0, 1]
    const u2 = rand();
    const rad = Math.sqrt(-2 * Math.log(u1));
    out[i] = rad * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = rad * Math.sin(2 * Math.PI * u2);
  }
  return out;
}

/** A float64 copy. */
export function toF64(arr: ArrayLike<number>): Float64Array {
  return Float64Array.from(arr);
}

function sameLength(a: ArrayLike<number>, b: ArrayLike<number>): void {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
}

/** max |a - b|; equal values (including equal infinities) count 0, NaN anywhere counts Infinity. */
export function maxAbsErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  sameLength(a, b);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!, y = b[i]!;
    if (x === y) continue;
    const e = Math.abs(x - y);
    if (Number.isNaN(e)) return Infinity;
    if (e > m) m = e;
  }
  return m;
}

/**
 * max |actual - expected| / max(|expected|, floor), elementwise (same Infinity/NaN rules as
 * maxAbsErr). `floor` keeps near-zero reference entries from dominating.
 */
export function maxRelErr(actual: ArrayLike<number>, expected: ArrayLike<number>, floor = 1e-30): number {
  sameLength(actual, expected);
  let m = 0;
  for (let i = 0; i < actual.length; i++) {
    const x = actual[i]!, y = expected[i]!;
    if (x === y) continue;
    const e = Math.abs(x - y) / Math.max(Math.abs(y), floor);
    if (Number.isNaN(e)) return Infinity;
    if (e > m) m = e;
  }
  return m;
}

/** max |a - b| / max(max |b|, floor): error relative to the reference's largest magnitude. */
export function normRelErr(actual: ArrayLike<number>, expected: ArrayLike<number>, floor = 1e-30): number {
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    const y = Math.abs(expected[i]!);
    if (Number.isFinite(y) && y > scale) scale = y;
  }
  return maxAbsErr(actual, expected) / Math.max(scale, floor);
}

/** True when no element is NaN or ±Infinity. */
export function allFinite(a: ArrayLike<number>): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return false;
  return true;
}

export interface RandomSegmentsOptions {
  /** Probability that a drawn document has 1 or 2 tokens (default 0.3). */
  shortProb?: number;
  /** Probability that a drawn document is long: ceil(t/3) .. t tokens (default 0.15). */
  longProb?: number;
  /** Longest "medium" document, drawn from 3 .. maxMedium (default max(3, ceil(t/8))). */
  maxMedium?: number;
  /** Id of the first document of every batch row; ids then increase by 1 (default 0). */
  firstId?: number;
  /**
   * Guarantee that every row with t >= 6 holds at least one document of 1-2 tokens and one of at
   * least ceil(t/3) tokens (default true).
   */
  ensure?: boolean;
}

/**
 * Packed-document segment ids [B*T]: each batch row is cut at random points into contiguous
 * documents of uneven lengths (tiny 1-2 token documents, medium ones and long ones), numbered
 * firstId, firstId+1, ... from left to right. Deterministic in seed.
 */
export function randomSegments(b: number, t: number, seed: number, opts: RandomSegmentsOptions = {}): Int32Array {
  const { shortProb = 0.3, longProb = 0.15, firstId = 0, ensure = true } = opts;
  const maxMedium = Math.max(3, opts.maxMedium ?? Math.ceil(t / 8));
  const rand = mulberry32(seed);
  const randint = (lo: number, hi: number): number => lo + Math.floor(rand() * (hi - lo + 1)); // inclusive
  const out = new Int32Array(b * t);
  for (let bi = 0; bi < b; bi++) {
    const lengths: number[] = [];
    let rest = t;
    if (ensure && t >= 6) {
      const long = randint(Math.ceil(t / 3), Math.ceil(t / 2));
      const short = randint(1, 2);
      lengths.push(long, short);
      rest -= long + short;
    }
    while (rest > 0) {
      const u = rand();
      let len: number;
      if (u < shortProb) len = randint(1, 2);
      else if (u < shortProb + longProb) len = randint(Math.ceil(t / 3), Math.max(Math.ceil(t / 3), t));
      else len = randint(3, maxMedium);
      len = Math.min(len, rest);
      lengths.push(len);
      rest -= len;
    }
    for (let i = lengths.length - 1; i > 0; i--) { // Fisher-Yates: long/short docs anywhere
      const j = randint(0, i);
      [lengths[i], lengths[j]] = [lengths[j]!, lengths[i]!];
    }
    let pos = bi * t;
    lengths.forEach((len, doc) => {
      out.fill(firstId + doc, pos, pos + len);
      pos += len;
    });
  }
  return out;
}
