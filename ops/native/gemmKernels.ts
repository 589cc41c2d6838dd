// Native GEMM kernels for the cpu backend: BatchMatMul and _FusedMatMul. Inputs are read in
// place, the product is written once into native memory, and bias plus activation are applied
// natively with tfjs' own formulas. Other dtypes and shapes tfjs itself rejects go to its kernel.
import * as tf from '@tensorflow/tfjs';
import type { NativeAddon } from './addon.js';
import { cpuTensor, cpuValues, defineNativeKernel } from './registry.js';

/** The gemm functions of the addon (src/gemm_napi.cc). */
export interface GemmAddon {
  /**
   * batch products of a's item aIdx[i] ([M, K], or [K, M] when transA) and b's item bIdx[i]
   * ([K, N], or [N, K] when transB); null indices mean item i. The optional epilogue adds bias
   * (read at biasOff[i] + row * biasSM + col * biasSN) and applies activation `act` (see ACT).
   */
  matmul(
    a: Float32Array, b: Float32Array, batch: number, m: number, n: number, k: number,
    transA: boolean, transB: boolean, aIdx: Int32Array | null, bIdx: Int32Array | null,
    bias?: Float32Array | null, biasOff?: Int32Array | null, biasSM?: number, biasSN?: number,
    act?: number, leakyAlpha?: number,
    prelu?: Float32Array | null, preluOff?: Int32Array | null, preluSM?: number, preluSN?: number,
  ): Float32Array;
  /** BLAS-style C = alpha op(A) op(B) + beta C, row-major, in place on c. */
  sgemm(
    transA: boolean, transB: boolean, m: number, n: number, k: number, alpha: number,
    a: Float32Array, lda: number, b: Float32Array, ldb: number, beta: number, c: Float32Array, ldc: number,
  ): void;
  /** Register blocking of the active ISA's kernels. */
  gemmBlocking(): { isa: string; mr: number; nr: number; mc: number; kc: number; nc: number };
}

/** Activation codes of the native epilogue (gemm.h, Act). */
export const ACT: Record<string, number> = { linear: 0, relu: 1, relu6: 2, leakyrelu: 3, prelu: 4, elu: 5, sigmoid: 6 };

export function gemmAddon(addon: NativeAddon): GemmAddon | null {
  const g = addon as unknown as Partial<GemmAddon>;
  return typeof g.matmul === 'function' && typeof g.sgemm === 'function' ? (g as GemmAddon) : null;
}

interface Plan {
  m: number;
  n: number;
  k: number;
  batch: number;
  outShape: number[];
  aIdx: Int32Array | null;
  bIdx: Int32Array | null;
}

function size(shape: readonly number[]): number {
  let s = 1;
  for (const d of shape) s *= d;
  return s;
}

/** Broadcast of two shapes (right-aligned, 1 stretches), or null when they do not broadcast. */
function broadcastShape(x: readonly number[], y: readonly number[]): number[] | null {
  const r = Math.max(x.length, y.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const a = x[x.length - r + i] ?? 1;
    const b = y[y.length - r + i] ?? 1;
    if (a !== b && a !== 1 && b !== 1) return null;
    out.push(a === 1 ? b : a);
  }
  return out;
}

/**
 * Element offset of `shape` (broadcast into `out`, right-aligned) for each position of out's
 * first `lead` dims, and the strides of its last two (0 where broadcast). offsets is null when
 * it is i * (item size) for every i, which the addon does without an array.
 */
function broadcastView(shape: readonly number[], out: readonly number[], lead: number): { off: Int32Array | null; sRow: number; sCol: number } {
  const r = out.length;
  const strides = new Array<number>(r).fill(0);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const o = r - shape.length + i;
    if (shape[i]! !== 1 && o >= 0) strides[o] = s;
    s *= shape[i]!;
  }
  const count = size(out.slice(0, lead));
  const off = new Int32Array(count);
  let identity = true;
  const item = size(shape.slice(-2));
  for (let i = 0; i < count; i++) {
    let rem = i;
    let o = 0;
    for (let d = lead - 1; d >= 0; d--) {
      o += (rem % out[d]!) * strides[d]!;
      rem = Math.floor(rem / out[d]!);
    }
    off[i] = o;
    if (o !== i * item) identity = false;
  }
  return { off: identity ? null : off, sRow: r >= 2 ? strides[r - 2]! : 0, sCol: r >= 1 ? strides[r - 1]! : 0 };
}

