/**
 * The RingGroup of a real multi-process run. Its methods are synchronous (tf.customGrad is): the
 * calling thread copies outgoing blocks into one of two shared send slots, takes incoming ones
 * from the inbox port, and blocks in Atomics.wait in between, while a worker thread
 * (transportWorker.ts) owns every socket and keeps moving bytes. See shared.ts.
 */
import * as os from 'node:os';
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { ConfigError, InputError, LwmError } from '../../ops/errors.js';
import { sameTag, tagString, type RingArray, type RingGroup, type RingTag } from '../../ops/ring/types.js';
import { allReduce, barrier, broadcast, type ReduceOp } from './collectives.js';
import { resolveRingConfig, type ProcessGroupOptions, type RingConfig } from './config.js';
import {
  ABORT_TEXT_BYTES,
  SLOT,
  STATE,
  W,
  messageBytes,
  readHeader,
  writeMessage,
  type FromWorker,
  type Delivered,
  type PeerInfo,
  type ToWorker,
  type WorkerInit,
  viewArrays,
} from './shared.js';

export type { ProcessGroupOptions } from './config.js';
export type { PeerInfo } from './shared.js';

export interface RingStats {
  /** Message bytes (headers included) this rank sent to its next rank. */
  bytesSent: number;
  bytesReceived: number;
  messagesSent: number;
  messagesReceived: number;
  messages: number;
  /** Time the calling thread spent blocked in sendNext/recvPrev (collectives included). */
  waitMs: number;
}

/** Abort and timeout checks happen at least this often while blocked. */
const WAIT_SLICE_MS = 200;
/** close() waits at most this long for the worker to deliver goodbyes and close its sockets. */
const CLOSE_WAIT_MS = 4000;
const MAX_MESSAGE = 2 ** 31 - 8;

interface Transport {
  worker: Worker;
  ctl: Int32Array;
  abortText: SharedArrayBuffer;
  sendSabs: SharedArrayBuffer[];
  inbox: MessagePort;
}

/**
 * Lets the worker end by itself after it closed its sockets: terminating a thread with live
 * zeromq sockets or observers aborts the process (zeromq/zeromq.js#411). terminate() is only
 * the fallback for a worker that does not finish.
 */
async function ended(worker: Worker): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  worker.ref();
  const exited = new Promise<boolean>((resolve) => {
    worker.once('exit', () => resolve(true));
    timer = setTimeout(() => resolve(false), CLOSE_WAIT_MS);
  });
  if (!(await exited)) await worker.terminate();
  clearTimeout(timer);
}

function zeroStats(): RingStats {
  return { bytesSent: 0, bytesReceived: 0, messagesSent: 0, messagesReceived: 0, messages: 0, waitMs: 0 };
}

export class ProcessGroup implements RingGroup {
  readonly rank: number;
  readonly size: number;
  /** rank -> pid, host and data endpoint, as rank 0 announced them. */
  readonly peers: readonly PeerInfo[];
  private readonly cfg: RingConfig;
  private readonly t: Transport | null;
  private calls = 0;
  private sendSeq = 0;
  private recvSeq = 0;
  private abortMessage: string | null = null;
  private closed = false;
  private readonly loopback: { tag: RingTag; arrays: RingArray[] }[] = [];
  private counters = zeroStats();
  private readonly onExit = (code: number) => this.shutdown(code);

  private constructor(cfg: RingConfig, t: Transport | null, peers: PeerInfo[]) {
    this.cfg = cfg;
    this.rank = cfg.rank;
    this.size = cfg.size;
    this.t = t;
    this.peers = peers;
    // A process that ends without close() still tells its peers whether it succeeded, so they
    // report "exited with code 1" or a clean leave rather than an unexplained death.
    if (t) process.once('exit', this.onExit);
  }

