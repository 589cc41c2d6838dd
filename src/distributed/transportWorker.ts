/**
 * The ring's transport thread. Every socket lives here, never on the compute thread: a socket
 * only moves bytes while its thread's event loop runs, and the compute thread spends its time in
 * TF.js kernels or blocked in Atomics.wait (spec section 10.2).
 *
 * Sockets: rank 0 owns the rendezvous ROUTER at MASTER_ADDR:MASTER_PORT, every other rank a
 * DEALER to it (kept for heartbeats and aborts afterwards). Every rank binds a data ROUTER that
 * only its previous rank connects to, and connects a data DEALER to the next rank's ROUTER.
 * Blocks flow DEALER -> ROUTER; credits flow back on the same connection.
 */
import * as dns from 'node:dns/promises';
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { Dealer, Router } from 'zeromq';
import { Outbox, observerEnded, pump } from './outbox.js';
import { frames as controlFrames, parse, Rendezvous } from './rendezvous.js';
import { ABORT_TEXT_BYTES, KIND, SLOT, STATE, W, frameSeq, type Delivered, type PeerInfo, type ToWorker, type WorkerInit } from './shared.js';
import { dataChallenge, dataHello, dataWelcomeOk, type LinkSecret } from './links.js';

const init = workerData as WorkerInit;
const cfg = init.cfg;
const me = cfg.rank;
const size = cfg.size;
const next = (me + 1) % size;
const prev = (me - 1 + size) % size;
const ctl = new Int32Array(init.ctl);
const sendSabs = init.sendSabs;
const port = parentPort!;
/** How long closed sockets keep trying to deliver goodbyes; a dead peer never takes them. */
const LINGER_MS = 500;
/**
 * libzmq ends a closed socket (and its observer) only after the linger; the thread must not end
 * before that (see observerEnded), so wait this long at most.
 */
const SOCKETS_END_MS = LINGER_MS + 1500;
/** Unauthenticated connections whose challenges or hellos are kept at most. */
const MAX_STRANGERS = 64;
/** A goodbye travels ahead of the disconnect it explains; give it this long to be read. */
const DISCONNECT_SETTLE_MS = 300;

function bump(): void {
  Atomics.add(ctl, W.GEN, 1);
  Atomics.notify(ctl, W.GEN);
}

function log(line: string): void {
  // Synchronous: the main thread may be blocked, and process.stderr in a worker goes through it.
  fs.writeSync(2, `${line}\n`);
}

/** Text from peers goes into one-line errors and logs: no control characters, bounded length. */
function oneLine(text: unknown): string {
  return String(text).replace(/[\u0000-\u001f\u007f]+/g, ' ').slice(0, 2000);
}

function host(addr: string): string {
  return addr.includes(':') ? `[${addr}]` : addr;
}

type Phase = 'rendezvous' | 'linking' | 'ready' | 'closing' | 'closed';

let phase: Phase = 'rendezvous';
let aborted = false;
let abortMessage = '';
let peers: PeerInfo[] = [];
let link: LinkSecret | null = null;
let connectTimer: NodeJS.Timeout | undefined;
let heartbeatTimer: NodeJS.Timeout | undefined;
let graceTimer: NodeJS.Timeout | undefined;

const dataIn = new Router({ linger: LINGER_MS });
const dataOut = new Dealer({ linger: LINGER_MS, probeRouter: true });
const outData = new Outbox(dataOut);
const inData = new Outbox(dataIn);
let endpoint = '';
let rendezvous: Rendezvous | undefined;
/** What must finish before this thread may end (see observerEnded). */
const pending: Promise<void>[] = [];

// Inbound data link (from prev).
let prevId: Buffer | null = null;
const dataNonces = new Map<string, string>();
const pendingHellos: Buffer[][] = [];
let nextLinked = false;
let nextNonce = '';

// Ordered delivery to the compute thread.
let recvSeq = 0;
let creditSeq = 0;

