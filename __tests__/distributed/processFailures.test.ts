// What the process group does when a rank dies, stalls, diverges or never answers: every other
// rank must stop by itself, non-zero, with one line naming the rank at fault.
import { describe, expect, it } from '@jest/globals';
import { NATIVE_CRASH, runRanks, type RankRun } from '../helpers/ranks.js';

function expectNoCrash(runs: RankRun[]): void {
  for (const r of runs) {
    expect(r.timedOut).toBe(false);
    expect(r.stderr).not.toMatch(NATIVE_CRASH);
  }
}

describe('failures', () => {
  it('rank 1 SIGKILLed mid-exchange: the others exit non-zero within 30 s naming it, even one stuck in compute', async () => {
    // Rank 2 spins in its main thread when rank 1 dies, so only its transport thread can end it.
    const runs = await runRanks(3, 'kill', { env: () => ({ LWM_RING_ABORT_GRACE: '2' }) });
    expectNoCrash(runs);
    const [r0, r1, r2] = runs as [RankRun, RankRun, RankRun];
    expect(r1.signal).toBe('SIGKILL');
    const named = new RegExp(`ring: rank 1 \\(pid ${r1.pid} on [^)]+\\) died \\(its connection closed without a goodbye\\), seen by rank \\d; every rank stops`);
    expect(r0.code).toBe(1);
    expect(r0.stderr.trim().split('\n')).toHaveLength(1);
    expect(r0.stderr).toMatch(named);
    expect(r2.code !== 0).toBe(true);
    expect(r2.signal).toBe('SIGTERM');
    expect(r2.stderr).toMatch(named);
    expect(r2.stderr).toMatch(/the compute thread did not stop within 2 s, so the ring transport ended the process/);
    for (const r of [r0, r2]) expect((r.exitedAt - r1.exitedAt) / 1000).toBeLessThan(30);
  });

  it('rank 1 SIGSTOPped: the others detect the silence after LWM_RING_HEARTBEAT_TIMEOUT and exit non-zero', async () => {
    const runs = await runRanks(3, 'stall', { env: () => ({ LWM_RING_HEARTBEAT_TIMEOUT: '3' }), reap: [1] });
    expectNoCrash(runs);
    const [r0, r1, r2] = runs as [RankRun, RankRun, RankRun];
    expect(r1.signal).toBe('SIGKILL'); // reaped by the test once the others were gone
    for (const r of [r0, r2]) {
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^error: ring: rank 1 \\(pid ${r1.pid} on [^)]+\\) stopped responding \\(nothing heard for \\d+\\.\\d s; LWM_RING_HEARTBEAT_TIMEOUT=3\\), seen by rank \\d; every rank stops\\n$`));
    }
  });

  it('mismatched tags: a one-line error naming both tags, on both ranks', async () => {
    const runs = await runRanks(2, 'mismatch');
    expectNoCrash(runs);
    const line = 'error: ring: rank 1 expected attn call 0 forward step 1 from rank 0 but got attn call 0 forward step 0 from rank 0; the ranks ran different programs\n';
    for (const r of runs) {
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(line);
    }
  });

  it('a receive nobody sends: LWM_RING_TIMEOUT names the rank waited on', async () => {
    const runs = await runRanks(2, 'deadlock', { env: () => ({ LWM_RING_TIMEOUT: '1' }) });
    expectNoCrash(runs);
    for (const r of runs) {
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error: ring: rank \d waited 1 s for attn call 0 forward step 0 from rank \d to arrive from its previous rank, rank \d \(pid \d+ on [^)]+\) \(LWM_RING_TIMEOUT\); every rank stops\n$/);
    }
  });

  it('a rank that closes while its next rank still waits for it: that rank fails at once, naming it', async () => {
    const runs = await runRanks(2, 'leave', { env: () => ({ LWM_RING_TIMEOUT: '20' }) });
    expectNoCrash(runs);
    const [r0, r1] = runs as [RankRun, RankRun];
    expect(r1.code).toBe(0);
    expect(r0.code).toBe(1);
    expect(r0.stderr).toBe(`error: ring: rank 1 (pid ${r1.pid} on ${/on ([^)]+)\)/.exec(r0.stderr)?.[1]}) closed its group while rank 0 still waited for attn call 1 forward step 0 from rank 1; the ranks ran different programs\n`);
    expect(r0.exitedAt - r1.exitedAt).toBeLessThan(5000);
  });

  it('a rank that exits with code 3 without closing: the others stop naming its exit code', async () => {
    const runs = await runRanks(3, 'exit3');
    expectNoCrash(runs);
    const [r0, r1, r2] = runs as [RankRun, RankRun, RankRun];
    expect(r1.code).toBe(3);
    for (const r of [r0, r2]) {
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`error: ring: rank 1 (pid ${r1.pid} on ${/on ([^)]+)\)/.exec(r.stderr)?.[1]}) exited with code 3; every rank stops\n`);
    }
  });
});
