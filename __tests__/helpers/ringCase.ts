// One ring-attention test case, built the same way by the in-process tests and by the rank
// processes of the multi-process tests (so both sides hold identical inputs from a seed).
import { layoutIndices, paddedLength, ringBackward, ringForward, runVirtualRing, type BlockKernel, type RingLayout, type RingProblem, type TokenMeta } from '../../ops/index.js';
import { naiveAttentionBackward, naiveAttentionForward, randn, randomSegments, type NaiveAttentionInput } from './naiveAttention.js';

export interface RingCaseOptions {
  n: number;
  layout: RingLayout;
  causal: boolean;
  seed: number;
  b?: number;
  h?: number;
  hkv?: number;
  d?: number;
  /** Real tokens before padding up to the layout's unit. */
  tokens?: number;
  /** Packed documents (segment ids). Default true. */
  segments?: boolean;
  /** Key padding: the tail padding plus one short document whose keys are all invalid (empty rows). Default true. */
  padding?: boolean;
}

export interface RingCase {
  opts: Required<RingCaseOptions>;
  /** Global length after padding. */
  s: number;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  seg: Int32Array | null;
  valid: Int32Array | null;
  dO: Float32Array;
  dLse: Float32Array;
}

export function makeRingCase(o: RingCaseOptions): RingCase {
  const opts: Required<RingCaseOptions> = { b: 2, h: 4, hkv: 2, d: 8, tokens: 37, segments: true, padding: true, ...o };
  const { b, h, hkv, d, n, layout } = opts;
  const s = paddedLength(opts.tokens, n, layout);
  let seed = opts.seed * 7919;
  const q = randn(b * s * h * d, seed++);
  const k = randn(b * s * hkv * d, seed++);
  const v = randn(b * s * hkv * d, seed++);
  const dO = randn(b * s * h * d, seed++);
  const dLse = randn(b * h * s, seed++);
  let seg: Int32Array | null = null;
  if (opts.segments) {
    const real = randomSegments(b, opts.tokens, seed++);
    seg = new Int32Array(b * s).fill(-1); // padding: a segment of its own
    for (let bi = 0; bi < b; bi++) seg.set(real.subarray(bi * opts.tokens, (bi + 1) * opts.tokens), bi * s);
  }
  let valid: Int32Array | null = null;
  if (opts.padding) {
    valid = new Int32Array(b * s);
    for (let bi = 0; bi < b; bi++) {
      for (let i = 0; i < opts.tokens; i++) valid[bi * s + i] = 1;
      // Invalidate every key of one document so its queries see nothing (an empty row).
      if (seg) {
        const target = seg[bi * s + Math.floor(opts.tokens / 2)]!;
        for (let i = 0; i < opts.tokens; i++) if (seg[bi * s + i] === target) valid[bi * s + i] = 0;
      } else {
        valid[bi * s] = 0; // causal row 0 then sees no key
      }
    }
  }
  return { opts, s, q, k, v, seg, valid, dO, dLse };
}

function gatherRows<A extends Float32Array | Int32Array>(src: A, b: number, s: number, row: number, idx: Int32Array): A {
  const c = idx.length;
  const out = new (src.constructor as { new (n: number): A })(b * c * row);
  for (let bi = 0; bi < b; bi++) {
    for (let a = 0; a < c; a++) out.set(src.subarray((bi * s + idx[a]!) * row, (bi * s + idx[a]! + 1) * row), (bi * c + a) * row);
  }
  return out;
}

/** [B, H, S] statistics of the local tokens. */
function gatherStats(src: Float32Array, b: number, h: number, s: number, idx: Int32Array): Float32Array {
  const c = idx.length;
  const out = new Float32Array(b * h * c);
  for (let r = 0; r < b * h; r++) for (let a = 0; a < c; a++) out[r * c + a] = src[r * s + idx[a]!]!;
  return out;
}

export interface RingShard {
  idx: Int32Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  meta: TokenMeta;
  dO: Float32Array;
  dLse: Float32Array;
}

