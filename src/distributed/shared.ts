/**
 * What the compute thread and the transport worker share: the control words of one Int32Array
 * over a SharedArrayBuffer, and the byte layout of one ring message. Outgoing messages are laid
 * out in a shared send slot exactly as they travel, so the worker sends the slot's bytes without
 * copying them. Each incoming message is copied once, by the worker, into a fresh ArrayBuffer
 * that is transferred to the compute thread (the `inbox` port): the caller of recvPrev gets views
 * of it, with no copy and no page faults on the compute thread, and since a transferred buffer
 * belongs to the receiving isolate alone, its garbage collector frees it (buffers shared with
 * the worker would wait for the worker's rare collections: gigabytes, measured).
 */
import type { MessagePort } from 'node:worker_threads';
import type { RingArray, RingTag } from '../../ops/ring/types.js';
import type { RingConfig } from './config.js';

/** Indices into the control Int32Array. */
export const W = {
  /** Bumped (and notified) by the worker after every change; the compute thread waits on it. */
  GEN: 0,
  STATE: 1,
  /** Set by the compute thread once it has thrown the abort, so the worker need not kill the process. */
  ABORT_SEEN: 2,
  ABORT_LEN: 3,
  /** 1 once the previous rank said goodbye on its data connection, i.e. after its last block. */
  PREV_GONE: 4,
  NEXT_GONE: 5,
  /** Per send slot: FREE, or BUSY until the receiver's credit for it returns. */
  SEND_STATE: 6,
  /** How many messages the worker has posted to the inbox (wraps at 2^32). */
  RECV_POSTED: 8,
  WORDS: 16,
} as const;

export const STATE = { STARTING: 0, READY: 1, ABORTED: 2, CLOSED: 3 } as const;
export const SLOT = { FREE: 0, BUSY: 1 } as const;
export const ABORT_TEXT_BYTES = 4096;

/** First frame of every socket message. */
export const KIND = {
  CHALLENGE: 1,
  JOIN: 2,
  TABLE: 3,
  REFUSED: 4,
  FAIL: 5,
  HELLO: 6,
  WELCOME: 7,
  DATA: 8,
  CREDIT: 9,
  HEARTBEAT: 10,
  BYE: 11,
  ABORT: 12,
} as const;

/** Compute thread -> worker. */
export type ToWorker =
  | { t: 'send'; slot: number; seq: number; len: number; sab?: SharedArrayBuffer }
  | { t: 'consumed'; seq: number }
  | { t: 'abort'; message: string }
  | { t: 'close'; code: number };

export interface PeerInfo {
  rank: number;
  endpoint: string;
  pid: number;
  host: string;
}

/** The worker's workerData. */
export interface WorkerInit {
  cfg: RingConfig;
  pid: number;
  host: string;
  ctl: SharedArrayBuffer;
  abortText: SharedArrayBuffer;
  sendSabs: SharedArrayBuffer[];
  /** The worker posts each received message here; the compute thread reads it synchronously. */
  inbox: MessagePort;
}

/** One received message on the inbox, its buffer transferred. */
export interface Delivered {
  seq: number;
  buf: ArrayBuffer;
}

/** Worker -> compute thread, only while init() awaits. */
export type FromWorker = { t: 'ready'; peers: PeerInfo[] } | { t: 'error'; config: boolean; message: string };

const MAGIC = 0x524d574c; // "LWMR"
const VERSION = 1;
const DTYPES = ['float32', 'int32'] as const;
const FIXED = 40;
const enc = new TextEncoder();
const dec = new TextDecoder();

export interface ArrayLayout {
  dtype: (typeof DTYPES)[number];
  length: number;
  offset: number;
}

export interface MessageHeader {
  seq: number;
  tag: RingTag;
  arrays: ArrayLayout[];
  bytes: number;
}

function headerBytes(opBytes: number, count: number): number {
  return Math.ceil((FIXED + opBytes + 8 * count) / 8) * 8;
}

/** Bytes a message takes in a slot and on the wire. */
export function messageBytes(tag: RingTag, arrays: readonly RingArray[]): number {
  let n = headerBytes(enc.encode(tag.op).length, arrays.length);
  for (const a of arrays) n += a.byteLength;
  return n;
}

/**
 * Layout (little endian): magic u32, version u32, seq u32, call, pass, step, origin i32, count u32,
 * op byte length u32, payload bytes u32, op utf-8, then per array (dtype u32, length u32), padded
 * to 8; then the arrays back to back (all 4-byte elements, so each stays aligned).
 */
export function writeMessage(buf: SharedArrayBuffer, seq: number, tag: RingTag, arrays: readonly RingArray[]): number {
  const op = enc.encode(tag.op);
  const hb = headerBytes(op.length, arrays.length);
  const total = messageBytes(tag, arrays);
  const dv = new DataView(buf);
  const head = [MAGIC, VERSION, seq, tag.call, tag.pass, tag.step, tag.origin, arrays.length, op.length, total - hb];
  head.forEach((v, i) => dv.setInt32(4 * i, v | 0, true));
  new Uint8Array(buf, FIXED, op.length).set(op);
  let at = FIXED + op.length;
  let off = hb;
  for (const a of arrays) {
    dv.setUint32(at, a instanceof Float32Array ? 0 : 1, true);
    dv.setUint32(at + 4, a.length, true);
    at += 8;
    if (a instanceof Float32Array) new Float32Array(buf, off, a.length).set(a);
    else new Int32Array(buf, off, a.length).set(a);
    off += a.byteLength;
  }
  return total;
}

/** The sequence number of a message frame, read by the worker to keep the stream in order. */
export function frameSeq(frame: Uint8Array): number {
  if (frame.length < FIXED) return -1;
  const dv = new DataView(frame.buffer, frame.byteOffset, frame.length);
  return dv.getUint32(0, true) === MAGIC ? dv.getUint32(8, true) : -1;
}

/** Returns null when the bytes are not a message of this protocol version. */
export function readHeader(buf: ArrayBufferLike, len: number): MessageHeader | null {
  if (len < FIXED) return null;
  const dv = new DataView(buf, 0, len);
  if (dv.getUint32(0, true) !== MAGIC || dv.getUint32(4, true) !== VERSION) return null;
  const count = dv.getUint32(28, true);
  const opLen = dv.getUint32(32, true);
  const hb = headerBytes(opLen, count);
  if (hb > len) return null;
  const tag: RingTag = {
    op: dec.decode(new Uint8Array(buf, FIXED, opLen).slice()),
    call: dv.getInt32(12, true),
    pass: dv.getInt32(16, true),
    step: dv.getInt32(20, true),
    origin: dv.getInt32(24, true),
  };
  const arrays: ArrayLayout[] = [];
  let at = FIXED + opLen;
  let off = hb;
  for (let i = 0; i < count; i++, at += 8) {
    const dtype = DTYPES[dv.getUint32(at, true)];
    const length = dv.getUint32(at + 4, true);
    if (dtype === undefined || off + 4 * length > len) return null;
    arrays.push({ dtype, length, offset: off });
    off += 4 * length;
  }
  return { seq: dv.getUint32(8, true), tag, arrays, bytes: len };
}

/** Views of the arrays in a received message's buffer. */
export function viewArrays(buf: ArrayBufferLike, layout: readonly ArrayLayout[]): RingArray[] {
  return layout.map(({ dtype, length, offset }) => (dtype === 'float32' ? new Float32Array(buf, offset, length) : new Int32Array(buf, offset, length)));
}