// Liveness.
const lastHeard = new Map<number, number>();
const gone = new Set<number>();
let lastTick = 0;

function describe(r: number): string {
  const p = peers[r];
  return p ? `rank ${r} (pid ${p.pid} on ${p.host})` : `rank ${r}`;
}

/** Failure before the group formed: init() rejects with this message. */
function fail(message: string, config = false): void {
  if (phase === 'closing' || phase === 'closed') return;
  port.postMessage({ t: 'error', config, message });
  void shutdown();
}

function abortAll(reason: string): void {
  if (aborted || phase === 'closing' || phase === 'closed') return;
  const message = oneLine(reason);
  aborted = true;
  abortMessage = message;
  const text = Buffer.from(message).subarray(0, ABORT_TEXT_BYTES);
  new Uint8Array(init.abortText).set(text);
  Atomics.store(ctl, W.ABORT_LEN, text.length);
  Atomics.store(ctl, W.STATE, STATE.ABORTED);
  bump();
  if (phase !== 'ready') {
    fail(message);
    return;
  }
  // Relay to every peer this rank can reach, so every rank learns even when only one saw it.
  rendezvous?.broadcast(controlFrames(KIND.ABORT, { message }));
  outData.push(controlFrames(KIND.ABORT, { message }));
  if (prevId) inData.push([prevId, ...controlFrames(KIND.ABORT, { message })]);
  graceTimer = setTimeout(() => {
    if (Atomics.load(ctl, W.ABORT_SEEN)) return;
    // The compute thread is inside a long native call or ignores the ring; waiting longer would
    // leave a zombie rank holding its share of the machine.
    log(`${message} (the compute thread did not stop within ${cfg.abortGraceMs / 1000} s, so the ring transport ended the process)`);
    process.kill(process.pid, 'SIGTERM');
    setTimeout(() => process.kill(process.pid, 'SIGKILL'), 2000);
  }, cfg.abortGraceMs);
}

function declareDead(r: number, what: string): void {
  if (gone.has(r)) return;
  abortAll(`ring: ${describe(r)} ${what}, seen by rank ${me}; every rank stops`);
}

function heard(r: number | undefined): void {
  if (r !== undefined) lastHeard.set(r, performance.now());
}

/**
 * Rank r leaves deliberately. `link` says which data connection carried the goodbye: only that
 * one is ordered after r's last block or credit, so only it may tell the compute thread that
 * nothing more will come.
 */
function saidBye(r: number, link?: 'fromPrev' | 'fromNext'): void {
  gone.add(r);
  if (link === 'fromNext') Atomics.store(ctl, W.NEXT_GONE, 1);
  if (link === 'fromPrev') Atomics.store(ctl, W.PREV_GONE, 1);
  bump();
}

/** A connection this rank opened (to next, or to rank 0) dropped. */
function lost(r: number): void {
  // Before the table zmq just reconnects; the connect timeout bounds that wait.
  if (phase !== 'ready' && phase !== 'linking') return;
  setTimeout(() => {
    if (gone.has(r)) return;
    if (phase === 'linking') fail(`ring: ${describe(r)} closed its connection before the group formed; see its output`);
    else if (phase === 'ready') declareDead(r, 'died (its connection closed without a goodbye)');
  }, DISCONNECT_SETTLE_MS);
}

// ---- delivery ----

function onData(frame: Buffer): void {
  const seq = frameSeq(frame);
  if (seq !== recvSeq) {
    abortAll(`ring: rank ${me} got message ${seq} from ${describe(prev)} but expected message ${recvSeq}; the ranks run different lwm versions or the stream is corrupt; every rank stops`);
    return;
  }
  recvSeq = (recvSeq + 1) >>> 0;
  // The one copy on the receiving side, here rather than on the compute thread; it also takes
  // the page faults of the fresh memory (see shared.ts).
  const buf = new ArrayBuffer(frame.length);
  new Uint8Array(buf).set(frame);
  const d: Delivered = { seq, buf };
  init.inbox.postMessage(d, [buf]);
  Atomics.add(ctl, W.RECV_POSTED, 1);
  bump();
}

