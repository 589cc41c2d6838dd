// The ring algorithm of one rank (spec sections 3 and 4), written as generators that yield their
// sends and receives. A real process group drives a generator with blocking socket calls; the
// virtual ring drives N of them in lockstep in one process. Both run exactly these arithmetic
// steps in this order, which is why a real ring matches the virtual one bit for bit.
import { InputError } from '../errors.js';
import type { BlockArgs, BlockKernel, RingDims, TokenMeta } from './blockKernels.js';
import type { RingArray, RingTag } from './types.js';

export type RingOp = { kind: 'send'; tag: RingTag; arrays: RingArray[] } | { kind: 'recv'; tag: RingTag };
export type RingProgram<T> = Generator<RingOp, T, RingArray[] | undefined>;

/** One rank's share of a ring attention call. */
export interface RingProblem {
  rank: number;
  size: number;
  call: number;
  dims: RingDims;
  /** Local tokens on this rank (the same on every rank). */
  t: number;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  meta: TokenMeta;
  causal: boolean;
  scale: number;
  /** Inner query/key chunk length; 0 = whole local blocks. */
  blockSize: number;
  kernel: BlockKernel;
}

interface KvBlock {
  origin: number;
  k: Float32Array;
  v: Float32Array;
  meta: TokenMeta;
}

const mod = (a: number, n: number) => ((a % n) + n) % n;

function tag(p: RingProblem, pass: number, step: number, origin: number): RingTag {
  return { op: 'attn', call: p.call, pass, step, origin };
}

function packKv(b: KvBlock): RingArray[] {
  const out: RingArray[] = [b.k, b.v, b.meta.pos];
  if (b.meta.seg) out.push(b.meta.seg);
  if (b.meta.valid) out.push(b.meta.valid);
  return out;
}

function unpackKv(p: RingProblem, origin: number, arrays: RingArray[] | undefined): KvBlock {
  const { b, hkv, d } = p.dims;
  const want = 3 + (p.meta.seg ? 1 : 0) + (p.meta.valid ? 1 : 0);
  const kvLen = b * p.t * hkv * d;
  const ok =
    arrays !== undefined && arrays.length === want &&
    arrays[0] instanceof Float32Array && arrays[0].length === kvLen &&
    arrays[1] instanceof Float32Array && arrays[1].length === kvLen &&
    arrays.slice(2).every((a) => a instanceof Int32Array && a.length === b * p.t);
  if (!ok) {
    throw new InputError(`ring attention: the block from rank ${origin} does not match rank ${p.rank}'s shapes or masks; every rank must pass the same shapes, and segmentIds/keyMask on all ranks or none`);
  }
  let i = 3;
  return {
    origin,
    k: arrays[0] as Float32Array,
    v: arrays[1] as Float32Array,
    meta: {
      pos: arrays[2] as Int32Array,
      seg: p.meta.seg ? (arrays[i++] as Int32Array) : null,
      valid: p.meta.valid ? (arrays[i++] as Int32Array) : null,
    },
  };
}

/** Rows t0..t0+n of every batch of a [B, T, row] array. */
function sliceRows<A extends Float32Array | Int32Array>(src: A, batch: number, t: number, row: number, t0: number, n: number): A {
  if (t0 === 0 && n === t) return src;
  const out = new (src.constructor as { new (n: number): A })(batch * n * row);
  for (let bi = 0; bi < batch; bi++) out.set(src.subarray((bi * t + t0) * row, (bi * t + t0 + n) * row), bi * n * row);
  return out;
}

function putRows(dst: Float32Array, part: Float32Array, batch: number, t: number, row: number, t0: number, n: number): void {
  if (part === dst) return;
  for (let bi = 0; bi < batch; bi++) dst.set(part.subarray(bi * n * row, (bi + 1) * n * row), (bi * t + t0) * row);
}

function sliceMeta(m: TokenMeta, batch: number, t: number, t0: number, n: number): TokenMeta {
  return {
    pos: sliceRows(m.pos, batch, t, 1, t0, n),
    seg: m.seg ? sliceRows(m.seg, batch, t, 1, t0, n) : null,
    valid: m.valid ? sliceRows(m.valid, batch, t, 1, t0, n) : null,
  };
}

/**
 * Whether any query of qm may see any key of km. Forward and backward both ask this one
 * predicate, so they skip exactly the same chunk pairs.
 */
function mayAttend(qm: TokenMeta, km: TokenMeta, batch: number, tq: number, tk: number, causal: boolean): boolean {
  for (let bi = 0; bi < batch; bi++) {
    let kMin = Infinity;
    let kSegLo = Infinity;
    let kSegHi = -Infinity;
    for (let j = bi * tk; j < (bi + 1) * tk; j++) {
      if (km.valid && !(km.valid[j]! > 0)) continue;
      kMin = Math.min(kMin, km.pos[j]!);
      if (km.seg) {
        kSegLo = Math.min(kSegLo, km.seg[j]!);
        kSegHi = Math.max(kSegHi, km.seg[j]!);
      }
    }
    if (kMin === Infinity) continue;
    for (let i = bi * tq; i < (bi + 1) * tq; i++) {
      if (causal && qm.pos[i]! < kMin) continue;
      if (qm.seg && km.seg && (qm.seg[i]! < kSegLo || qm.seg[i]! > kSegHi)) continue;
      return true;
    }
  }
  return false;
}

