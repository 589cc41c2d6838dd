/**
 * Collectives built only on a RingGroup's sendNext/recvPrev, so they run on any ring (the process
 * group, or an in-memory one in tests) and every byte passes the same tag checks as attention.
 */
import { InputError, LwmError } from '../../ops/errors.js';
import type { RingArray, RingGroup, RingTag } from '../../ops/ring/types.js';

export type ReduceOp = 'sum' | 'mean' | 'max' | 'min';

/** A group that can also stop its peers when a collective finds them out of step. */
interface Abortable {
  abort?(reason: string): void;
}

/** Broadcast is pipelined in pieces of this many elements (4 MiB), so hops overlap. */
const BROADCAST_PIECE = 1 << 20;

const mod = (a: number, n: number) => ((a % n) + n) % n;

function fail(g: RingGroup & Abortable, message: string): never {
  g.abort?.(message);
  throw new LwmError(message);
}

function bounds(len: number, n: number, c: number): [number, number] {
  return [Math.floor((c * len) / n), Math.floor(((c + 1) * len) / n)];
}

function one(g: RingGroup & Abortable, tag: RingTag, what: string, want: { length: number; float: boolean }): RingArray {
  const got = g.recvPrev(tag);
  const a = got[0];
  if (got.length !== 1 || !a || a instanceof Float32Array !== want.float || a.length !== want.length) {
    const desc = a ? `${a.length} ${a instanceof Float32Array ? 'float32' : 'int32'} values` : 'nothing';
    fail(g, `ring: ${what} on rank ${g.rank} got ${desc} from rank ${tag.origin} but expected ${want.length} ${want.float ? 'float32' : 'int32'} values; every rank must pass arrays of the same length and type`);
  }
  return a;
}

const combine: Record<ReduceOp, (a: number, b: number) => number> = {
  sum: (a, b) => a + b,
  mean: (a, b) => a + b,
  max: (a, b) => (a > b || Number.isNaN(a) ? a : b),
  min: (a, b) => (a < b || Number.isNaN(a) ? a : b),
};

/**
 * In place: ring reduce-scatter then all-gather. Each chunk is reduced once, along the ring in a
 * fixed order starting at the rank that owns it, and then copied to everyone, so every rank ends
 * with bitwise identical values and reruns give the same bits.
 */
export function allReduce(g: RingGroup & Abortable, data: Float32Array, op: ReduceOp = 'sum'): Float32Array {
  if (!(data instanceof Float32Array)) throw new InputError(`allReduce takes a Float32Array, got ${Object.prototype.toString.call(data)}`);
  if (!(op in combine)) throw new InputError(`allReduce op '${op}' is not one of ${Object.keys(combine).join(', ')}`);
  const n = g.size;
  const r = g.rank;
  if (n === 1) return data;
  const call = g.nextCall();
  const prev = mod(r - 1, n);
  const f = combine[op];
  for (let s = 0; s < n - 1; s++) {
    const [slo, shi] = bounds(data.length, n, mod(r - s, n));
    const [lo, hi] = bounds(data.length, n, mod(r - s - 1, n));
    g.sendNext({ op: 'allreduce', call, pass: 0, step: s, origin: r }, [data.subarray(slo, shi)]);
    const got = one(g, { op: 'allreduce', call, pass: 0, step: s, origin: prev }, 'allReduce', { length: hi - lo, float: true });
    for (let i = lo; i < hi; i++) data[i] = f(got[i - lo]!, data[i]!);
  }
  if (op === 'mean') {
    const [lo, hi] = bounds(data.length, n, mod(r + 1, n));
    for (let i = lo; i < hi; i++) data[i] = data[i]! / n;
  }
  for (let s = 0; s < n - 1; s++) {
    const [slo, shi] = bounds(data.length, n, mod(r + 1 - s, n));
    const [lo, hi] = bounds(data.length, n, mod(r - s, n));
    g.sendNext({ op: 'allreduce', call, pass: 1, step: s, origin: r }, [data.subarray(slo, shi)]);
    data.set(one(g, { op: 'allreduce', call, pass: 1, step: s, origin: prev }, 'allReduce', { length: hi - lo, float: true }), lo);
  }
  return data;
}

/** In place: `root`'s values reach every rank along the ring, piece by piece. */
export function broadcast<T extends Float32Array | Int32Array>(g: RingGroup & Abortable, data: T, root = 0): T {
  const float = data instanceof Float32Array;
  if (!float && !(data instanceof Int32Array)) throw new InputError(`broadcast takes a Float32Array or Int32Array, got ${Object.prototype.toString.call(data)}`);
  if (!Number.isInteger(root) || root < 0 || root >= g.size) throw new InputError(`broadcast root ${root} is not a rank of this group (0..${g.size - 1})`);
  if (g.size === 1) return data;
  const call = g.nextCall();
  const next = (g.rank + 1) % g.size;
  const pieces = Math.max(1, Math.ceil(data.length / BROADCAST_PIECE));
  for (let p = 0; p < pieces; p++) {
    const lo = p * BROADCAST_PIECE;
    const hi = Math.min(data.length, lo + BROADCAST_PIECE);
    const tag: RingTag = { op: 'broadcast', call, pass: 0, step: p, origin: root };
    if (g.rank !== root) data.set(one(g, tag, 'broadcast', { length: hi - lo, float }) as T, lo);
    if (next !== root) g.sendNext(tag, [data.subarray(lo, hi)]);
  }
  return data;
}

/** Returns on every rank only after every rank entered it. */
export function barrier(g: RingGroup): void {
  if (g.size === 1) return;
  const call = g.nextCall();
  const prev = mod(g.rank - 1, g.size);
  // After step s a rank has heard, through its predecessor, from the s + 1 ranks before it.
  for (let s = 0; s < g.size - 1; s++) {
    g.sendNext({ op: 'barrier', call, pass: 0, step: s, origin: g.rank }, []);
    g.recvPrev({ op: 'barrier', call, pass: 0, step: s, origin: prev });
  }
}