function onCredit(frame: Buffer | undefined): void {
  const seq = frame && frame.length >= 4 ? frame.readUInt32LE(0) : -1;
  if (seq !== creditSeq) {
    abortAll(`ring: rank ${me} got credit ${seq} from ${describe(next)} but expected ${creditSeq}; every rank stops`);
    return;
  }
  creditSeq = (creditSeq + 1) >>> 0;
  Atomics.store(ctl, W.SEND_STATE + (seq % 2), SLOT.FREE);
  bump();
}

// ---- data links ----

function onDataIn(frames: Buffer[]): void {
  const [id, kind, body] = frames;
  if (!id || !kind) return;
  if (prevId && id.equals(prevId)) {
    heard(prev);
    switch (kind[0]) {
      case KIND.DATA:
        if (body) onData(body);
        return;
      case KIND.BYE:
        saidBye(prev, 'fromPrev');
        return;
      case KIND.ABORT:
        abortAll(String(parse(body)['message']));
        return;
    }
    return;
  }
  const key = id.toString('hex');
  if (kind.length === 0) {
    // The DEALER's probe on connect: challenge it before anything it sends is believed.
    const challenge = dataChallenge();
    // Only prev should ever connect here; bound what strangers can make this thread remember.
    if (dataNonces.size >= MAX_STRANGERS) dataNonces.clear();
    dataNonces.set(key, challenge.nonce);
    inData.push([id, ...controlFrames(KIND.CHALLENGE, challenge)]);
  } else if (kind[0] === KIND.HELLO) {
    if (!link) {
      if (pendingHellos.length < MAX_STRANGERS) pendingHellos.push(frames);
    } else verifyHello(id, key, parse(body));
  }
  // Anything else from an unauthenticated connection is dropped unread.
}

function verifyHello(id: Buffer, key: string, hello: Record<string, unknown>): void {
  const nonce = dataNonces.get(key);
  const claimed = hello['rank'];
  if (nonce === undefined || !link) return;
  if (claimed !== prev || !link.helloOk(nonce, hello)) {
    log(`ring: rank ${me} refused a data connection claiming rank ${oneLine(claimed).slice(0, 20)}: ${claimed !== prev ? `only rank ${prev} sends to rank ${me}` : 'wrong LWM_RING_SECRET'}`);
    return;
  }
  if (prevId) {
    log(`ring: rank ${me} refused a second data connection claiming rank ${prev}`);
    return;
  }
  prevId = id;
  heard(prev);
  inData.push([id, ...controlFrames(KIND.WELCOME, link.welcome(hello))]);
  maybeReady();
}

function onDataOut(frames: Buffer[]): void {
  const [kind, body] = frames;
  if (!kind || kind.length === 0 || !link) return;
  // Until next proved it holds the secret, whoever answers on its port is only heard out for the handshake.
  if (!nextLinked && kind[0] !== KIND.CHALLENGE && kind[0] !== KIND.WELCOME) return;
  heard(next);
  const msg = () => parse(body);
  switch (kind[0]) {
    case KIND.CHALLENGE: {
      const hello = dataHello(link, me, msg());
      nextNonce = hello.cnonce;
      outData.push(controlFrames(KIND.HELLO, hello));
      return;
    }
    case KIND.WELCOME:
      if (!dataWelcomeOk(link, next, nextNonce, msg())) {
        fail(`ring: ${describe(next)} failed to authenticate its data socket (wrong LWM_RING_SECRET on that rank, or another process holds its port)`);
        return;
      }
      nextLinked = true;
      maybeReady();
      return;
    case KIND.CREDIT:
      onCredit(body);
      return;
    case KIND.BYE:
      saidBye(next, 'fromNext');
      return;
    case KIND.ABORT:
      abortAll(String(msg()['message']));
      return;
  }
}

