// Linear layers with bf16 / int8 weights (ops/native/lowp.ts, src/gemm_lowp*.cc) against a float64
// reference computed from the dequantized weights, on every ISA this CPU has (in process through
// setIsa, and in child processes started with LWM_SIMD set, as a user would lower it).
//
// Error bound. The bf16 weights are exact in fp32, and so are the dequantized int8 weights the
// reference uses (w = fround(scale * q)). Each product x * w is exact or rounded once, and however
// the kernels order and split the k-term sum (vector lanes, several accumulators, blocks of kc,
// a horizontal sum at the end), no term passes through more than k - 1 roundings. Higham's bound
// for a dot product in any summation order then gives |y - y_ref| <= gamma_k * sum_p |x_p w_p|,
// gamma_n = n u / (1 - n u), u = 2^-24. Two more roundings at most come on top: the int8 decode
// path multiplies the finished sum by the scale (and its reference weight fround(scale * q)
// differs from scale * q by one rounding), and the AVX512_BF16 path adds its high and low
// accumulators. So every output is checked against gamma_(k+2) * sum_p |x_p w_p|.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { loadAddon } from '../../../ops/native/index.js';
import * as lowp from '../../../ops/native/lowp.js';
import type { LowpAddon } from '../../../ops/native/lowp.js';
import { repoRoot } from '../../helpers/paths.js';

const addon = loadAddon();
const L = lowpAddon();
const suite = L ? describe : describe.skip;

function lowpAddon(): LowpAddon | null {
  return lowp.lowpAddon(addon);
}

interface Lib {
  toBf16(x: Float32Array): Uint16Array;
  fromBf16(b: Uint16Array): Float32Array;
  quantizeInt8(w: Float32Array, n: number, k: number): { q: Int8Array; scales: Float32Array };
  dequantizeInt8(q: Int8Array, scales: Float32Array, n: number, k: number): Float32Array;
}

interface CaseResult {
  shape: string;
  /** Largest |y - y_ref| / bound over the outputs (must be <= 1). */
  bf16: number;
  int8: number;
}

/**
 * Runs every [m, n, k] case with bf16 and int8 weights and returns the worst error-to-bound ratio
 * of each. Self-contained (no outer names): its source also runs in child processes.
 */
function checkCases(L: LowpAddon, lib: Lib, cases: number[][]): CaseResult[] {
  let seed = 0x2545f491;
  const rand = (): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  };
  const u = 2 ** -24;
  const worst = (y: Float32Array, x: Float32Array, w: Float32Array, m: number, n: number, k: number): number => {
    if (Object.prototype.toString.call(y) !== '[object Float32Array]' || y.length !== m * n || y.buffer.byteLength !== m * n * 4) return Infinity;
    const g = ((k + 2) * u) / (1 - (k + 2) * u);
    let r = 0;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        let a = 0;
        for (let p = 0; p < k; p++) {
          const t = x[i * k + p]! * w[j * k + p]!;
          s += t;
          a += Math.abs(t);
        }
        const err = Math.abs(y[i * n + j]! - s);
        const ratio = a === 0 ? (err === 0 ? 0 : Infinity) : err / (g * a);
        r = Number.isNaN(ratio) ? Infinity : Math.max(r, ratio);
      }
    }
    return r;
  };
  const out: CaseResult[] = [];
  for (const [m, n, k] of cases as [number, number, number][]) {
    const x = new Float32Array(m * k);
    for (let i = 0; i < x.length; i++) x[i] = rand();
    // Rows of different magnitudes (int8 scales differ), a few exact zeros.
    const w = new Float32Array(n * k);
    for (let j = 0; j < n; j++) {
      const mag = 2 ** ((j % 7) - 3);
      for (let p = 0; p < k; p++) w[j * k + p] = (j * 31 + p) % 13 === 0 ? 0 : mag * rand();
    }
    const wb = lib.toBf16(w);
    const { q, scales } = lib.quantizeInt8(w, n, k);
    const yb = L.matmulBf16(x, wb, m, n, k);
    const yq = L.matmulInt8(x, q, scales, m, n, k);
    out.push({
      shape: `${m}x${n}x${k}`,
      bf16: worst(yb, x, lib.fromBf16(wb), m, n, k),
      int8: worst(yq, x, lib.dequantizeInt8(q, scales, n, k), m, n, k),
    });
  }
  return out;
}

