import * as os from 'node:os';
import { ConfigError, InputError } from '../../ops/errors.js';
import { detectLaunch, type LaunchSource } from './env.js';

/** Overrides for ProcessGroup.init; anything left out comes from the environment. */
export interface ProcessGroupOptions {
  rank?: number;
  size?: number;
  masterAddr?: string;
  masterPort?: number;
  /** Address the data socket binds (LWM_RING_BIND_ADDR, default 127.0.0.1). */
  bindAddr?: string;
  /** Address peers use to reach this rank (LWM_RING_ADVERTISE_ADDR, default the bind address). */
  advertiseAddr?: string;
  /** Shared secret every rank must hold (LWM_RING_SECRET); required off loopback. */
  secret?: string;
  /** LWM_RING_CONNECT_TIMEOUT seconds, default 60. */
  connectTimeoutMs?: number;
  /** LWM_RING_HEARTBEAT_TIMEOUT seconds, default 10. */
  heartbeatTimeoutMs?: number;
  /** Default min(1 s, heartbeat timeout / 4). */
  heartbeatIntervalMs?: number;
  /** Longest one recvPrev or sendNext may wait: LWM_RING_TIMEOUT seconds, default 300. */
  recvTimeoutMs?: number;
  /**
   * How long the compute thread has to notice an abort before the transport thread ends the
   * process itself: LWM_RING_ABORT_GRACE seconds, default 5.
   */
  abortGraceMs?: number;
  /** Initial size of each of the 2 send slots (they grow on demand); default 4 MiB. */
  slotBytes?: number;
  /** Environment to read instead of process.env. */
  env?: Record<string, string | undefined>;
}

export interface RingConfig {
  rank: number;
  size: number;
  masterAddr: string;
  masterPort: number;
  bindAddr: string;
  advertiseAddr: string;
  secret: string | null;
  connectTimeoutMs: number;
  heartbeatTimeoutMs: number;
  heartbeatIntervalMs: number;
  recvTimeoutMs: number;
  abortGraceMs: number;
  slotBytes: number;
  source: LaunchSource | 'options';
}

export function isLoopback(addr: string): boolean {
  const a = addr.replace(/^\[|\]$/g, '').toLowerCase();
  return a === 'localhost' || a === '::1' || /^127\.\d+\.\d+\.\d+$/.test(a);
}

function firstExternalIPv4(): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const ni of list ?? []) if (ni.family === 'IPv4' && !ni.internal) return ni.address;
  }
  return undefined;
}

function seconds(env: Record<string, string | undefined>, name: string, fallbackS: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return fallbackS * 1000;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw new ConfigError(`${name}=${JSON.stringify(raw)} must be a positive number of seconds`);
  return v * 1000;
}

function positive(name: string, v: number | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  if (!Number.isFinite(v) || v <= 0) throw new ConfigError(`ProcessGroup option ${name}=${v} must be a positive number`);
  return v;
}

export function resolveRingConfig(opts: ProcessGroupOptions = {}): RingConfig {
  const env = opts.env ?? process.env;
  const overridden = opts.rank !== undefined || opts.size !== undefined;
  const launched = detectLaunch(env);
  const rank = opts.rank ?? launched.rank;
  const size = opts.size ?? launched.size;
  if (!Number.isInteger(size) || size < 1) throw new InputError(`ring: size ${size} must be a positive integer`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw new InputError(`ring: rank ${rank} is out of range for size ${size} (ranks are 0..${size - 1})`);
  const masterAddr = opts.masterAddr ?? launched.masterAddr;
  const masterPort = opts.masterPort ?? launched.masterPort;
  if (!Number.isInteger(masterPort) || masterPort < 1 || masterPort > 65535) throw new InputError(`ring: master port ${masterPort} is not a TCP port (1-65535)`);

  const bindAddr = opts.bindAddr ?? (env['LWM_RING_BIND_ADDR']?.trim() || '127.0.0.1');
  const advertiseAddr =
    opts.advertiseAddr ??
    (env['LWM_RING_ADVERTISE_ADDR']?.trim() || (bindAddr === '0.0.0.0' ? (firstExternalIPv4() ?? '127.0.0.1') : bindAddr));
  const secret = opts.secret ?? (env['LWM_RING_SECRET'] || null);
  if (size > 1 && secret === null) {
    const exposed = !isLoopback(masterAddr) ? `MASTER_ADDR=${masterAddr}` : !isLoopback(bindAddr) ? `LWM_RING_BIND_ADDR=${bindAddr}` : null;
    if (exposed) {
      throw new ConfigError(
        `ring: ${exposed} is not a loopback address, so LWM_RING_SECRET must be set to the same value on every rank (e.g. export LWM_RING_SECRET=$(openssl rand -hex 16)) so that other hosts cannot join the group`,
      );
    }
  }

  const heartbeatTimeoutMs = positive('heartbeatTimeoutMs', opts.heartbeatTimeoutMs, seconds(env, 'LWM_RING_HEARTBEAT_TIMEOUT', 10));
  return {
    rank,
    size,
    masterAddr,
    masterPort,
    bindAddr,
    advertiseAddr,
    secret,
    connectTimeoutMs: positive('connectTimeoutMs', opts.connectTimeoutMs, seconds(env, 'LWM_RING_CONNECT_TIMEOUT', 60)),
    heartbeatTimeoutMs,
    heartbeatIntervalMs: positive('heartbeatIntervalMs', opts.heartbeatIntervalMs, Math.min(1000, heartbeatTimeoutMs / 4)),
    recvTimeoutMs: positive('recvTimeoutMs', opts.recvTimeoutMs, seconds(env, 'LWM_RING_TIMEOUT', 300)),
    abortGraceMs: positive('abortGraceMs', opts.abortGraceMs, seconds(env, 'LWM_RING_ABORT_GRACE', 5)),
    slotBytes: Math.ceil(positive('slotBytes', opts.slotBytes, 4 << 20) / 8) * 8,
    source: overridden ? 'options' : launched.source,
  };
}