  /**
   * Joins the group: rank, size and the rendezvous address come from `opts`, else from the
   * launcher's environment (see detectLaunch). Resolves once this rank is connected to both ring
   * neighbours; rejects with a one-line LwmError (ConfigError for settings) otherwise.
   */
  static async init(opts: ProcessGroupOptions = {}): Promise<ProcessGroup> {
    const cfg = resolveRingConfig(opts);
    const self: PeerInfo = { rank: 0, endpoint: '', pid: process.pid, host: os.hostname() };
    if (cfg.size === 1) return new ProcessGroup(cfg, null, [self]);

    const ctl = new Int32Array(new SharedArrayBuffer(W.WORDS * 4));
    const abortText = new SharedArrayBuffer(ABORT_TEXT_BYTES);
    const sendSabs = [new SharedArrayBuffer(cfg.slotBytes), new SharedArrayBuffer(cfg.slotBytes)];
    const { port1, port2 } = new MessageChannel();
    const data: WorkerInit = { cfg, pid: process.pid, host: self.host, ctl: ctl.buffer as SharedArrayBuffer, abortText, sendSabs, inbox: port2 };
    const worker = new Worker(new URL('./transportWorker.js', import.meta.url), { workerData: data, transferList: [port2] });
    // The worker reports its own failures through the shared state; this only keeps a crash of
    // the thread from becoming an unhandled 'error' event.
    worker.on('error', () => {});
    let peers: PeerInfo[];
    try {
      peers = await new Promise<PeerInfo[]>((resolve, reject) => {
        worker.on('message', (m: FromWorker) => {
          if (m.t === 'ready') resolve(m.peers);
          else reject(m.config ? new ConfigError(m.message) : new LwmError(m.message));
        });
        worker.once('error', (e) => reject(new LwmError(`ring: rank ${cfg.rank}'s transport thread failed: ${e.message}`)));
        worker.once('exit', (code) => reject(new LwmError(`ring: rank ${cfg.rank}'s transport thread exited (code ${code}) before the group formed`)));
      });
    } catch (err) {
      Atomics.store(ctl, W.ABORT_SEEN, 1);
      port1.close();
      await ended(worker);
      throw err;
    }
    worker.removeAllListeners('message');
    worker.removeAllListeners('exit');
    // From here on the compute thread never waits on the event loop for the worker, and a
    // finished program must not be kept alive by it.
    worker.unref();
    port1.unref();
    return new ProcessGroup(cfg, { worker, ctl, abortText, sendSabs, inbox: port1 }, peers);
  }

  nextCall(): number {
    return this.calls++;
  }

  sendNext(tag: RingTag, arrays: readonly RingArray[]): void {
    for (const a of arrays) {
      if (!(a instanceof Float32Array) && !(a instanceof Int32Array)) {
        throw new InputError(`ring: sendNext takes Float32Array or Int32Array blocks, got ${Object.prototype.toString.call(a)} for ${tagString(tag)}`);
      }
    }
    const bytes = messageBytes(tag, arrays);
    if (bytes > MAX_MESSAGE) throw new InputError(`ring: a ${bytes}-byte message for ${tagString(tag)} exceeds the 2 GiB limit; use smaller blocks`);
    this.checkUsable();
    const t = this.t;
    if (!t) {
      this.loopback.push({ tag: { ...tag }, arrays: arrays.map((a) => a.slice()) });
      this.count(bytes, true);
      return;
    }
    const slot = this.sendSeq % 2;
    const next = (this.rank + 1) % this.size;
    const nextGone = () =>
      `ring: ${this.describe(next)} closed its group but rank ${this.rank} still sends it ${tagString(tag)}; the ranks ran different programs`;
    this.waitUntil(
      () => {
        if (Atomics.load(t.ctl, W.NEXT_GONE)) this.fail(nextGone());
        return Atomics.load(t.ctl, W.SEND_STATE + slot) === SLOT.FREE;
      },
      (s) => `ring: rank ${this.rank} waited ${s} s to send ${tagString(tag)} to ${this.describe(next)}, which did not take the previous blocks (LWM_RING_TIMEOUT); every rank stops`,
    );
    let sab: SharedArrayBuffer | undefined;
    if (bytes > t.sendSabs[slot]!.byteLength) {
      // The slot is free (its credit came back), so no send still reads the old buffer.
      sab = new SharedArrayBuffer(Math.max(2 * t.sendSabs[slot]!.byteLength, Math.ceil(bytes / 8) * 8));
      t.sendSabs[slot] = sab;
    }
    writeMessage(t.sendSabs[slot]!, this.sendSeq, tag, arrays);
    Atomics.store(t.ctl, W.SEND_STATE + slot, SLOT.BUSY);
    const msg: ToWorker = { t: 'send', slot, seq: this.sendSeq, len: bytes, ...(sab ? { sab } : {}) };
    t.worker.postMessage(msg);
    this.sendSeq++;
    this.count(bytes, true);
  }