// m = 1..8 stream the weights (in L2-sized blocks past 4 rows); larger m converts panels for the GEMM kernel (lowpInfo().dotMaxM).
// n and k off the vector widths (8, 16, 32), the panel widths (8, 16, 32), the register tiles
// (4, 6, 14 rows), the kc blocks (256, 384, 512), the 128-row weight blocks and 1536-wide
// conversion runs, and the rows of x packed per pass (a few thousand / k); some run on the pool.
const CASES: number[][] = [
  [1, 1, 1], [1, 1, 9], [1, 9, 1], [1, 5, 7], [1, 37, 19], [1, 64, 64], [1, 33, 100], [1, 1000, 700], [1, 3, 1111],
  [2, 5, 17], [2, 7, 40], [3, 17, 33], [3, 100, 129], [3, 2000, 300], [4, 40, 100], [4, 9, 31],
  [5, 33, 70], [6, 16, 16], [7, 1, 300], [8, 50, 300], [6, 300, 1000], [9, 20, 1], [13, 19, 1], [15, 31, 385], [17, 8, 8], [33, 65, 257],
  [70, 45, 1000], [70, 130, 257], [64, 300, 500], [100, 1, 50], [1, 1, 4100], [20, 150, 3100], [9, 20, 1700],
  [100, 3, 44000],
];
// In process (jest's VM runs the float64 reference ~30x slower than plain node): a few of them.
const QUICK_CASES: number[][] = [[1, 1, 1], [1, 37, 19], [2, 5, 17], [3, 17, 33], [4, 9, 31], [5, 33, 70], [8, 20, 40], [9, 20, 1], [17, 8, 8], [15, 31, 100]];

function expectWithin(results: CaseResult[], what: string): void {
  const bad = results.filter((r) => !(r.bf16 <= 1 && r.int8 <= 1));
  expect({ what, bad }).toEqual({ what, bad: [] });
}

const ISAS = ['scalar', 'avx2', 'avx512'] as const;
type IsaName = (typeof ISAS)[number];

/** The active ISA and every lower one the addon accepts. */
function isas(): IsaName[] {
  const active = addon!.info().isa as IsaName;
  return ISAS.slice(0, ISAS.indexOf(active) + 1).reverse();
}

/** checkCases in a fresh `node` with the given environment. */
function childRun(env: Record<string, string>): { isa: string; info: lowp.LowpInfo; results: CaseResult[] } {
  const dist = path.join(repoRoot, 'dist');
  const code = `
    import { loadAddon } from ${JSON.stringify(path.join(dist, 'ops/native/addon.js'))};
    import * as lib from ${JSON.stringify(path.join(dist, 'ops/native/lowp.js'))};
    const checkCases = ${checkCases.toString()};
    const addon = loadAddon();
    await new Promise((r) => setTimeout(r, 50));
    const L = lib.lowpAddon(addon);
    if (!L) throw new Error('no lowp functions in the addon');
    console.log(JSON.stringify({ isa: addon.info().isa, info: lib.lowpInfo(addon), results: checkCases(L, lib, ${JSON.stringify(CASES)}) }));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    encoding: 'utf8',
    timeout: 120_000,
    cwd: repoRoot,
    env: { ...process.env, ...env },
  });
  if (r.status !== 0) throw new Error(`child node failed (${r.status ?? r.signal}): ${r.stderr.trim().split('\n').slice(-8).join('\n')}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!);
}

