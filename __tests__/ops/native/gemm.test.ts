import * as tf from '@tensorflow/tfjs';
import { describe, it, expect, beforeAll, afterAll } from '@jest/globals';
import { enableNativeKernels, isNativeKernelActive, loadAddon } from '../../../ops/native/index.js';
import { gemmAddon, type GemmAddon } from '../../../ops/native/gemmKernels.js';
import { expectNoLeaks, randomArray } from '../../helpers/tensors.js';
import { expectMatch as expectClose, plain, randomTensors } from '../../helpers/native.js';

const addon = loadAddon();
const gemm: GemmAddon | null = addon ? gemmAddon(addon) : null;
const suite = addon ? describe : describe.skip;

const TRANSPOSES: [boolean, boolean][] = [[false, false], [false, true], [true, false], [true, true]];
const rand = randomTensors(1);
const expectMatch = (got: tf.Tensor, want: tf.Tensor, what: string, rtol = 1e-5) => expectClose(got, want, what, rtol);

/** The ISAs to check here: the active one first, then every lower one the CPU can run. */
function isas(): string[] {
  const active = addon!.info().isa;
  const out = [active];
  for (const isa of ['avx2', 'scalar'] as const) {
    if (out.includes(isa)) continue;
    if (addon!.setIsa(isa) === isa) out.push(isa);
  }
  addon!.setIsa(active as 'avx512' | 'avx2' | 'scalar');
  return out;
}

/** Native result under every ISA against `want` (computed once by the caller). */
function expectAllIsas(compute: () => tf.Tensor, want: tf.Tensor, what: string): void {
  const active = addon!.info().isa as 'avx512' | 'avx2' | 'scalar';
  try {
    for (const isa of isas()) {
      addon!.setIsa(isa as 'avx512' | 'avx2' | 'scalar');
      const got = compute();
      try {
        expectMatch(got, want, `${what} [${isa}]`);
      } finally {
        got.dispose();
      }
    }
  } finally {
    addon!.setIsa(active);
  }
}

/** matMul of random operands, native (every ISA) against tfjs' own kernel. */
function checkMatMul(aShape: number[], bShape: number[], ta: boolean, tb: boolean): void {
  const a = rand(aShape);
  const b = rand(bShape);
  const want = plain(() => tf.matMul(a, b, ta, tb));
  expectAllIsas(() => tf.matMul(a, b, ta, tb), want, `matMul ${aShape}x${bShape} tA=${ta} tB=${tb}`);
  tf.dispose([a, b, want]);
}

/** Shapes of op(A) = [m, k] and op(B) = [k, n] as stored under the given transposes. */
function shapes(m: number, n: number, k: number, ta: boolean, tb: boolean): [number[], number[]] {
  return [ta ? [k, m] : [m, k], tb ? [n, k] : [k, n]];
}