/** Shapes of a matmul as the addon needs them, or null for what the tfjs kernel should handle. */
function plan(a: tf.TensorInfo, b: tf.TensorInfo, transA: boolean, transB: boolean): Plan | null {
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2) return null;
  const k = transA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
  const kb = transB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
  const m = transA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
  const n = transB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
  if (k !== kb) return null;
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const batchShape = broadcastShape(batchA, batchB);
  if (!batchShape) return null;
  const outShape = [...batchShape, m, n];
  const lead = batchShape.length;
  // Batch offsets in units of whole items (the addon multiplies by the item size).
  const toItems = (dims: number[]): Int32Array | null => {
    const v = broadcastView([...dims, 1, 1], [...batchShape, 1, 1], lead);
    return v.off;
  };
  return { m, n, k, batch: size(batchShape), outShape, aIdx: toItems(batchA), bIdx: toItems(batchB) };
}

function f32(backend: tf.KernelBackend, t: tf.TensorInfo): Float32Array | null {
  const v = cpuValues(backend, t);
  return v instanceof Float32Array ? v : null;
}

defineNativeKernel({
  kernelName: tf.BatchMatMul,
  make(addon, original) {
    const g = gemmAddon(addon);
    if (!g || !original) return null;
    return (args) => {
      const { inputs, attrs } = args;
      const backend = args.backend as tf.KernelBackend;
      const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      if (a.dtype !== 'float32' || b.dtype !== 'float32') return original(args);
      const p = plan(a, b, !!transposeA, !!transposeB);
      const av = f32(backend, a);
      const bv = f32(backend, b);
      if (!p || !av || !bv) return original(args);
      const out = g.matmul(av, bv, p.batch, p.m, p.n, p.k, !!transposeA, !!transposeB, p.aIdx, p.bIdx);
      return cpuTensor(backend, p.outShape, out);
    };
  },
});

defineNativeKernel({
  kernelName: tf._FusedMatMul,
  make(addon, original) {
    const g = gemmAddon(addon);
    if (!g || !original) return null;
    return (args) => {
      const { inputs, attrs } = args;
      const backend = args.backend as tf.KernelBackend;
      const { a, b, bias, preluActivationWeights: prelu } = inputs as Record<string, tf.TensorInfo | undefined>;
      const { transposeA, transposeB, activation, leakyreluAlpha } = attrs as unknown as {
        transposeA: boolean; transposeB: boolean; activation?: string; leakyreluAlpha?: number;
      };
      const act = ACT[activation ?? 'linear'];
      if (!a || !b || act === undefined || (activation === 'prelu' && !prelu)) return original(args);
      if ([a, b, bias, prelu].some((t) => t && t.dtype !== 'float32')) return original(args);
      const p = plan(a, b, !!transposeA, !!transposeB);
      const av = f32(backend, a);
      const bv = f32(backend, b);
      if (!p || !av || !bv) return original(args);
      // The epilogue writes in place, so bias and prelu weights must broadcast into the output
      // without growing it (tfjs would then return the larger shape: let it).
      const lead = p.outShape.length - 2;
      const operand = (t: tf.TensorInfo | undefined) => {
        if (!t) return { v: null, off: null as Int32Array | null, sRow: 0, sCol: 0, ok: true };
        const v = f32(backend, t);
        const shape = broadcastShape(p.outShape, t.shape);
        if (!v || !shape || shape.length !== p.outShape.length || shape.some((d, i) => d !== p.outShape[i])) {
          return { v: null, off: null, sRow: 0, sCol: 0, ok: false };
        }
        const view = broadcastView(t.shape, p.outShape, lead);
        // null offsets mean "item i" to the addon only for a and b; here they must be explicit.
        const off = view.off ?? Int32Array.from({ length: p.batch }, (_, i) => i * size(t.shape.slice(-2)));
        return { v, off, sRow: view.sRow, sCol: view.sCol, ok: true };
      };
      const bi = operand(bias);
      const pr = operand(activation === 'prelu' ? prelu : undefined);
      if (!bi.ok || !pr.ok) return original(args);
      const out = g.matmul(
        av, bv, p.batch, p.m, p.n, p.k, !!transposeA, !!transposeB, p.aIdx, p.bIdx,
        bi.v, bi.off, bi.sRow, bi.sCol, act, leakyreluAlpha ?? 0.2, pr.v, pr.off, pr.sRow, pr.sCol,
      );
      return cpuTensor(backend, p.outShape, out);
    };
  },
});