suite('native linear layers with bf16 / int8 weights', () => {
  it('is exposed with its kernel info', () => {
    const info = lowp.lowpInfo(addon)!;
    expect(info.isa).toBe(addon!.info().isa);
    expect(info.dotMaxM).toBeGreaterThanOrEqual(1);
    if (info.bf16Dot) expect(info.isa).toBe('avx512');
    expect(lowp.lowpAddon(null)).toBeNull();
    expect(lowp.lowpAddon({ ...addon!, matmulBf16: undefined } as never)).toBeNull();
  });

  it('matches the float64 reference within gamma_(k+2) sum|x w| on every ISA (setIsa, in process)', () => {
    const active = addon!.info().isa as IsaName;
    try {
      for (const isa of isas()) {
        expect(addon!.setIsa(isa)).toBe(isa);
        expect(lowp.lowpInfo(addon)!.isa).toBe(isa);
        expectWithin(checkCases(L!, lowp, QUICK_CASES), isa);
      }
    } finally {
      addon!.setIsa(active);
    }
  });

  it('matches it on all shapes with LWM_SIMD=scalar, avx2 (and avx512, without AVX512_BF16) in child processes', () => {
    const hw = addon!.info().isa as IsaName;
    const runs: [Record<string, string>, IsaName][] = [
      [{ LWM_SIMD: 'scalar' }, 'scalar'],
      [{ LWM_SIMD: 'avx2' }, hw === 'scalar' ? 'scalar' : 'avx2'],
    ];
    if (hw === 'avx512') runs.push([{ LWM_SIMD: 'avx512' }, 'avx512']);
    if (lowp.lowpInfo(addon)!.bf16Dot) runs.push([{ LWM_SIMD: 'avx512', LWM_BF16_DOT: '0' }, 'avx512']);
    for (const [env, want] of runs) {
      const r = childRun(env);
      expect({ env, isa: r.isa }).toEqual({ env, isa: want });
      expect(r.info.isa).toBe(want);
      if (env['LWM_BF16_DOT']) expect(r.info.bf16Dot).toBe(false);
      expect(r.results.map((c) => c.shape)).toEqual(CASES.map((c) => c.join('x')));
      expectWithin(r.results, JSON.stringify(env));
    }
  }, 240_000);

  it('reads weights given as views into a larger buffer, and leaves them unchanged', () => {
    const [m, n, k] = [2, 11, 13];
    const x = Float32Array.from({ length: m * k }, (_, i) => ((i * 7) % 5) - 2);
    const wf = Float32Array.from({ length: n * k }, (_, i) => ((i * 3) % 11) / 4 - 1);
    const big = new Uint16Array(n * k + 8);
    big.set(lowp.toBf16(wf), 3);
    const w = big.subarray(3, 3 + n * k);
    const before = big.slice();
    const { q, scales } = lowp.quantizeInt8(wf, n, k);
    const qbig = new Int8Array(n * k + 5);
    qbig.set(q, 5);
    const qv = qbig.subarray(5, 5 + n * k);
    for (const mm of [m, 6]) {
      const xx = mm === m ? x : Float32Array.from({ length: mm * k }, (_, i) => ((i * 5) % 7) - 3);
      const y = L!.matmulBf16(xx, w, mm, n, k);
      const yq = L!.matmulInt8(xx, qv, scales, mm, n, k);
      const wd = lowp.fromBf16(lowp.toBf16(wf));
      const wq = lowp.dequantizeInt8(q, scales, n, k);
      for (let i = 0; i < mm; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          let sq = 0;
          for (let p = 0; p < k; p++) {
            s += xx[i * k + p]! * wd[j * k + p]!;
            sq += xx[i * k + p]! * wq[j * k + p]!;
          }
          // Small integers and quarters: every partial sum is exact in fp32.
          expect(y[i * n + j]).toBe(s);
          expect(Math.abs(yq[i * n + j]! - sq)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(sq)));
        }
      }
    }
    expect(big).toEqual(before);
  });

  it('returns a fresh Float32Array of m * n and keeps no fp32 copy of the weights', () => {
    const [n, k] = [4096, 2048];
    const w = new Uint16Array(n * k);
    for (let i = 0; i < w.length; i++) w[i] = 0x3c00 | (i & 0xff);
    const q = new Int8Array(n * k).fill(3);
    const scales = new Float32Array(n).fill(0.5);
    const fp32Bytes = n * k * 4;
    for (const m of [1, 64]) {
      const x = new Float32Array(m * k).fill(0.25);
      // Warm-up: per-thread packing buffers (a few MiB, independent of n) are allocated once.
      L!.matmulBf16(x, w, m, n, k);
      L!.matmulInt8(x, q, scales, m, n, k);
      const rss0 = process.memoryUsage().rss;
      for (let r = 0; r < 3; r++) {
        const y = L!.matmulBf16(x, w, m, n, k);
        // (Native arrays come from the main realm, not jest's: no instanceof.)
        expect(Object.prototype.toString.call(y)).toBe('[object Float32Array]');
        expect(y.length).toBe(m * n);
        expect(y.buffer.byteLength).toBe(m * n * 4);
        const yq = L!.matmulInt8(x, q, scales, m, n, k);
        expect(yq.length).toBe(m * n);
        expect(yq[0]).toBe(k * 0.25 * 3 * 0.5);
      }
      const grew = process.memoryUsage().rss - rss0;
      expect({ m, grewBelowHalfAnFp32Copy: grew < fp32Bytes / 2 }).toEqual({ m, grewBelowHalfAnFp32Copy: true });
    }
  });

  it('throws on length and type mismatches, naming them', () => {
    const x = new Float32Array(6);
    const w = new Uint16Array(12);
    const q = new Int8Array(12);
    const s = new Float32Array(4);
    expect(L!.matmulBf16(x, w, 2, 4, 3).length).toBe(8);
    expect(L!.matmulInt8(x, q, s, 2, 4, 3).length).toBe(8);
    expect(() => L!.matmulBf16(new Float32Array(5), w, 2, 4, 3)).toThrow(/matmulBf16: x has 5 elements, expected m \* k = 6/);
    expect(() => L!.matmulBf16(x, new Uint16Array(13), 2, 4, 3)).toThrow(/matmulBf16: w has 13 elements, expected n \* k = 12/);
    expect(() => L!.matmulBf16(x, w, 2, 3, 3)).toThrow(/w has 12 elements, expected n \* k = 9/);
    expect(() => L!.matmulBf16(x, new Float32Array(12) as never, 2, 4, 3)).toThrow(/w must be a Uint16Array/);
    expect(() => L!.matmulBf16(x, w, -2, 4, 3)).toThrow(/m must be a non-negative integer/);
    expect(() => L!.matmulBf16(x, w, 2, 4, 1.5)).toThrow(/k must be a non-negative integer/);
    expect(() => L!.matmulInt8(x, new Int8Array(11), s, 2, 4, 3)).toThrow(/matmulInt8: q has 11 elements, expected n \* k = 12/);
    expect(() => L!.matmulInt8(x, q, new Float32Array(3), 2, 4, 3)).toThrow(/matmulInt8: scales has 3 elements, expected n = 4/);
    expect(() => L!.matmulInt8(new Float32Array(7), q, s, 2, 4, 3)).toThrow(/matmulInt8: x has 7 elements/);
    expect(() => L!.matmulInt8(x, new Uint8Array(12) as never, s, 2, 4, 3)).toThrow(/q must be a Int8Array/);
    expect(() => L!.matmulInt8(x, q, s, 2, 4, undefined as never)).toThrow(/k must be a number/);
    // Empty products: zeros (k = 0) or empty outputs.
    expect(Array.from(L!.matmulBf16(new Float32Array(0), new Uint16Array(0), 2, 3, 0))).toEqual([0, 0, 0, 0, 0, 0]);
    expect(L!.matmulInt8(new Float32Array(0), new Int8Array(0), new Float32Array(0), 0, 0, 5).length).toBe(0);
  });
});