/** Calls fn for every (query chunk, key chunk) pair that is not entirely masked. */
function forEachChunkPair(p: RingProblem, blk: KvBlock, fn: (a: BlockArgs, q0: number, nq: number, k0: number, nk: number) => void): void {
  const { b, h, hkv, d } = p.dims;
  const c = p.blockSize > 0 ? p.blockSize : p.t;
  for (let q0 = 0; q0 < p.t; q0 += c) {
    const nq = Math.min(c, p.t - q0);
    const qMeta = sliceMeta(p.meta, b, p.t, q0, nq);
    const q = sliceRows(p.q, b, p.t, h * d, q0, nq);
    for (let k0 = 0; k0 < p.t; k0 += c) {
      const nk = Math.min(c, p.t - k0);
      const kMeta = sliceMeta(blk.meta, b, p.t, k0, nk);
      if (!mayAttend(qMeta, kMeta, b, nq, nk, p.causal)) continue;
      const k = sliceRows(blk.k, b, p.t, hkv * d, k0, nk);
      const v = sliceRows(blk.v, b, p.t, hkv * d, k0, nk);
      fn({ dims: p.dims, tq: nq, tk: nk, q, qMeta, k, v, kMeta, causal: p.causal, scale: p.scale }, q0, nq, k0, nk);
    }
  }
}

function foldForward(p: RingProblem, blk: KvBlock, o: Float32Array, lse: Float32Array): void {
  const { b, h, d } = p.dims;
  forEachChunkPair(p, blk, (a, q0, nq) => {
    const oc = sliceRows(o, b, p.t, h * d, q0, nq);
    const lc = sliceRows(lse, b * h, p.t, 1, q0, nq);
    p.kernel.forward(a, oc, lc);
    putRows(o, oc, b, p.t, h * d, q0, nq);
    putRows(lse, lc, b * h, p.t, 1, q0, nq);
  });
}

interface Grads {
  dq: Float32Array;
  dk: Float32Array;
  dv: Float32Array;
}

function foldBackward(p: RingProblem, blk: KvBlock, saved: { o: Float32Array; lse: Float32Array; dO: Float32Array; dLse: Float32Array | null }, g: Grads): void {
  const { b, h, hkv, d } = p.dims;
  forEachChunkPair(p, blk, (a, q0, nq, k0, nk) => {
    const rows = (x: Float32Array) => sliceRows(x, b, p.t, h * d, q0, nq);
    const stat = (x: Float32Array) => sliceRows(x, b * h, p.t, 1, q0, nq);
    const dq = rows(g.dq);
    const dk = sliceRows(g.dk, b, p.t, hkv * d, k0, nk);
    const dv = sliceRows(g.dv, b, p.t, hkv * d, k0, nk);
    p.kernel.backward(a, rows(saved.o), rows(saved.dO), stat(saved.lse), saved.dLse ? stat(saved.dLse) : null, dq, dk, dv);
    putRows(g.dq, dq, b, p.t, h * d, q0, nq);
    putRows(g.dk, dk, b, p.t, hkv * d, k0, nk);
    putRows(g.dv, dv, b, p.t, hkv * d, k0, nk);
  });
}

/**
 * Forward of one rank: the local K/V block first, then the block of rank - s at step s. Each
 * block is sent on before it is folded in, so the transfer overlaps the compute.
 */
export function* ringForward(p: RingProblem): RingProgram<{ o: Float32Array; lse: Float32Array }> {
  const { b, h, d } = p.dims;
  const o = new Float32Array(b * p.t * h * d);
  const lse = new Float32Array(b * h * p.t).fill(-Infinity);
  let cur: KvBlock = { origin: p.rank, k: p.k, v: p.v, meta: p.meta };
  for (let s = 0; s < p.size; s++) {
    const last = s === p.size - 1;
    if (!last) yield { kind: 'send', tag: tag(p, 0, s, cur.origin), arrays: packKv(cur) };
    foldForward(p, cur, o, lse);
    if (!last) {
      const origin = mod(p.rank - s - 1, p.size);
      cur = unpackKv(p, origin, yield { kind: 'recv', tag: tag(p, 0, s, origin) });
    }
  }
  return { o, lse };
}

/**
 * Backward of one rank (spec 4.2): dQ stays here; each K/V block travels with its dK/dV
 * accumulators, which after N hops come back to the rank that owns the block.
 */
export function* ringBackward(
  p: RingProblem,
  saved: { o: Float32Array; lse: Float32Array; dO: Float32Array; dLse: Float32Array | null },
): RingProgram<Grads> {
  const kvLen = p.k.length;
  const dq = new Float32Array(p.q.length);
  let cur: KvBlock = { origin: p.rank, k: p.k, v: p.v, meta: p.meta };
  let acc: { dk: Float32Array; dv: Float32Array } = { dk: new Float32Array(kvLen), dv: new Float32Array(kvLen) };
  for (let s = 0; s < p.size; s++) {
    const last = s === p.size - 1;
    if (!last) yield { kind: 'send', tag: tag(p, 1, s, cur.origin), arrays: packKv(cur) };
    foldBackward(p, cur, saved, { dq, dk: acc.dk, dv: acc.dv });
    if (p.size === 1) break;
    yield { kind: 'send', tag: tag(p, 2, s, cur.origin), arrays: [acc.dk, acc.dv] };
    const origin = mod(p.rank - s - 1, p.size);
    if (!last) cur = unpackKv(p, origin, yield { kind: 'recv', tag: tag(p, 1, s, origin) });
    const got = yield { kind: 'recv', tag: tag(p, 2, s, origin) };
    if (!got || got.length !== 2 || got.some((a) => !(a instanceof Float32Array) || a.length !== kvLen)) {
      throw new InputError(`ring attention: the gradient block from rank ${origin} does not match rank ${p.rank}'s shapes; every rank must pass the same shapes`);
    }
    acc = { dk: got[0] as Float32Array, dv: got[1] as Float32Array };
  }
  return { dq, dk: acc.dk, dv: acc.dv };
}