  /**
   * The arrays are views of one ArrayBuffer that belongs to the caller (no copy was made on
   * this thread); transferring that buffer elsewhere detaches all of them.
   */
  recvPrev(tag: RingTag): RingArray[] {
    this.checkUsable();
    const t = this.t;
    const prev = (this.rank - 1 + this.size) % this.size;
    if (!t) {
      const m = this.loopback.shift();
      if (!m) this.fail(`ring: rank 0 (the only rank) waits for ${tagString(tag)} but did not send it; the program's sends and receives do not match`);
      if (!sameTag(m.tag, tag)) this.fail(`ring: rank 0 expected ${tagString(tag)} but got ${tagString(m.tag)}; the ranks ran different programs`);
      this.count(m.arrays.reduce((n, a) => n + a.byteLength, 0), false);
      return m.arrays;
    }
    this.waitUntil(
      () => {
        // Posted minus taken, in int32 arithmetic so that the counter may wrap.
        if (((Atomics.load(t.ctl, W.RECV_POSTED) - this.recvSeq) | 0) > 0) return true;
        if (Atomics.load(t.ctl, W.PREV_GONE)) {
          this.fail(`ring: ${this.describe(prev)} closed its group while rank ${this.rank} still waited for ${tagString(tag)}; the ranks ran different programs`);
        }
        return false;
      },
      (s) => `ring: rank ${this.rank} waited ${s} s for ${tagString(tag)} to arrive from its previous rank, ${this.describe(prev)} (LWM_RING_TIMEOUT); every rank stops`,
    );
    const { seq, buf } = this.takeDelivered(t);
    const h = readHeader(buf, buf.byteLength);
    if (!h || seq !== this.recvSeq >>> 0 || h.seq !== seq) {
      this.fail(`ring: rank ${this.rank} got a malformed message from ${this.describe(prev)}; run the same lwm version on every rank`);
    }
    if (!sameTag(h.tag, tag)) {
      this.fail(`ring: rank ${this.rank} expected ${tagString(tag)} but got ${tagString(h.tag)}; the ranks ran different programs`);
    }
    const msg: ToWorker = { t: 'consumed', seq };
    t.worker.postMessage(msg);
    this.recvSeq = (this.recvSeq + 1) | 0;
    this.count(buf.byteLength, false);
    return viewArrays(buf, h.arrays);
  }

  /** Sums (or averages, max, min) `data` over all ranks in place; identical bits on every rank. */
  allReduce(data: Float32Array, op: ReduceOp = 'sum'): Float32Array {
    return allReduce(this, data, op);
  }

  /** Overwrites `data` on every rank with root's values. */
  broadcast<T extends Float32Array | Int32Array>(data: T, root = 0): T {
    return broadcast(this, data, root);
  }

  barrier(): void {
    barrier(this);
  }

  stats(): RingStats {
    return { ...this.counters };
  }

  resetStats(): void {
    this.counters = zeroStats();
  }

  /**
   * Stops the whole group: every rank's next (or current) ring call throws an error carrying
   * `reason`. Does not throw here.
   */
  abort(reason: string): void {
    if (this.abortMessage !== null) return;
    this.abortMessage = reason.startsWith('ring: ') ? reason : `ring: rank ${this.rank} aborted the group: ${reason}; every rank stops`;
    if (!this.t) return;
    Atomics.store(this.t.ctl, W.ABORT_SEEN, 1);
    const msg: ToWorker = { t: 'abort', message: this.abortMessage };
    this.t.worker.postMessage(msg);
  }