describe('bf16 and int8 conversions (lowp.ts)', () => {
  it('rounds fp32 to bf16 to nearest even and back exactly', () => {
    const x = new Float32Array([1, -2.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9, 3.4e38, Infinity, -Infinity, 0, -0, 1e-40]);
    const b = lowp.toBf16(x);
    expect(Array.from(lowp.fromBf16(b))).toEqual([1, -2.5, 1, 1 + 2 ** -6, 1, Infinity, Infinity, -Infinity, 0, -0, 2 ** -133]);
    expect(Number.isNaN(lowp.fromBf16(lowp.toBf16(new Float32Array([NaN])))[0])).toBe(true);
  });

  it('quantizes rows symmetrically to int8 with one scale each', () => {
    const w = new Float32Array([0.6, -1, 0.2, 0, 0, 0, 2, 1.1, -2]);
    const { q, scales } = lowp.quantizeInt8(w, 3, 3);
    expect(Array.from(scales)).toEqual([Math.fround(1 / 127), 0, Math.fround(2 / 127)]);
    expect(Array.from(q)).toEqual([76, -127, 25, 0, 0, 0, 127, 70, -127]);
    const d = lowp.dequantizeInt8(q, scales, 3, 3);
    for (let i = 0; i < w.length; i++) expect(Math.abs(d[i]! - w[i]!)).toBeLessThanOrEqual(scales[Math.floor(i / 3)]! / 2 + 1e-7);
    expect(() => lowp.quantizeInt8(w, 2, 3)).toThrow(/w has 9 elements, expected n \* k = 6/);
  });
});