suite('native GEMM (BatchMatMul, _FusedMatMul)', () => {
  beforeAll(async () => {
    await tf.setBackend('cpu');
    enableNativeKernels();
  });
  afterAll(() => {
    enableNativeKernels();
  });

  it('serves both kernels natively', () => {
    expect(gemm).not.toBeNull();
    expect(isNativeKernelActive('BatchMatMul')).toBe(true);
    expect(isNativeKernelActive('_FusedMatMul')).toBe(true);
  });

  it('matches tfjs for 1x1x1, unit dimensions and odd sizes, all transposes', () => {
    const dims = [[1, 1, 1], [1, 7, 1], [1, 1, 9], [5, 1, 1], [1, 13, 17], [13, 1, 17], [13, 17, 1], [2, 3, 4], [3, 5, 7], [4, 9, 33], [37, 53, 301], [5, 2, 3], [0, 3, 4], [3, 0, 4], [2, 3, 0]];
    for (const [ta, tb] of TRANSPOSES) {
      for (const [m, n, k] of dims) checkMatMul(...shapes(m!, n!, k!, ta, tb), ta, tb);
    }
  });

  it('matches tfjs around the register and cache block sizes', () => {
    const bl = gemm!.gemmBlocking();
    const ms = [bl.mr - 1, bl.mr, bl.mr + 1, 2 * bl.mr + 1];
    const ns = [bl.nr - 1, bl.nr, bl.nr + 1];
    const ks = [bl.kc - 1, bl.kc, bl.kc + 1];
    for (const [ta, tb] of TRANSPOSES) {
      for (const m of ms) for (const n of ns) for (const k of ks) checkMatMul(...shapes(m, n, k, ta, tb), ta, tb);
      checkMatMul(...shapes(bl.mc + 1, bl.nr + 3, 2 * bl.kc + 3, ta, tb), ta, tb);
      checkMatMul(...shapes(bl.mc - 1, 3 * bl.nr - 1, 17, ta, tb), ta, tb);
      // Large enough to be split into tiles over the thread pool.
      checkMatMul(...shapes(150, 200, 300, ta, tb), ta, tb);
      const [as, bs] = shapes(2 * bl.mc + 5, 2 * bl.nr + 3, 2 * bl.kc + 1, ta, tb);
      checkMatMul([3, ...as], [3, ...bs], ta, tb);
    }
  });

  it('matches tfjs on matrix-vector and few-row shapes (decode steps)', () => {
    for (const [ta, tb] of TRANSPOSES) {
      for (const [m, n, k] of [[1, 300, 1000], [1, 1, 1000], [300, 1, 1000], [2, 257, 700], [3, 100, 513], [4, 64, 2000], [200, 3, 300], [5, 301, 333]]) {
        checkMatMul(...shapes(m!, n!, k!, ta, tb), ta, tb);
      }
    }
  });

  it('matches tfjs on batched products where its kernel broadcasts correctly', () => {
    const cases: [number[], number[], boolean, boolean][] = [
      [[2, 3, 5, 7], [2, 3, 7, 4], false, false],
      [[3, 5, 7], [7, 4], false, false],
      [[5, 7], [3, 7, 4], false, false],
      [[1, 5, 7], [3, 7, 4], false, false],
      [[4, 7, 5], [1, 4, 7], true, true],
      [[3, 1, 9], [3, 6, 9], false, true],
      [[6, 40, 33], [6, 33, 70], false, false],
    ];
    for (const [as, bs, ta, tb] of cases) checkMatMul(as, bs, ta, tb);
  });

  it('broadcasts batch dimensions of both operands ([2,1,5,7] x [3,7,4])', () => {
    // tfjs' cpu kernel indexes each operand's batch modulo its size, which is wrong (and fills only
    // part of the output) when both operands broadcast; the reference broadcasts explicitly.
    for (const [as, bs] of [[[2, 1, 5, 7], [3, 7, 4]], [[4, 1, 3, 8], [1, 2, 8, 5]], [[2, 1, 1, 7], [1, 3, 7, 6]]] as const) {
      const a = rand([...as]);
      const b = rand([...bs]);
      const outBatch = [as[0]!, bs.length === 4 ? bs[1]! : bs[0]!];
      const [m, k] = [as[2]!, as[3]!];
      const n = bs[bs.length - 1]!;
      const want = plain(() => {
        const a3 = tf.broadcastTo(a, [...outBatch, m, k]).reshape([-1, m, k]);
        const b3 = tf.broadcastTo(b, [...outBatch, k, n]).reshape([-1, k, n]);
        return tf.tidy(() => tf.matMul(a3, b3).reshape([...outBatch, m, n]));
      });
      expectAllIsas(() => tf.matMul(a, b), want, `broadcast ${as}x${bs}`);
      tf.dispose([a, b, want]);
    }
  });

  it('applies bias and every activation of tf.fused.matMul like tfjs', () => {
    const activations = ['linear', 'relu', 'relu6', 'prelu', 'leakyrelu', 'elu', 'sigmoid'] as const;
    const [m, n, k] = [7, 19, 33];
    for (const [ta, tb] of TRANSPOSES) {
      const [as, bs] = shapes(m, n, k, ta, tb);
      const a = rand(as);
      const b = rand(bs);
      for (const biasShape of [null, [n], [1, n], [m, n], [m, 1], []] as const) {
        const bias = biasShape ? tf.tidy(() => tf.mul(rand([...biasShape]), 3)) : undefined;
        for (const activation of activations) {
          const prelu = activation === 'prelu' ? rand(biasShape && biasShape.length === 2 ? [m, n] : [n]) : undefined;
          const run = () =>
            tf.fused.matMul({ a, b, transposeA: ta, transposeB: tb, bias, activation, preluActivationWeights: prelu, leakyreluAlpha: 0.3 });
          const want = plain(run);
          expectAllIsas(run, want, `fused ${activation} bias=${JSON.stringify(biasShape)} tA=${ta} tB=${tb}`);
          want.dispose();
          prelu?.dispose();
        }
        bias?.dispose();
      }
      tf.dispose([a, b]);
    }
    // Batched, and matrix-vector (the native path differs there).
    for (const [as, bs, biasShape] of [[[3, 5, 9], [3, 9, 11], [3, 1, 11]], [[1, 300], [300, 40], [40]], [[50, 300], [300, 1], [50, 1]]] as const) {
      const a = rand([...as]);
      const b = rand([...bs]);
      const bias = rand([...biasShape]);
      const run = () => tf.fused.matMul({ a, b, bias, activation: 'relu' });
      const want = plain(run);
      expectAllIsas(run, want, `fused batched ${as}x${bs}`);
      tf.dispose([a, b, bias, want]);
    }
  });

  it('delegates int32 inputs to tfjs', () => {
    const a = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3], 'int32');
    const b = tf.tensor2d([7, 8, 9, 10, 11, 12], [3, 2], 'int32');
    const want = plain(() => tf.matMul(a, b));
    const got = tf.matMul(a, b);
    expect(got.dtype).toBe('int32');
    expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
    expect(Array.from(got.dataSync())).toEqual([58, 64, 139, 154]);
    tf.dispose([a, b, want, got]);
  });

  it('rejects mismatched inner dimensions like tfjs', () => {
    const a = tf.zeros([2, 3]);
    const b = tf.zeros([4, 5]);
    expect(() => tf.matMul(a, b)).toThrow();
    tf.dispose([a, b]);
  });

  it('gives the same gradients as tfjs (all transposes, batched, fused)', () => {
    const cases: [number[], number[], boolean, boolean][] = [];
    for (const [ta, tb] of TRANSPOSES) {
      const [as, bs] = shapes(9, 13, 21, ta, tb);
      cases.push([as, bs, ta, tb]);
      cases.push([[2, ...as], [2, ...bs], ta, tb]);
    }
    for (const [as, bs, ta, tb] of cases) {
      const a = rand(as);
      const b = rand(bs);
      const w = rand(plain(() => tf.tidy(() => tf.matMul(a, b, ta, tb).shape)));
      const f = (x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y, ta, tb), w));
      const want = plain(() => tf.grads(f)([a, b]));
      const got = tf.grads(f)([a, b]);
      expectMatch(got[0]!, want[0]!, `dA ${as}x${bs}`);
      expectMatch(got[1]!, want[1]!, `dB ${as}x${bs}`);
      tf.dispose([a, b, w, ...want, ...got]);
    }
    const a = rand([6, 10]);
    const b = rand([8, 10]);
    const bias = rand([8]);
    const f = (x: tf.Tensor, y: tf.Tensor, z: tf.Tensor) =>
      tf.sum(tf.fused.matMul({ a: x, b: y, transposeB: true, bias: z, activation: 'relu' }));
    const want = plain(() => tf.grads(f)([a, b, bias]));
    const got = tf.grads(f)([a, b, bias]);
    for (let i = 0; i < 3; i++) expectMatch(got[i]!, want[i]!, `fused grad ${i}`);
    tf.dispose([a, b, bias, ...want, ...got]);
  });

  it('computes BLAS-style sgemm with alpha, beta and leading dimensions', () => {
    const [m, n, k] = [7, 10, 12];
    const [lda, ldb, ldc] = [k + 3, n + 2, n + 5];
    let seed = 1000;
    for (const [ta, tb] of TRANSPOSES) {
      const A = randomArray((ta ? k : m) * (ta ? m + 3 : lda), seed++);
      const B = randomArray((tb ? n : k) * (tb ? k + 2 : ldb), seed++);
      const C = randomArray(m * ldc, seed++);
      const la = ta ? m + 3 : lda;
      const lb = tb ? k + 2 : ldb;
      const want = Float64Array.from(C);
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let p = 0; p < k; p++) s += A[ta ? p * la + i : i * la + p]! * B[tb ? j * lb + p : p * lb + j]!;
          want[i * ldc + j] = 0.5 * s - 2 * C[i * ldc + j]!;
        }
      }
      gemm!.sgemm(ta, tb, m, n, k, 0.5, A, la, B, lb, -2, C, ldc);
      for (let i = 0; i < C.length; i++) expect(Math.abs(C[i]! - want[i]!)).toBeLessThan(1e-5);
    }
    expect(() => gemm!.sgemm(false, false, 4, 4, 4, 1, new Float32Array(15), 4, new Float32Array(16), 4, 0, new Float32Array(16), 4)).toThrow();
  });

  it('does not leak tensors', async () => {
    const a = rand([3, 6, 20]);
    const b = rand([20, 9]);
    const bias = rand([9]);
    const ai = tf.tensor2d([1, 2, 3, 4], [2, 2], 'int32');
    await expectNoLeaks(() => {
      tf.matMul(a, b).dispose();
      tf.tidy(() => {
        tf.matMul(a.reshape([18, 20]), b, false, false);
      });
      tf.fused.matMul({ a, b, bias, activation: 'relu' }).dispose();
      tf.matMul(ai, ai).dispose();
      tf.dispose(tf.grads((x: tf.Tensor) => tf.sum(tf.matMul(x, b)))([a]));
    });
    tf.dispose([a, b, bias, ai]);
  });
});
