// The contract between the ring attention op (ops/) and whatever moves its blocks: the
// process group of src/distributed in real runs, an in-memory ring in tests. ops/ never imports
// src/, so the op depends only on this interface.

export type RingArray = Float32Array | Int32Array;

/**
 * What a message is, checked on receipt so a protocol slip fails loudly instead of attending to
 * the wrong block. Every rank issues the same sequence of ring calls, so tags agree.
 */
export interface RingTag {
  /** Which collective or op: 'attn' for ring attention, others for all-reduce, broadcast, ... */
  op: string;
  /** Per-group call counter (one per ringAttention forward; its backward reuses it). */
  call: number;
  /** Attention: 0 forward K/V, 1 backward K/V, 2 backward dK/dV; collectives: their phase. */
  pass: number;
  /** Ring step. */
  step: number;
  /** Rank whose block this is (for attention: where the K/V block started). */
  origin: number;
}

/**
 * A ring of `size` ranks. All methods are synchronous because tf.customGrad's forward and
 * gradient functions are: implementations block the calling thread (Atomics.wait) while a
 * transport thread moves bytes.
 */
export interface RingGroup {
  readonly rank: number;
  readonly size: number;
  /**
   * Queues `arrays` for rank (rank + 1) % size. Returns once they are copied, so the caller may
   * reuse them; blocks only while the bounded send buffers are full (the receiver's credits).
   */
  sendNext(tag: RingTag, arrays: readonly RingArray[]): void;
  /**
   * Blocks until the next message from rank (rank - 1 + size) % size arrives, checks that its tag
   * equals `tag` (throws naming both otherwise) and returns its arrays, owned by the caller.
   * Throws a one-line error naming the peer when it died, stalled past the timeout, or the
   * group was aborted.
   */
  recvPrev(tag: RingTag): RingArray[];
  /** A fresh call id; every rank gets the same sequence. */
  nextCall(): number;
}

export function tagString(t: RingTag): string {
  const pass = t.op === 'attn' ? (['forward', 'backward K/V', 'backward dK/dV'][t.pass] ?? `pass ${t.pass}`) : `phase ${t.pass}`;
  return `${t.op} call ${t.call} ${pass} step ${t.step} from rank ${t.origin}`;
}

export function sameTag(a: RingTag, b: RingTag): boolean {
  return a.op === b.op && a.call === b.call && a.pass === b.pass && a.step === b.step && a.origin === b.origin;
}
