/**
 * The control star: rank 0's ROUTER at MASTER_ADDR:MASTER_PORT and one DEALER from every other
 * rank. It forms the group (challenge, authenticated join, table of data endpoints) and then
 * carries heartbeats, goodbyes and aborts, so every rank hears of a failure through rank 0 even
 * when it is not a neighbour of the failed rank.
 */
import { Dealer, Router } from 'zeromq';
import { mac, macOk, nonce } from './auth.js';
import { isLoopback, type RingConfig } from './config.js';
import { LinkSecret } from './links.js';
import { Outbox, observerEnded, pump } from './outbox.js';
import { KIND, type PeerInfo } from './shared.js';

export interface RendezvousHooks {
  cfg: RingConfig;
  self: PeerInfo;
  masterUrl: string;
  linger: number;
  log(line: string): void;
  fail(message: string, config?: boolean): void;
  formed(table: PeerInfo[], link: LinkSecret): void;
  heard(rank: number): void;
  saidBye(rank: number): void;
  abort(message: string): void;
  /** The DEALER to rank 0 lost its connection. */
  lost(): void;
  onError(err: unknown): void;
}

interface Member {
  id: Buffer;
  info: PeerInfo;
  cnonce: string;
}

/** Rank 0 waits this much longer than the others, so its message naming the missing ranks wins. */
const FOLLOWER_EXTRA_MS = 3000;

/** A control message: its kind byte, then an optional JSON body. */
export function frames(kind: number, body?: unknown): Buffer[] {
  return body === undefined ? [Buffer.of(kind)] : [Buffer.of(kind), Buffer.from(JSON.stringify(body))];
}

/** The JSON body of a control message; {} when it is missing or not an object. */
export function parse(frame: Buffer | undefined): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(frame?.toString() ?? '');
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function validPeer(p: unknown): p is PeerInfo {
  const o = p as Record<string, unknown>;
  return typeof o === 'object' && o !== null && Number.isInteger(o['rank']) && typeof o['endpoint'] === 'string' && Number.isInteger(o['pid']) && typeof o['host'] === 'string';
}

export class Rendezvous {
  private readonly cfg: RingConfig;
  private readonly router: Router | null = null;
  private readonly dealer: Dealer | null = null;
  private readonly box: Outbox;
  private readonly members = new Map<number, Member>();
  private readonly idRank = new Map<string, number>();
  private readonly challenges = new Map<string, string>();
  private done = false;
  private gotChallenge = false;
  private cnonce = '';
  private extraTimer: NodeJS.Timeout | undefined;
  /** Receive loops and observers that must end before the thread may (see observerEnded). */
  readonly pending: Promise<void>[] = [];

  constructor(private readonly h: RendezvousHooks) {
    this.cfg = h.cfg;
    if (this.cfg.rank === 0) this.router = new Router({ linger: h.linger });
    else this.dealer = new Dealer({ linger: h.linger, probeRouter: true });
    this.box = new Outbox((this.router ?? this.dealer)!);
  }

  private get where(): string {
    return `${this.cfg.masterAddr}:${this.cfg.masterPort}`;
  }

  async start(): Promise<void> {
    if (this.router) {
      try {
        await this.router.bind(this.h.masterUrl);
      } catch (err) {
        this.h.fail(
          `ring: rank 0 could not listen on ${this.where} (${(err as Error).message}); set MASTER_PORT to a free port and MASTER_ADDR to an address of rank 0's host`,
          true,
        );
        return;
      }
      this.pending.push(pump(this.router, (f) => this.onRouter(f), this.h.onError));
    } else {
      const dealer = this.dealer!;
      dealer.events.on('disconnect', () => this.h.lost());
      dealer.connect(this.h.masterUrl);
      this.pending.push(pump(dealer, (f) => this.onDealer(f), this.h.onError), observerEnded(dealer));
    }
  }

  /** Rank 0: to every member; others: to rank 0. */
  broadcast(message: Buffer[]): void {
    if (this.router) for (const m of this.members.values()) this.box.push([m.id, ...message]);
    else this.box.push(message);
  }

  /** The ranks whose silence this rank watches. */
  watched(prev: number, next: number): number[] {
    const all = this.cfg.rank === 0 ? [...this.members.keys(), next, prev] : [0, prev, next];
    return [...new Set(all)].filter((r) => r !== this.cfg.rank);
  }