  /** Leaves the group: peers learn this was deliberate, not a death. */
  async close(): Promise<void> {
    this.shutdown(0);
    if (this.t) await ended(this.t.worker);
  }

  private shutdown(code: number): void {
    if (this.closed) return;
    this.closed = true;
    process.off('exit', this.onExit);
    const t = this.t;
    if (!t) return;
    const msg: ToWorker = { t: 'close', code };
    t.worker.postMessage(msg);
    // Blocking keeps this usable from an 'exit' handler, where nothing asynchronous runs.
    const deadline = performance.now() + CLOSE_WAIT_MS;
    for (let now = performance.now(); now < deadline; now = performance.now()) {
      const gen = Atomics.load(t.ctl, W.GEN);
      if (Atomics.load(t.ctl, W.STATE) === STATE.CLOSED) break;
      Atomics.wait(t.ctl, W.GEN, gen, Math.min(50, deadline - now));
    }
    t.inbox.close();
  }

  private describe(r: number): string {
    const p = this.peers[r];
    return p ? `rank ${r} (pid ${p.pid} on ${p.host})` : `rank ${r}`;
  }

  private count(bytes: number, sent: boolean): void {
    const c = this.counters;
    if (sent) {
      c.bytesSent += bytes;
      c.messagesSent++;
    } else {
      c.bytesReceived += bytes;
      c.messagesReceived++;
    }
    c.messages++;
  }

  /** Throws the group's abort (local or from a peer) or a use-after-close. */
  private checkUsable(): void {
    if (this.abortMessage !== null) throw new LwmError(this.abortMessage);
    const t = this.t;
    if (t) {
      const state = Atomics.load(t.ctl, W.STATE);
      if (state === STATE.ABORTED) {
        Atomics.store(t.ctl, W.ABORT_SEEN, 1);
        const len = Atomics.load(t.ctl, W.ABORT_LEN);
        this.abortMessage = Buffer.from(new Uint8Array(t.abortText, 0, len)).toString();
        throw new LwmError(this.abortMessage);
      }
      if (state === STATE.CLOSED && !this.closed) this.fail(`ring: rank ${this.rank}'s transport thread stopped unexpectedly`);
    }
    if (this.closed) throw new LwmError(`ring: rank ${this.rank} already closed its group`);
  }

  /** Aborts the group with `message` (peers throw it too) and throws it here. */
  private fail(message: string): never {
    this.abort(message);
    throw new LwmError(message);
  }

  private waitUntil(ready: () => boolean, timeoutMessage: (seconds: number) => string): void {
    const ctl = this.t!.ctl;
    const t0 = performance.now();
    const deadline = t0 + this.cfg.recvTimeoutMs;
    try {
      for (;;) {
        // Read the generation before the condition: a change in between then ends the wait at once.
        const gen = Atomics.load(ctl, W.GEN);
        if (ready()) return;
        this.checkUsable();
        const now = performance.now();
        if (now >= deadline) this.fail(timeoutMessage(this.cfg.recvTimeoutMs / 1000));
        Atomics.wait(ctl, W.GEN, gen, Math.min(WAIT_SLICE_MS, deadline - now));
      }
    } finally {
      this.counters.waitMs += performance.now() - t0;
    }
  }

  /** The next message from the inbox; the worker posts it just before counting it. */
  private takeDelivered(t: Transport): Delivered {
    for (let tries = 0; ; tries++) {
      const m = receiveMessageOnPort(t.inbox);
      if (m) return m.message as Delivered;
      if (tries > 1000) this.fail(`ring: rank ${this.rank} lost a message between its threads; this is a bug`);
      Atomics.wait(t.ctl, W.GEN, Atomics.load(t.ctl, W.GEN), 1);
    }
  }
}
