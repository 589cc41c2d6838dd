// The process group over real processes and sockets: block exchange, collectives, rendezvous
// and its authentication. Failure handling is in processFailures.test.ts (runs in parallel).
import { Writable } from 'node:stream';
import { describe, expect, it } from '@jest/globals';
import { launch } from '../../src/distributed/launch.js';
import { NATIVE_CRASH, rankScript, result, runRanks, type RankRun } from '../helpers/ranks.js';

type Reduced = Record<string, { sha: string; ulpsOfScale: number }>;

function expectExchange(outs: Record<string, unknown>[], n: number): void {
  expect(outs.map((o) => o['rank'])).toEqual([...Array(n).keys()]);
  const reduced = outs.map((o) => o['allReduce'] as Reduced);
  for (const key of Object.keys(reduced[0]!)) {
    // Bitwise identical on every rank, and within float32 rounding of the float64 sum.
    for (const r of reduced) expect(r[key]!.sha).toBe(reduced[0]![key]!.sha);
    expect(reduced[0]![key]!.ulpsOfScale).toBeLessThanOrEqual(1);
  }
  for (const o of outs) {
    expect(o['exchange']).toBe('ok');
    const b = o['broadcast'] as Record<string, string>;
    expect(b['f']).toBe(b['fWant']);
    expect(b['i']).toBe(b['iWant']);
    const stats = o['stats'] as Record<string, number>;
    expect(stats['bytesSent']).toBeGreaterThan(5 << 20);
    expect(stats['messagesReceived']).toBeGreaterThan(0);
    expect(stats['waitMs']).toBeGreaterThanOrEqual(0);
    expect(o['statsAfterReset']).toEqual({ bytesSent: 0, bytesReceived: 0, messagesSent: 0, messagesReceived: 0, messages: 0, waitMs: 0 });
  }
  // Rank 0 entered the barrier last (300 ms late); nobody may leave it before that.
  for (const o of outs) expect(o['barrierOut'] as number).toBeGreaterThanOrEqual(outs[0]!['barrierIn'] as number);
}

function expectClean(runs: RankRun[]): void {
  for (const r of runs) {
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  }
}

describe('ring exchange and collectives over processes', () => {
  // Blocks tagged with their origin go N-1 steps around the ring (float32 + int32, sizes from
  // 4 KB to 5 MiB against 64 KiB initial slots, and one 5 MiB message per rank); then all-reduce (sum, mean, max) over lengths
  // 0, 1, N-1, N+1, 1001, 300001, broadcast of float32 and int32, barriers, stats.
  for (const n of [2, 4]) {
    it(`N=${n}`, async () => {
      const runs = await runRanks(n, 'exchange');
      expectClean(runs);
      expectExchange(runs.map(result), n);
    });
  }

  it('N=3 under launch(): output prefixed per rank, all exit 0', async () => {
    let stdout = '';
    let stderr = '';
    const sink = (f: (s: string) => void) => new Writable({ write: (c, _e, cb) => (f(c.toString()), cb()) });
    const r = await launch({
      nprocs: 3,
      command: [process.execPath, rankScript, 'exchange'],
      stdout: sink((s) => (stdout += s)),
      stderr: sink((s) => (stderr += s)),
    });
    expect(stderr).toBe('');
    expect(r.code).toBe(0);
    const outs = [0, 1, 2].map((i) => {
      const line = stdout.split('\n').find((l) => l.startsWith(`[rank ${i}] {`));
      return JSON.parse(line!.slice(`[rank ${i}] `.length)) as Record<string, unknown>;
    });
    expectExchange(outs, 3);
  });
});

describe('rendezvous', () => {
  it('with the same LWM_RING_SECRET on every rank the group forms', async () => {
    const runs = await runRanks(2, 'init', { env: () => ({ LWM_RING_SECRET: 'correct horse' }) });
    expectClean(runs);
  });

  it('a rank with a wrong secret is refused; rank 0 names it and times out naming the missing rank', async () => {
    const runs = await runRanks(2, 'init', {
      env: (i) => ({ LWM_RING_SECRET: i === 0 ? 'correct horse' : 'battery staple', LWM_RING_CONNECT_TIMEOUT: '2' }),
    });
    const [r0, r1] = runs as [RankRun, RankRun];
    expect(r1.code).toBe(1);
    expect(r1.stderr).toBe('error: ring: rank 0 refused this process: wrong or missing LWM_RING_SECRET (set the same value on every rank)\n');
    expect(r0.code).toBe(1);
    expect(r0.stderr).toMatch(new RegExp(`^ring: rank 0 refused a process claiming to be rank 1 \\(pid ${r1.pid} on .*\\): wrong or missing LWM_RING_SECRET\\n`));
    expect(r0.stderr).toMatch(/error: ring: rank 1 never joined rank 0 at 127\.0\.0\.1:\d+ within 2 s \(LWM_RING_CONNECT_TIMEOUT\)/);
  });

  it('a rank without the secret rank 0 requires is refused too; so is a rank 0 without one', async () => {
    const [a, b] = await Promise.all([
      runRanks(2, 'init', { env: (i) => ({ LWM_RING_CONNECT_TIMEOUT: '2', ...(i === 0 ? { LWM_RING_SECRET: 'x' } : {}) }) }),
      runRanks(2, 'init', { env: (i) => ({ LWM_RING_CONNECT_TIMEOUT: '2', ...(i === 1 ? { LWM_RING_SECRET: 'x' } : {}) }) }),
    ]);
    expect(a[1]!.stderr).toMatch(/rank 0 refused this process: wrong or missing LWM_RING_SECRET/);
    expect(b[1]!.stderr).toMatch(/rank 0 at 127\.0\.0\.1:\d+ does not use LWM_RING_SECRET but rank 1 does/);
    for (const r of [...a, ...b]) expect(r.code).toBe(1);
  });

  it('two processes claiming the same rank: every process fails naming both', async () => {
    const runs = await runRanks(3, 'init', { rankOf: (i) => (i === 2 ? 1 : i) });
    for (const r of runs) {
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error: ring: rank 1 joined twice \(pid \d+ on .* and pid \d+ on .*\); every process needs its own RANK\n$/);
    }
  });

  it('a rank that never comes: rank 0 names it after LWM_RING_CONNECT_TIMEOUT', async () => {
    const [r0] = await runRanks(1, 'init', { worldSize: 3, env: () => ({ LWM_RING_CONNECT_TIMEOUT: '1' }) });
    expect(r0!.code).toBe(1);
    expect(r0!.stderr).toMatch(/^error: ring: ranks 1, 2 never joined rank 0 at 127\.0\.0\.1:\d+ within 1 s \(LWM_RING_CONNECT_TIMEOUT\); start all 3 ranks with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE\n$/);
    expect(r0!.stderr).not.toMatch(NATIVE_CRASH);
  });
});
