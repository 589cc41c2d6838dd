// Starts the ranks of a multi-process test as separate processes, the way torchrun or mpirun
// would (no launcher in between), with a hard time limit on every one of them.
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { freePort } from '../../src/distributed/launch.js';
import { repoRoot } from './paths.js';

export const rankScript = path.join(repoRoot, 'dist', '__tests__', 'distributed', 'scripts', 'rank.js');

export interface RankRun {
  rank: number;
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Date.now() when it exited. */
  exitedAt: number;
  /** Killed by the hard limit rather than ending by itself. */
  timedOut: boolean;
}

export interface RunOptions {
  /** Per-rank environment on top of RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT. */
  env?: (rank: number) => Record<string, string>;
  /** Ranks launched with the wrong RANK etc.: the RANK value each process gets (default its index). */
  rankOf?: (index: number) => number;
  /** Hard limit per process; default 30 s. */
  limitMs?: number;
  /** SIGKILL these processes (by index) once all the others ended (e.g. a SIGSTOPped rank). */
  reap?: number[];
  worldSize?: number;
}

function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) {
    if (/^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|MASTER_ADDR|MASTER_PORT|LWM_RING_.*|OMPI_.*|SLURM_.*)$/.test(k)) delete env[k];
  }
  return env;
}

/** Runs `n` processes of scripts/rank.js in `mode`; resolves when all ended. */
export async function runRanks(n: number, mode: string, opts: RunOptions = {}): Promise<RankRun[]> {
  const port = await freePort();
  const limit = opts.limitMs ?? 30_000;
  const base = cleanEnv();
  const runs: RankRun[] = [];
  const kills: (() => void)[] = [];
  const ended = new Set<number>();
  const all = Array.from({ length: n }, (_, i) => {
    const rank = opts.rankOf?.(i) ?? i;
    const env = { ...base, RANK: String(rank), WORLD_SIZE: String(opts.worldSize ?? n), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), ...opts.env?.(i) };
    const child = spawn(process.execPath, [rankScript, mode], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const run: RankRun = { rank, pid: child.pid!, code: null, signal: null, stdout: '', stderr: '', exitedAt: 0, timedOut: false };
    runs.push(run);
    child.stdout.on('data', (d: Buffer) => (run.stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (run.stderr += d.toString()));
    const timer = setTimeout(() => {
      run.timedOut = true;
      child.kill('SIGKILL');
    }, limit);
    kills.push(() => child.kill('SIGKILL'));
    return new Promise<void>((resolve) =>
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        Object.assign(run, { code, signal, exitedAt: Date.now() });
        ended.add(i);
        const rest = [...Array(n).keys()].filter((j) => !ended.has(j));
        if (opts.reap && rest.length > 0 && rest.every((j) => opts.reap!.includes(j))) rest.forEach((j) => kills[j]!());
        resolve();
      }),
    );
  });
  await Promise.all(all);
  return runs;
}

/** The JSON line a rank printed on success. */
export function result(run: RankRun): Record<string, unknown> {
  const line = run.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, unknown>;
  } catch {
    throw new Error(`rank ${run.rank} printed no result (code ${run.code}, signal ${run.signal}):\n${run.stderr}${run.stdout}`);
  }
}

/** zeromq aborting at thread teardown prints this; it must never happen. */
export const NATIVE_CRASH = /terminate called|Napi::Error|Assertion failed/;