export function shardCase(c: RingCase, rank: number): RingShard {
  const { b, h, hkv, d, n, layout } = c.opts;
  const idx = layoutIndices(c.s, n, rank, layout);
  const pos = new Int32Array(b * idx.length);
  for (let bi = 0; bi < b; bi++) pos.set(idx, bi * idx.length);
  return {
    idx,
    q: gatherRows(c.q, b, c.s, h * d, idx),
    k: gatherRows(c.k, b, c.s, hkv * d, idx),
    v: gatherRows(c.v, b, c.s, hkv * d, idx),
    meta: { pos, seg: c.seg ? gatherRows(c.seg, b, c.s, 1, idx) : null, valid: c.valid ? gatherRows(c.valid, b, c.s, 1, idx) : null },
    dO: gatherRows(c.dO, b, c.s, h * d, idx),
    dLse: gatherStats(c.dLse, b, h, c.s, idx),
  };
}

export function problemFor(c: RingCase, shard: RingShard, rank: number, kernel: BlockKernel, blockSize: number, call = 0): RingProblem {
  const { b, h, hkv, d, n, causal } = c.opts;
  return { rank, size: n, call, dims: { b, h, hkv, d }, t: shard.idx.length, q: shard.q, k: shard.k, v: shard.v, meta: shard.meta, causal, scale: 1 / Math.sqrt(d), blockSize, kernel };
}

export interface AttentionResult {
  o: Float32Array | Float64Array;
  lse: Float32Array | Float64Array;
  dq: Float32Array | Float64Array;
  dk: Float32Array | Float64Array;
  dv: Float32Array | Float64Array;
}

/** Per-rank results of the virtual ring, in each rank's local order. */
export function virtualRing(c: RingCase, kernel: BlockKernel, blockSize: number): AttentionResult[] {
  const shards = Array.from({ length: c.opts.n }, (_, r) => shardCase(c, r));
  const problems = shards.map((sh, r) => problemFor(c, sh, r, kernel, blockSize));
  const fwd = runVirtualRing(problems.map((p) => ringForward(p)));
  const bwd = runVirtualRing(problems.map((p, r) => ringBackward(p, { o: fwd[r]!.o, lse: fwd[r]!.lse, dO: shards[r]!.dO, dLse: shards[r]!.dLse })));
  return fwd.map((f, r) => ({ o: f.o, lse: f.lse, ...bwd[r]! }));
}

/** Scatters per-rank results back into global order. */
export function unshard(c: RingCase, parts: AttentionResult[]): AttentionResult {
  const { b, h, hkv, d, n } = c.opts;
  const out: AttentionResult = {
    o: new Float64Array(b * c.s * h * d),
    lse: new Float64Array(b * h * c.s),
    dq: new Float64Array(b * c.s * h * d),
    dk: new Float64Array(b * c.s * hkv * d),
    dv: new Float64Array(b * c.s * hkv * d),
  };
  for (let r = 0; r < n; r++) {
    const idx = layoutIndices(c.s, n, r, c.opts.layout);
    const t = idx.length;
    const p = parts[r]!;
    for (let bi = 0; bi < b; bi++) {
      for (let a = 0; a < t; a++) {
        const g = idx[a]!;
        for (let x = 0; x < h * d; x++) {
          out.o[(bi * c.s + g) * h * d + x] = p.o[(bi * t + a) * h * d + x]!;
          out.dq[(bi * c.s + g) * h * d + x] = p.dq[(bi * t + a) * h * d + x]!;
        }
        for (let x = 0; x < hkv * d; x++) {
          out.dk[(bi * c.s + g) * hkv * d + x] = p.dk[(bi * t + a) * hkv * d + x]!;
          out.dv[(bi * c.s + g) * hkv * d + x] = p.dv[(bi * t + a) * hkv * d + x]!;
        }
      }
      for (let hh = 0; hh < h; hh++) for (let a = 0; a < t; a++) out.lse[(bi * h + hh) * c.s + idx[a]!] = p.lse[(bi * h + hh) * t + a]!;
    }
  }
  return out;
}

/** The float64 (or float32-rounded) naive reference over the whole sequence. */
export function naiveFor(c: RingCase, precision: 'float64' | 'float32' = 'float64'): AttentionResult {
  const { b, h, hkv, d, causal } = c.opts;
  const x: NaiveAttentionInput = {
    q: c.q,
    k: c.k,
    v: c.v,
    shape: { b, tq: c.s, tk: c.s, h, hkv, d },
    causal,
    ...(c.seg ? { qSeg: c.seg, kSeg: c.seg } : {}),
    ...(c.valid ? { keyValid: Uint8Array.from(c.valid) } : {}),
    precision,
  };
  const f = naiveAttentionForward(x);
  return { ...f, ...naiveAttentionBackward(x, c.dO, c.dLse) };
}
