/**
 * One rank of a test run: `node rank.js <mode>`, rank and size from the environment (RANK,
 * WORLD_SIZE, MASTER_PORT, ...). Prints one JSON line of results on stdout; on failure prints
 * `error: <message>` on stderr and exits 1.
 */
import { createHash } from 'node:crypto';
import { ProcessGroup } from '../../../src/distributed/processGroup.js';
import type { RingArray, RingTag } from '../../../ops/ring/types.js';

const mode = process.argv[2] ?? 'exchange';
const slotBytes = Number(process.env['TEST_SLOT_BYTES'] ?? 65536);

/** Deterministic values per (rank, length, salt), so every rank can compute every rank's input. */
function values(rank: number, length: number, salt: number): Float32Array {
  const a = new Float32Array(length);
  for (let i = 0; i < length; i++) a[i] = Math.fround(Math.sin(rank * 7.31 + i * 0.173 + salt) * (1 + (i % 13)) * 0.37);
  return a;
}

function block(origin: number, step: number): RingArray[] {
  // Sizes vary with the step; most exceed the 64 KiB initial slot, step 1 the default 4 MiB one.
  const n = step === 1 ? (5 << 20) / 4 : 1000 + step * 20000;
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) f[i] = origin * 1000 + i * 0.5;
  const k = new Int32Array(17 + step);
  for (let i = 0; i < k.length; i++) k[i] = origin * 7 + i;
  return [f, k];
}

function checkBlock(arrays: RingArray[], origin: number, step: number): void {
  const [f, k] = arrays;
  const want = block(origin, step);
  if (!(f instanceof Float32Array) || !(k instanceof Int32Array)) throw new Error(`step ${step}: wrong array types`);
  if (f.length !== want[0]!.length || k.length !== want[1]!.length) throw new Error(`step ${step}: wrong lengths`);
  for (let i = 0; i < f.length; i++) if (f[i] !== want[0]![i]) throw new Error(`step ${step}: float ${i} is ${f[i]}`);
  for (let i = 0; i < k.length; i++) if (k[i] !== want[1]![i]) throw new Error(`step ${step}: int ${i} is ${k[i]}`);
}

function spin(ms: number): void {
  const end = Date.now() + ms;
  while (Date.now() < end);
}

const sha = (a: Float32Array | Int32Array) => createHash('sha256').update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength)).digest('hex');

async function main(): Promise<void> {
  const g = await ProcessGroup.init({ slotBytes });
  const n = g.size;
  const r = g.rank;
  const prev = (r - 1 + n) % n;
  const out: Record<string, unknown> = { rank: r, size: n };

  /** Rotations of blocks around the ring; `hook` runs before each step, counted across rounds. */
  const rotate = (rounds: number, hook?: (step: number) => void) => {
    let k = 0;
    for (let round = 0; round < rounds; round++) {
      const call = g.nextCall();
      let held = block(r, 0);
      for (let s = 0; s < Math.max(1, n - 1); s++) {
        hook?.(k++);
        const origin = (r - s + n) % n;
        const tag: RingTag = { op: 'attn', call, pass: 0, step: s, origin };
        g.sendNext(tag, s === 0 ? held : block(origin, s));
        const from = (r - s - 1 + n) % n;
        held = g.recvPrev({ ...tag, origin: from });
        checkBlock(held, from, s);
      }
    }
  };

  switch (mode) {
    case 'exchange': {
      rotate(2);
      // One message far larger than the initial slots on every rank, whatever N is.
      const call = g.nextCall();
      g.sendNext({ op: 'big', call, pass: 0, step: 0, origin: r }, block(r, 1));
      checkBlock(g.recvPrev({ op: 'big', call, pass: 0, step: 0, origin: prev }), prev, 1);
      out['exchange'] = 'ok';
      const sums: Record<string, unknown> = {};
      for (const len of [0, 1, n - 1, n + 1, 1001, 300_001]) {
        for (const op of ['sum', 'mean', 'max'] as const) {
          const data = values(r, len, len);
          g.allReduce(data, op);
          const inputs = Array.from({ length: n }, (_, q) => values(q, len, len));
          let err = 0;
          for (let i = 0; i < len; i++) {
            const all = inputs.map((a) => a[i]!);
            const want = op === 'max' ? Math.max(...all) : all.reduce((a, b) => a + b, 0) / (op === 'mean' ? n : 1);
            const scale = all.reduce((a, b) => a + Math.abs(b), 0);
            err = Math.max(err, Math.abs(data[i]! - want) / (scale * 2 ** -23 * n + 1e-30));
          }
          sums[`${op}${len}`] = { sha: sha(data), ulpsOfScale: err };
        }
      }
      out['allReduce'] = sums;
      const bf = r === n - 1 ? values(99, 1_500_000, 1) : new Float32Array(1_500_000);
      const bi = r === n - 1 ? Int32Array.from({ length: 1001 }, (_, i) => i * 3 - 500) : new Int32Array(1001);
      g.broadcast(bf, n - 1);
      g.broadcast(bi, n - 1);
      out['broadcast'] = { f: sha(bf), fWant: sha(values(99, 1_500_000, 1)), i: sha(bi), iWant: sha(Int32Array.from({ length: 1001 }, (_, i) => i * 3 - 500)) };
      if (r === 0) spin(300);
      out['barrierIn'] = Date.now();
      g.barrier();
      out['barrierOut'] = Date.now();
      g.barrier();
      out['stats'] = g.stats();
      g.resetStats();
      out['statsAfterReset'] = g.stats();
      break;
    }
    case 'mismatch': {
      const call = g.nextCall();
      g.sendNext({ op: 'attn', call, pass: 0, step: r === 0 ? 0 : 1, origin: r }, [new Float32Array(4)]);
      g.recvPrev({ op: 'attn', call, pass: 0, step: 1, origin: prev });
      g.barrier();
      break;
    }
    case 'kill':
      // Rank 2 goes into a long "kernel" at step 2; rank 1 can still finish step 2 (its inputs
      // were sent before) and dies at step 3, while rank 0 waits for rank 2.
      rotate(100, (step) => {
        if (step === 2 && r === 2) spin(60_000);
        if (step === 3 && r === 1) process.kill(process.pid, 'SIGKILL');
      });
      break;
    case 'stall':
      rotate(100, (step) => {
        if (step === 3 && r === 1) process.kill(process.pid, 'SIGSTOP');
      });
      break;
    case 'exit3':
      g.barrier();
      if (r === 1) process.exit(3);
      g.recvPrev({ op: 'attn', call: 0, pass: 0, step: 0, origin: prev });
      break;
    case 'leave':
      // Rank 1 leaves properly while rank 0 still expects a block from it.
      g.barrier();
      if (r === 1) break;
      g.recvPrev({ op: 'attn', call: g.nextCall(), pass: 0, step: 0, origin: prev });
      break;
    case 'deadlock':
      g.recvPrev({ op: 'attn', call: g.nextCall(), pass: 0, step: 0, origin: prev });
      break;
    case 'init':
      g.barrier();
      break;
    default:
      throw new Error(`unknown mode ${mode}`);
  }
  await g.close();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((err: Error) => {
  process.stderr.write(`error: ${err.message}\n`);
  process.exit(1);
});
