/**
 * `lwm launch -n N -- <command...>`: N local ranks of one program, wired up with the
 * torchrun-style variables that ProcessGroup.init reads. One failed rank stops the rest.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import { constants } from 'node:os';
import { StringDecoder } from 'node:string_decoder';
import type { Writable } from 'node:stream';
import { InputError } from '../../ops/errors.js';

export interface LaunchOptions {
  nprocs: number;
  /** Program and arguments, run once per rank. */
  command: string[];
  /** Added to this process's environment for every rank. */
  env?: Record<string, string | undefined>;
  /** Default: a free port found by binding port 0. */
  masterPort?: number;
  /** Give rank i CUDA_VISIBLE_DEVICES=i (default: LWM_LAUNCH_GPUS=1). */
  gpus?: boolean;
  /** Pass SIGINT/SIGTERM sent to this process on to the ranks (the CLI does). */
  forwardSignals?: boolean;
  /** How long a rank gets between SIGTERM and SIGKILL; default 5000. */
  killGraceMs?: number;
  /**
   * This rank gets the launcher's own stdin, stdout and stderr, unprefixed: the rank a user
   * talks to (lwm chat --sp). Default: none.
   */
  interactiveRank?: number;
  /** Where prefixed rank output and the launcher's own lines go; default process.stdout/stderr. */
  stdout?: Writable;
  stderr?: Writable;
}

export interface RankExit {
  rank: number;
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LaunchResult {
  /** 0 when every rank exited 0; else the first failed rank's code (128 + signal number if killed). */
  code: number;
  /** The first rank that failed, if any. */
  failed: RankExit | null;
  ranks: RankExit[];
}

/** A TCP port that was free a moment ago (rank 0 binds it soon after). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Writes whole lines, each prefixed, however the child's output is chunked. */
function prefixer(out: Writable, prefix: string): { write(chunk: Buffer): void; end(): void } {
  const decoder = new StringDecoder('utf8');
  let partial = '';
  return {
    write(chunk) {
      const lines = (partial + decoder.write(chunk)).split('\n');
      partial = lines.pop() ?? '';
      if (lines.length) out.write(lines.map((l) => `${prefix}${l}\n`).join(''));
    },
    end() {
      const rest = partial + decoder.end();
      if (rest) out.write(`${prefix}${rest}\n`);
      partial = '';
    },
  };
}

function exitCode(e: RankExit): number {
  if (e.code !== null) return e.code;
  const n = e.signal ? constants.signals[e.signal] : undefined;
  return n ? 128 + n : 1;
}

function describeExit(e: RankExit): string {
  return e.code !== null ? `exited with code ${e.code}` : `was killed by ${e.signal}`;
}

export async function launch(opts: LaunchOptions): Promise<LaunchResult> {
  const n = opts.nprocs;
  if (!Number.isInteger(n) || n < 1) throw new InputError(`-n ${n} must be a positive whole number of ranks`);
  if (opts.command.length === 0) throw new InputError('give the command to run after --, e.g. lwm launch -n 2 -- node train.js');
  const out = opts.stdout ?? process.stdout;
  const err = opts.stderr ?? process.stderr;
  const gpus = opts.gpus ?? process.env['LWM_LAUNCH_GPUS'] === '1';
  const masterPort = opts.masterPort ?? (await freePort());
  const graceMs = opts.killGraceMs ?? 5000;
  const [program, ...args] = opts.command as [string, ...string[]];

  const children: ChildProcess[] = [];
  const exits: (RankExit | undefined)[] = new Array(n).fill(undefined);
  let failed: RankExit | null = null;
  let stopping = false;
  let killTimer: NodeJS.Timeout | undefined;

  const stopAll = (signal: NodeJS.Signals) => {
    stopping = true;
    children.forEach((c, i) => {
      if (!exits[i]) c.kill(signal);
    });
    killTimer ??= setTimeout(() => children.forEach((c, i) => !exits[i] && c.kill('SIGKILL')), graceMs);
  };

  const done = new Promise<void>((resolve) => {
    let left = n;
    const finish = (rank: number, e: RankExit, why?: string) => {
      if (exits[rank]) return;
      exits[rank] = e;
      if ((e.code !== 0 || e.signal !== null) && !failed) {
        failed = e;
        if (!stopping) {
          const others = exits.filter((x) => !x).length;
          const what = why ?? `rank ${rank} (pid ${e.pid}) ${describeExit(e)}`;
          err.write(`lwm launch: ${what}${others ? `; stopping the other ${others} rank${others > 1 ? 's' : ''}` : ''}\n`);
          stopAll('SIGTERM');
        }
      }
      if (--left === 0) resolve();
    };
    for (let rank = 0; rank < n; rank++) {
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        ...opts.env,
        RANK: String(rank),
        WORLD_SIZE: String(n),
        LOCAL_RANK: String(rank),
        LOCAL_WORLD_SIZE: String(n),
        MASTER_ADDR: '127.0.0.1',
        MASTER_PORT: String(masterPort),
        // Each rank's native thread pool takes its share of this machine's cores.
        LWM_LOCAL_WORLD_SIZE: String(n),
      };
      if (gpus) env['CUDA_VISIBLE_DEVICES'] = String(rank);
      const interactive = rank === opts.interactiveRank;
      const child = spawn(program, args, { env, stdio: interactive ? 'inherit' : ['ignore', 'pipe', 'pipe'] });
      children.push(child);
      const o = prefixer(out, `[rank ${rank}] `);
      const e = prefixer(err, `[rank ${rank}] `);
      child.stdout?.on('data', (c: Buffer) => o.write(c));
      child.stderr?.on('data', (c: Buffer) => e.write(c));
      child.once('error', (spawnErr) => finish(rank, { rank, pid: child.pid, code: 127, signal: null }, `could not start rank ${rank} (${spawnErr.message})`));
      // 'close' comes after the pipes drained, so a rank's last lines are printed before we return.
      child.once('close', (code, signal) => {
        o.end();
        e.end();
        finish(rank, { rank, pid: child.pid, code, signal });
      });
    }
  });

  let interrupted: NodeJS.Signals | null = null;
  const forward = (signal: NodeJS.Signals) => {
    interrupted ??= signal;
    err.write(`lwm launch: got ${signal}; passing it to every rank\n`);
    stopAll(signal);
  };
  const onInt = () => forward('SIGINT');
  const onTerm = () => forward('SIGTERM');
  if (opts.forwardSignals) {
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
  }
  try {
    await done;
  } finally {
    clearTimeout(killTimer);
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
  const ranks = exits as RankExit[];
  const first = failed as RankExit | null;
  let code = first ? Math.max(1, exitCode(first)) : 0;
  // Ranks that shut down cleanly on a forwarded Ctrl-C still did not finish the job.
  if (code === 0 && interrupted) code = 128 + (constants.signals[interrupted as NodeJS.Signals] ?? 0);
  return { code, failed: first, ranks };
}