  timedOut(seconds: number): void {
    if (this.router) {
      const missing: number[] = [];
      for (let r = 1; r < this.cfg.size; r++) if (!this.members.has(r)) missing.push(r);
      this.failAll(
        `ring: rank${missing.length > 1 ? 's' : ''} ${missing.join(', ')} never joined rank 0 at ${this.where} within ${seconds} s (LWM_RING_CONNECT_TIMEOUT); start all ${this.cfg.size} ranks with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE`,
      );
    } else if (!this.gotChallenge) {
      this.h.fail(`ring: rank ${this.cfg.rank} could not reach rank 0 at ${this.where} within ${seconds} s (LWM_RING_CONNECT_TIMEOUT); check MASTER_ADDR and MASTER_PORT and that rank 0 is running`);
    } else {
      this.extraTimer = setTimeout(
        () =>
          this.h.fail(`ring: rank ${this.cfg.rank} joined rank 0 at ${this.where} but the group did not form within ${seconds} s (LWM_RING_CONNECT_TIMEOUT); rank 0's output names the missing ranks`),
        FOLLOWER_EXTRA_MS,
      );
    }
  }

  drained(): Promise<void> {
    return this.box.drained();
  }

  close(): void {
    clearTimeout(this.extraTimer);
    (this.router ?? this.dealer)?.close();
  }

  // ---- rank 0 ----

  private onRouter([id, kind, body]: Buffer[]): void {
    if (!id || !kind) return;
    const key = id.toString('hex');
    const r = this.idRank.get(key);
    if (r !== undefined) {
      this.h.heard(r);
      if (kind[0] === KIND.BYE) this.h.saidBye(r);
      else if (kind[0] === KIND.ABORT) this.h.abort(String(parse(body)['message']));
      return;
    }
    if (kind.length === 0) {
      const n = nonce();
      // Bound what port scanners and strangers can make rank 0 remember.
      if (this.challenges.size >= 4 * this.cfg.size + 64) this.challenges.clear();
      this.challenges.set(key, n);
      this.box.push([id, ...frames(KIND.CHALLENGE, { nonce: n, auth: this.cfg.secret !== null })]);
    } else if (kind[0] === KIND.JOIN) {
      this.onJoin(id, key, parse(body));
    }
  }

  private onJoin(id: Buffer, key: string, j: Record<string, unknown>): void {
    const challenge = this.challenges.get(key);
    const { rank, size, endpoint, pid, host, cnonce } = j;
    if (challenge === undefined || !Number.isInteger(rank) || !Number.isInteger(size) || !Number.isInteger(pid)) return;
    if (typeof endpoint !== 'string' || typeof host !== 'string' || typeof cnonce !== 'string') return;
    // Claimed by a peer not yet authenticated: printable characters only, bounded.
    const clean = (v: string) => v.replace(/[^\x20-\x7e]/g, '?').slice(0, 200);
    const who = `rank ${rank} (pid ${pid} on ${clean(host)}, data endpoint ${clean(endpoint)})`;
    if (!macOk(this.cfg.secret, j['mac'], 'join', challenge, rank as number, size as number, endpoint, pid as number, host, cnonce)) {
      this.h.log(`ring: rank 0 refused a process claiming to be ${who}: wrong or missing LWM_RING_SECRET`);
      this.box.push([id, ...frames(KIND.REFUSED, { reason: 'secret' })]);
      return;
    }
    if (this.done) {
      this.h.log(`ring: rank 0 refused a process claiming to be ${who}: the group already formed`);
      this.box.push([id, ...frames(KIND.REFUSED, { reason: 'late', message: `the group of ${this.cfg.size} ranks already formed` })]);
      return;
    }
    const r = rank as number;
    const info: PeerInfo = { rank: r, endpoint, pid: pid as number, host };
    if (size !== this.cfg.size) {
      this.failAll(`ring: ${who} was started with world size ${size} but rank 0 with ${this.cfg.size}; start every rank with the same WORLD_SIZE`, id);
      return;
    }
    const prior = r === 0 ? { info: this.h.self } : this.members.get(r);
    if (prior && !(prior.info.pid === info.pid && prior.info.host === info.host)) {
      this.failAll(`ring: rank ${r} joined twice (pid ${prior.info.pid} on ${prior.info.host} and pid ${info.pid} on ${info.host}); every process needs its own RANK`, id);
      return;
    }
    if (r < 1 || r >= this.cfg.size) {
      this.failAll(`ring: ${who} is outside ranks 0..${this.cfg.size - 1}`, id);
      return;
    }
    const old = this.members.get(r);
    if (old) this.idRank.delete(old.id.toString('hex'));
    this.members.set(r, { id, info, cnonce });
    this.idRank.set(key, r);
    this.h.heard(r);
    if (this.members.size === this.cfg.size - 1) this.form();
  }