function startLinks(table: PeerInfo[], secret: LinkSecret): void {
  peers = table;
  link = secret;
  phase = 'linking';
  dataOut.connect(table[next]!.endpoint);
  for (const frames of pendingHellos.splice(0)) onDataIn(frames);
}

function maybeReady(): void {
  if (phase !== 'linking' || !prevId || !nextLinked) return;
  phase = 'ready';
  clearTimeout(connectTimer);
  const now = performance.now();
  for (const r of rendezvous?.watched(prev, next) ?? []) lastHeard.set(r, now);
  lastTick = now;
  heartbeatTimer = setInterval(heartbeat, cfg.heartbeatIntervalMs);
  Atomics.store(ctl, W.STATE, STATE.READY);
  bump();
  port.postMessage({ t: 'ready', peers });
}

function heartbeat(): void {
  const now = performance.now();
  const late = now - lastTick - cfg.heartbeatIntervalMs;
  lastTick = now;
  if (late > cfg.heartbeatTimeoutMs / 2) {
    // This process was itself stopped or starved: its clocks say nothing about its peers.
    for (const r of lastHeard.keys()) lastHeard.set(r, now);
  }
  const hb = [Buffer.of(KIND.HEARTBEAT)];
  rendezvous?.broadcast(hb);
  outData.push(hb);
  if (prevId) inData.push([prevId, ...hb]);
  for (const [r, t] of lastHeard) {
    if (!gone.has(r) && now - t > cfg.heartbeatTimeoutMs) {
      declareDead(r, `stopped responding (nothing heard for ${((now - t) / 1000).toFixed(1)} s; LWM_RING_HEARTBEAT_TIMEOUT=${cfg.heartbeatTimeoutMs / 1000})`);
      return;
    }
  }
}

function onConnectTimeout(): void {
  const s = cfg.connectTimeoutMs / 1000;
  if (phase === 'rendezvous') {
    rendezvous?.timedOut(s);
  } else if (phase === 'linking') {
    if (!nextLinked) fail(`ring: rank ${me} could not connect to ${describe(next)} at ${peers[next]?.endpoint} within ${s} s (LWM_RING_CONNECT_TIMEOUT); check LWM_RING_BIND_ADDR / LWM_RING_ADVERTISE_ADDR on that rank and firewalls`);
    else fail(`ring: ${describe(prev)} did not connect to rank ${me} at ${endpoint} within ${s} s (LWM_RING_CONNECT_TIMEOUT); check LWM_RING_ADVERTISE_ADDR on rank ${me} and firewalls`);
  }
}

// ---- lifecycle ----

function onInternalError(err: unknown): void {
  if (phase === 'closing' || phase === 'closed') return;
  const text = err instanceof Error ? err.message : String(err);
  if (phase === 'ready') abortAll(`ring: rank ${me}'s transport thread failed: ${text}; every rank stops`);
  else fail(`ring: rank ${me}'s transport thread failed: ${text}`);
}

