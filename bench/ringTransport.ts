/**
 * node dist/bench/ringTransport.js [--quick]: throughput of the ring transport between two local
 * processes (rank 0 -> rank 1) for 1, 16 and 64 MiB messages.
 *  - stream: rank 0 sends back to back; rank 1's main thread sits blocked in recvPrev.
 *  - overlap: rank 1's main thread is busy (a spin standing in for a kernel) while one message
 *    arrives; then recvPrev only has to copy it out of the slot.
 * Prints a table and one JSON line. Launches itself with launch(); a rank when RANK is set.
 */
import { fileURLToPath } from 'node:url';
import { Writable } from 'node:stream';
import { launch } from '../src/distributed/launch.js';
import { ProcessGroup } from '../src/distributed/processGroup.js';

const MiB = 1 << 20;
const quick = process.argv.includes('--quick');
const SIZES = [1, 16, 64];
const COUNTS: Record<number, number> = quick ? { 1: 10, 16: 4, 64: 2 } : { 1: 60, 16: 16, 64: 6 };
const SPIN_MS = 1500;

interface Row {
  mib: number;
  messages: number;
  msPerMessage: number;
  gbPerS: number;
  waitMsPerMessage: number;
  overlapRecvMs: number;
}

function spin(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

async function rank(): Promise<void> {
  const g = await ProcessGroup.init({ slotBytes: 64 * MiB + 4096 });
  const rows: Row[] = [];
  for (const mib of SIZES) {
    const payload = new Float32Array((mib * MiB) / 4).fill(g.rank + 0.5);
    const k = COUNTS[mib]!;
    const call = g.nextCall();
    const tag = (step: number) => ({ op: 'bench', call, pass: 0, step, origin: 0 });
    // Warm-up: first use grows nothing (slots are preallocated) but faults the pages in.
    if (g.rank === 0) g.sendNext(tag(-1), [payload]);
    else g.recvPrev(tag(-1));
    g.barrier();
    g.resetStats();
    const t0 = performance.now();
    for (let i = 0; i < k; i++) {
      if (g.rank === 0) g.sendNext(tag(i), [payload]);
      else g.recvPrev(tag(i));
    }
    const ms = performance.now() - t0;
    const waitMs = g.stats().waitMs;
    g.barrier();
    // Overlap: the block must land while rank 1's main thread computes.
    let overlapRecvMs = 0;
    if (g.rank === 0) g.sendNext(tag(k), [payload]);
    else {
      spin(SPIN_MS);
      const t = performance.now();
      g.recvPrev(tag(k));
      overlapRecvMs = performance.now() - t;
    }
    g.barrier();
    if (g.rank === 1) {
      rows.push({ mib, messages: k, msPerMessage: ms / k, gbPerS: (mib * MiB * k) / (ms / 1000) / 1e9, waitMsPerMessage: waitMs / k, overlapRecvMs });
    }
  }
  if (g.rank === 1) process.stdout.write(`${JSON.stringify(rows)}\n`);
  await g.close();
}

async function main(): Promise<void> {
  let out = '';
  const r = await launch({
    nprocs: 2,
    command: [process.execPath, fileURLToPath(import.meta.url), ...(quick ? ['--quick'] : [])],
    stdout: new Writable({ write: (c, _e, cb) => ((out += c.toString()), cb()) }),
  });
  if (r.code !== 0) throw new Error(`bench ranks failed (code ${r.code})`);
  const line = out.split('\n').find((l) => l.startsWith('[rank 1] ['));
  const rows = JSON.parse(line!.slice('[rank 1] '.length)) as Row[];
  process.stdout.write('size     msgs  ms/msg   GB/s   recv-wait ms/msg  recvPrev after 1.5 s busy main thread\n');
  for (const x of rows) {
    process.stdout.write(
      `${`${x.mib} MiB`.padEnd(8)} ${String(x.messages).padStart(4)}  ${x.msPerMessage.toFixed(1).padStart(6)}  ${x.gbPerS.toFixed(2).padStart(5)}   ${x.waitMsPerMessage.toFixed(1).padStart(8)}          ${x.overlapRecvMs.toFixed(1)} ms\n`,
    );
  }
  process.stdout.write(`${JSON.stringify({ bench: 'ringTransport', rows })}\n`);
}

await (process.env['RANK'] !== undefined ? rank() : main());