  private form(): void {
    const table = [this.h.self, ...[...this.members.values()].map((m) => m.info).sort((a, b) => a.rank - b.rank)];
    const hosts = new Set(table.map((p) => p.host));
    const local = table.find((p) => isLoopback(/^tcp:\/\/\[?([^\]]*?)\]?:\d+$/.exec(p.endpoint)?.[1] ?? ''));
    if (hosts.size > 1 && local) {
      this.failAll(
        `ring: the ranks run on ${hosts.size} hosts but rank ${local.rank} (on ${local.host}) advertises ${local.endpoint}; set LWM_RING_BIND_ADDR=0.0.0.0 (or LWM_RING_ADVERTISE_ADDR) on every rank`,
      );
      return;
    }
    this.done = true;
    const session = nonce();
    const peers = JSON.stringify(table);
    for (const m of this.members.values()) {
      this.box.push([m.id, ...frames(KIND.TABLE, { session, peers, mac: mac(this.cfg.secret, 'table', m.cnonce, session, peers) })]);
    }
    this.h.formed(table, new LinkSecret(this.cfg.secret, session, 0));
  }

  private failAll(message: string, extra?: Buffer): void {
    this.done = true;
    const ids = [...this.members.values()].map((m) => m.id);
    if (extra) ids.push(extra);
    for (const id of ids) this.box.push([id, ...frames(KIND.FAIL, { message })]);
    this.h.fail(message);
  }

  // ---- other ranks ----

  private onDealer([kind, body]: Buffer[]): void {
    if (!kind || kind.length === 0) return;
    const b = parse(body);
    if (this.done) this.h.heard(0);
    switch (kind[0]) {
      case KIND.CHALLENGE: {
        if (this.done) return;
        this.gotChallenge = true;
        if (this.cfg.secret !== null && b['auth'] !== true) {
          this.h.fail(`ring: rank 0 at ${this.where} does not use LWM_RING_SECRET but rank ${this.cfg.rank} does; set the same LWM_RING_SECRET on every rank`, true);
          return;
        }
        const s = this.h.self;
        this.cnonce = nonce();
        const m = mac(this.cfg.secret, 'join', String(b['nonce']), s.rank, this.cfg.size, s.endpoint, s.pid, s.host, this.cnonce);
        this.box.push(frames(KIND.JOIN, { ...s, size: this.cfg.size, cnonce: this.cnonce, mac: m }));
        return;
      }
      case KIND.REFUSED:
        if (b['reason'] === 'secret') this.h.fail('ring: rank 0 refused this process: wrong or missing LWM_RING_SECRET (set the same value on every rank)', true);
        else this.h.fail(`ring: rank 0 refused this process: ${String(b['message'])}`);
        return;
      case KIND.FAIL:
        this.h.fail(String(b['message']));
        return;
      case KIND.TABLE:
        this.onTable(b);
        return;
      case KIND.BYE:
        this.h.saidBye(0);
        return;
      case KIND.ABORT:
        this.h.abort(String(b['message']));
        return;
    }
  }

  private onTable(b: Record<string, unknown>): void {
    if (this.done) return;
    const { session, peers } = b;
    if (typeof session !== 'string' || typeof peers !== 'string' || !macOk(this.cfg.secret, b['mac'], 'table', this.cnonce, session, peers)) {
      this.h.fail(`ring: the group table from rank 0 at ${this.where} failed authentication; set the same LWM_RING_SECRET on every rank`, true);
      return;
    }
    const table: unknown = JSON.parse(peers);
    if (!Array.isArray(table) || table.length !== this.cfg.size || !table.every((p, i) => validPeer(p) && p.rank === i)) {
      this.h.fail(`ring: rank 0 at ${this.where} sent a malformed group table; run the same lwm version on every rank`);
      return;
    }
    this.done = true;
    this.h.heard(0);
    this.h.formed(table as PeerInfo[], new LinkSecret(this.cfg.secret, session, this.cfg.rank));
  }
}
