/**
 * node dist/bench/lowp.js [--quick] [--threads N] [--m 1,256] [--shapes 4096x4096,...]: the linear
 * layers with bf16 and int8 weights (ops/native/lowp.ts) against the fp32 sgemm on the LLaMA-2 7B
 * shapes ([out, in] = n x k: attention 4096x4096, MLP up/gate 11008x4096, down 4096x11008, head
 * 32000x4096), for a decode step (m = 1) and a prefill block (m = 256). Prints one JSON object:
 * per shape and m, best-of-N wall time, GB/s of weights streamed (bytes of the weight matrix in its
 * own format / time) and GFLOP/s (2 m n k / time). A standalone timing script: nothing asserted.
 */
import { best as bestOf } from './timing.js';
import { loadAddon } from '../ops/native/addon.js';
import { lowpAddon, lowpInfo } from '../ops/native/lowp.js';

interface Timing {
  ms: number;
  weightGBs: number;
  gflops: number;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

/** Best (smallest) wall time in ms of `reps` runs after `warm` untimed ones. */
function best(reps: number, warm: number, fn: () => void): number {
  for (let i = 0; i < warm; i++) fn();
  return bestOf(reps, fn);
}

/** Deterministic pseudo-random 32-bit words (xorshift), fast enough for half a GB of weights. */
function fillWords(words: Uint32Array, seed: number): void {
  let s = seed >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    words[i] = s >>> 0;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const addon = loadAddon();
  if (!addon) throw new Error('native addon not loaded (npm run build:native)');
  const L = lowpAddon(addon);
  if (!L) throw new Error('this addon build has no matmulBf16 / matmulInt8 (rebuild it)');
  const sgemm = addon['sgemm'] as (
    ta: boolean, tb: boolean, m: number, n: number, k: number, alpha: number,
    a: Float32Array, lda: number, b: Float32Array, ldb: number, beta: number, c: Float32Array, ldc: number,
  ) => void;
  const quick = process.argv.includes('--quick');
  const threads = Number(arg('--threads') ?? addon.info().threads);
  addon.setThreads(threads);
  await sleep(100); // a fresh pool's workers must be running before the first job
  const ms = (arg('--m') ?? '1,256').split(',').map(Number);
  const shapes = (arg('--shapes') ?? '4096x4096,11008x4096,4096x11008,32000x4096').split(',').map((s) => s.split('x').map(Number) as [number, number]);
  let peak = 0;
  for (let i = 0; i < 3; i++) peak = Math.max(peak, addon.peakGflops(0.3));

  const results: unknown[] = [];
  for (const [n, k] of shapes) {
    // Weights of each format, the fp32 one only for the baseline (a 7B model would not have it).
    const wb = new Uint16Array(n * k);
    fillWords(new Uint32Array(wb.buffer), 1);
    // bf16 in [-2, 2) without NaN/Inf: keep sign, mantissa, and exponents 0x78..0x7f.
    for (let i = 0; i < wb.length; i++) wb[i] = (wb[i]! & 0x807f) | ((0x78 + ((wb[i]! >> 7) & 7)) << 7);
    const q = new Int8Array(n * k);
    fillWords(new Uint32Array(q.buffer), 2);
    const scales = new Float32Array(n).fill(0.01);
    const wf = new Float32Array(n * k);
    const wfBits = new Uint32Array(wf.buffer);
    for (let i = 0; i < wf.length; i++) wfBits[i] = wb[i]! << 16;
    for (const m of ms) {
      const x = new Float32Array(m * k);
      for (let i = 0; i < x.length; i++) x[i] = ((Math.imul(i, 2654435761) >>> 0) % 1000) / 1000 - 0.5;
      const y = addon.alloc(m * n);
      const flops = 2 * m * n * k;
      const reps = quick ? 2 : m === 1 ? 10 : 3;
      const warm = m === 1 ? 2 : 1;
      const timing = (t: number, bytesPerWeight: number): Timing => ({
        ms: +t.toFixed(3),
        weightGBs: +((n * k * bytesPerWeight) / t / 1e6).toFixed(2),
        gflops: +(flops / t / 1e6).toFixed(2),
      });
      const bf16 = timing(best(reps, warm, () => L.matmulBf16(x, wb, m, n, k)), 2);
      const int8 = timing(best(reps, warm, () => L.matmulInt8(x, q, scales, m, n, k)), 1);
      const fp32 = timing(best(reps, warm, () => sgemm(false, true, m, n, k, 1, x, k, wf, k, 0, y, n)), 4);
      const r = {
        shape: `${n}x${k}`,
        n,
        k,
        m,
        bf16,
        int8,
        fp32,
        speedupOverFp32: { bf16: +(fp32.ms / bf16.ms).toFixed(2), int8: +(fp32.ms / int8.ms).toFixed(2) },
      };
      results.push(r);
      console.error(
        `${r.shape.padEnd(11)} m=${String(m).padEnd(4)} bf16 ${bf16.ms.toFixed(2).padStart(8)} ms ${bf16.weightGBs.toFixed(1).padStart(6)} GB/s ${bf16.gflops.toFixed(1).padStart(7)} GF | ` +
          `int8 ${int8.ms.toFixed(2).padStart(8)} ms ${int8.weightGBs.toFixed(1).padStart(6)} GB/s ${int8.gflops.toFixed(1).padStart(7)} GF | ` +
          `fp32 ${fp32.ms.toFixed(2).padStart(8)} ms ${fp32.weightGBs.toFixed(1).padStart(6)} GB/s ${fp32.gflops.toFixed(1).padStart(7)} GF`,
      );
    }
  }
  console.log(
    JSON.stringify(
      {
        bench: 'lowp',
        isa: addon.info().isa,
        threads: addon.info().threads,
        lowp: lowpInfo(addon),
        peakGflops: +peak.toFixed(1),
        note: 'weightGBs = bytes of the weight matrix in its own format (bf16 2, int8 1, fp32 4 per weight) / time; gflops = 2 m n k / time',
        results,
      },
      null,
      2,
    ),
  );
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