async function shutdown(code?: number): Promise<void> {
  if (phase === 'closing' || phase === 'closed') return;
  const wasReady = phase === 'ready';
  phase = 'closing';
  clearTimeout(connectTimer);
  clearInterval(heartbeatTimer);
  clearTimeout(graceTimer);
  if (wasReady && code !== undefined) {
    // After an abort, repeat its message: a peer that missed the relay would otherwise report
    // this rank's exit as the cause.
    const farewell = aborted
      ? controlFrames(KIND.ABORT, { message: abortMessage })
      : code === 0
        ? [Buffer.of(KIND.BYE)]
        : controlFrames(KIND.ABORT, { message: `ring: ${describe(me)} exited with code ${code}; every rank stops` });
    rendezvous?.broadcast(farewell);
    outData.push(farewell);
    if (prevId) inData.push([prevId, ...farewell]);
  }
  // Hand queued messages (goodbyes, a FAIL naming missing ranks) to libzmq; linger then sends them.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all([outData.drained(), inData.drained(), rendezvous?.drained()]),
    new Promise((r) => (timer = setTimeout(r, LINGER_MS))),
  ]);
  clearTimeout(timer);
  for (const s of [dataIn, dataOut]) s.close();
  rendezvous?.close();
  await Promise.race([Promise.all([...pending, ...(rendezvous?.pending ?? [])]), new Promise((r) => (timer = setTimeout(r, SOCKETS_END_MS)))]);
  clearTimeout(timer);
  phase = 'closed';
  Atomics.store(ctl, W.STATE, STATE.CLOSED);
  bump();
  init.inbox.close();
  port.close();
}

port.on('message', (m: ToWorker) => {
  switch (m.t) {
    case 'send':
      if (m.sab) sendSabs[m.slot] = m.sab;
      if (phase === 'ready' && !aborted) outData.push([Buffer.of(KIND.DATA), Buffer.from(sendSabs[m.slot]!, 0, m.len)]);
      return;
    case 'consumed':
      if (prevId && phase === 'ready') {
        const credit = Buffer.alloc(4);
        credit.writeUInt32LE(m.seq >>> 0);
        inData.push([prevId, Buffer.of(KIND.CREDIT), credit]);
      }
      return;
    case 'abort':
      abortAll(m.message);
      return;
    case 'close':
      void shutdown(m.code);
      return;
  }
});

async function start(): Promise<void> {
  try {
    await dataIn.bind(`tcp://${host(cfg.bindAddr)}:*`);
  } catch (err) {
    fail(`ring: rank ${me} could not bind its data socket on ${cfg.bindAddr} (${(err as Error).message}); set LWM_RING_BIND_ADDR to an address of this host`, true);
    return;
  }
  const boundPort = /:(\d+)$/.exec(dataIn.lastEndpoint ?? '')?.[1];
  endpoint = `tcp://${host(cfg.advertiseAddr)}:${boundPort}`;
  pending.push(pump(dataIn, onDataIn, onInternalError), pump(dataOut, onDataOut, onInternalError), observerEnded(dataOut));
  dataOut.events.on('disconnect', () => lost(next));

  let masterIp = cfg.masterAddr;
  if (me === 0) {
    try {
      masterIp = (await dns.lookup(cfg.masterAddr)).address;
    } catch (err) {
      fail(`ring: MASTER_ADDR=${cfg.masterAddr} does not resolve (${(err as Error).message}); set it to rank 0's address`, true);
      return;
    }
  }
  rendezvous = new Rendezvous({
    cfg,
    self: { rank: me, endpoint, pid: init.pid, host: init.host },
    masterUrl: `tcp://${host(masterIp)}:${cfg.masterPort}`,
    linger: LINGER_MS,
    log,
    fail,
    formed: startLinks,
    heard,
    saidBye: (r) => saidBye(r),
    abort: (message) => abortAll(message),
    lost: () => lost(0),
    onError: onInternalError,
  });
  connectTimer = setTimeout(onConnectTimeout, cfg.connectTimeoutMs);
  await rendezvous.start();
}

process.on('uncaughtException', onInternalError);
process.on('exit', () => {
  // A thread that dies while the group is live must not leave the compute thread waiting.
  if (phase === 'closed' || Atomics.load(ctl, W.STATE) === STATE.ABORTED) return;
  const text = Buffer.from(`ring: rank ${me}'s transport thread exited unexpectedly; every rank stops`);
  new Uint8Array(init.abortText).set(text);
  Atomics.store(ctl, W.ABORT_LEN, text.length);
  Atomics.store(ctl, W.STATE, STATE.ABORTED);
  bump();
});
start().catch(onInternalError);
