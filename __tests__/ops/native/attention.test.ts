import { spawnSync } from 'node:child_process';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { attention, InputError, type AttentionOptions } from '../../../ops/index.js';
import { addonStatus, disableNativeKernels, enableNativeKernels, isNativeKernelActive, loadAddon } from '../../../ops/native/index.js';
import { attentionAddon, FUSED_ATTENTION, fusedAttention, type AttentionShape } from '../../../ops/native/attentionKernel.js';
import { expectNoLeaks, maxAbsDiff, randomArray } from '../../helpers/tensors.js';

type Visible = (b: number, i: number, j: number) => boolean;

interface Grads { o: Float64Array; lse: Float64Array; dq: Float64Array; dk: Float64Array; dv: Float64Array }

/** Float64 attention and its gradients for loss = sum(o * w) + sum(lse * wl), with any mask. */
function reference(q: Float32Array, k: Float32Array, v: Float32Array, w: Float32Array, s: AttentionShape, visible: Visible, wl?: Float32Array): Grads {
  const [B, Tq, Tk, H, Hkv, D] = s;
  const g = H / Hkv, scale = 1 / Math.sqrt(D);
  const r: Grads = { o: new Float64Array(q.length), lse: new Float64Array(B * H * Tq), dq: new Float64Array(q.length), dk: new Float64Array(k.length), dv: new Float64Array(v.length) };
  const p = new Float64Array(Tk), kOff = new Int32Array(Tk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Tq; i++) {
        const qo = ((b * Tq + i) * H + h) * D, li = (b * H + h) * Tq + i;
        let m = -Infinity;
        for (let j = 0; j < Tk; j++) {
          kOff[j] = ((b * Tk + j) * Hkv + Math.floor(h / g)) * D;
          p[j] = -Infinity;
          if (!visible(b, i, j)) continue;
          let dot = 0;
          for (let x = 0; x < D; x++) dot += q[qo + x]! * k[kOff[j]! + x]!;
          p[j] = dot * scale;
          if (p[j]! > m) m = p[j]!;
        }
        if (m === -Infinity) { r.lse[li] = -Infinity; continue; }
        let z = 0;
        for (let j = 0; j < Tk; j++) { p[j] = Math.exp(p[j]! - m); z += p[j]!; }
        r.lse[li] = m + Math.log(z);
        for (let j = 0; j < Tk; j++) {
          p[j] = p[j]! / z;
          for (let x = 0; x < D; x++) r.o[qo + x] = r.o[qo + x]! + p[j]! * v[kOff[j]! + x]!;
        }
        let dRow = 0;
        for (let x = 0; x < D; x++) dRow += w[qo + x]! * r.o[qo + x]!;
        for (let j = 0; j < Tk; j++) {
          if (p[j] === 0) continue;
          const ko = kOff[j]!;
          let dp = 0;
          for (let x = 0; x < D; x++) { dp += w[qo + x]! * v[ko + x]!; r.dv[ko + x] = r.dv[ko + x]! + p[j]! * w[qo + x]!; }
          const ds = p[j]! * (dp - dRow + (wl ? wl[li]! : 0)) * scale;
          for (let x = 0; x < D; x++) { r.dq[qo + x] = r.dq[qo + x]! + ds * k[ko + x]!; r.dk[ko + x] = r.dk[ko + x]! + ds * q[qo + x]!; }
        }
      }
  return r;
}

interface Case {
  name: string;
  shape: AttentionShape;
  opts?: AttentionOptions;
  /** Builds the mask tensors (inside a tidy) and returns the options for attention(). */
  masks?: () => AttentionOptions;
  visible: Visible;
}

const causal = (off: number): Visible => (_b, i, j) => j <= off + i;
const all: Visible = () => true;

function inputs(s: AttentionShape, seed: number) {
  const [B, Tq, Tk, H, Hkv, D] = s;
  return { q: randomArray(B * Tq * H * D, seed), k: randomArray(B * Tk * Hkv * D, seed + 1), v: randomArray(B * Tk * Hkv * D, seed + 2), w: randomArray(B * Tq * H * D, seed + 3) };
}

/** attention() output and tf.grads of sum(o * w) in q, k, v, with the native kernel on or off. */
function run(native: boolean, c: Case, seed = 1): { o: Float32Array; dq: Float32Array; dk: Float32Array; dv: Float32Array } {
  if (native) enableNativeKernels();
  else disableNativeKernels();
  expect(isNativeKernelActive(FUSED_ATTENTION)).toBe(native);
  const [B, Tq, Tk, H, Hkv, D] = c.shape;
  const x = inputs(c.shape, seed);
  // tidy returns tensors only: it would walk every element of a returned typed array.
  const ts = tf.tidy(() => {
    const q = tf.tensor4d(x.q, [B, Tq, H, D]), k = tf.tensor4d(x.k, [B, Tk, Hkv, D]), v = tf.tensor4d(x.v, [B, Tk, Hkv, D]);
    const w = tf.tensor4d(x.w, [B, Tq, H, D]);
    const opts = { ...c.opts, ...c.masks?.() };
    const o = attention(q, k, v, opts);
    const [dq, dk, dv] = tf.grads((a: tf.Tensor, b: tf.Tensor, cc: tf.Tensor) => tf.sum(tf.mul(attention(a as tf.Tensor4D, b as tf.Tensor4D, cc as tf.Tensor4D, opts), w)))([q, k, v]);
    return [o, dq!, dk!, dv!];
  });
  const [o, dq, dk, dv] = ts.map((t) => t.dataSync().slice() as Float32Array);
  tf.dispose(ts);
  return { o: o!, dq: dq!, dk: dk!, dv: dv! };
}

function expectFinite(a: ArrayLike<number>): void {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) throw new Error(`element ${i} is ${a[i]}`);
}

/** Native vs the tfjs composite and vs float64, outputs and gradients. */
function check(c: Case, tol = { o: 2e-5, grad: 1e-4 }): void {
  const nat = run(true, c);
  const comp = run(false, c);
  const x = inputs(c.shape, 1);
  const ref = reference(x.q, x.k, x.v, x.w, c.shape, c.visible);
  for (const key of ['o', 'dq', 'dk', 'dv'] as const) expectFinite(nat[key]);
  expect(maxAbsDiff(nat.o, ref.o)).toBeLessThan(tol.o);
  expect(maxAbsDiff(nat.o, comp.o)).toBeLessThan(tol.o);
  for (const key of ['dq', 'dk', 'dv'] as const) {
    expect(maxAbsDiff(nat[key], ref[key])).toBeLessThan(tol.grad);
    expect(maxAbsDiff(nat[key], comp[key])).toBeLessThan(tol.grad);
  }
}

const addon = loadAddon();
const att = addon ? attentionAddon(addon) : null;
const suite = addon && att ? describe : describe.skip;

const segments = [Array.from({ length: 70 }, (_, i) => (i < 5 ? 0 : i < 37 ? 1 : i < 68 ? 2 : 3)), new Array<number>(70).fill(0)];
const padded = [Array.from({ length: 40 }, (_, j) => (j < 3 || (j > 20 && j < 30) ? 0 : 1)), Array.from({ length: 40 }, (_, j) => (j >= 33 ? 0 : 1))];

const cases: Case[] = [
  { name: 'causal, 33 tokens, D 16', shape: [1, 33, 33, 2, 2, 16], visible: causal(0) },
  { name: 'non-causal, 33 tokens', shape: [1, 33, 33, 2, 2, 16], opts: { causal: false }, visible: all },
  { name: 'Tq = Tk = 1', shape: [1, 1, 1, 2, 2, 64], visible: causal(0) },
  { name: '7 tokens', shape: [1, 7, 7, 2, 2, 64], visible: causal(0) },
  { name: '130 tokens (not a multiple of the block)', shape: [1, 130, 130, 2, 2, 64], visible: causal(0) },
  { name: '257 tokens, non-causal', shape: [1, 257, 257, 1, 1, 16], opts: { causal: false }, visible: all },
  { name: 'KV-cache decode: 1 query against 100 keys', shape: [1, 1, 100, 4, 2, 128], opts: { queryOffset: 99 }, visible: causal(99) },
  { name: 'chunked prefill: 5 queries against 100 keys', shape: [1, 5, 100, 4, 4, 64], visible: causal(95) },
  { name: 'GQA 4 heads on 2', shape: [1, 70, 70, 4, 2, 64], visible: causal(0) },
  { name: 'GQA 4 heads on 1, batch 2', shape: [2, 70, 70, 4, 1, 64], visible: causal(0) },
  { name: 'head dim 128', shape: [1, 40, 40, 2, 2, 128], visible: causal(0) },
  { name: 'odd head dim 24', shape: [1, 40, 40, 2, 1, 24], visible: causal(0) },
  { name: 'odd head dim 20 (padded inside)', shape: [1, 40, 40, 2, 2, 20], visible: causal(0) },
  {
    name: 'key padding, batch 2', shape: [2, 40, 40, 2, 2, 16],
    masks: () => ({ keyMask: tf.tensor2d(padded) }),
    visible: (b, i, j) => j <= i && padded[b]![j] === 1,
  },
  {
    name: 'segment ids, batch 2', shape: [2, 70, 70, 4, 2, 32],
    masks: () => ({ segmentIds: tf.tensor2d(segments, [2, 70], 'int32') }),
    visible: (b, i, j) => j <= i && segments[b]![i] === segments[b]![j],
  },
  {
    name: 'fully masked rows (a batch of padding only)', shape: [2, 40, 40, 2, 2, 16], opts: { causal: false },
    masks: () => ({ keyMask: tf.tensor2d([new Array<number>(40).fill(0), padded[1]!]) }),
    visible: (b, _i, j) => b === 1 && padded[1]![j] === 1,
  },
  { name: 'queries before the first key (queryOffset < 0)', shape: [1, 70, 70, 2, 2, 16], opts: { queryOffset: -10 }, visible: causal(-10) },
];

suite('native fused attention (LwmFusedAttention)', () => {
  const isa0 = addon?.info().isa ?? 'scalar';

  beforeAll(async () => {
    await tf.setBackend('cpu');
  });
  afterAll(() => {
    addon!.setIsa(isa0 as 'avx512' | 'avx2' | 'scalar');
    disableNativeKernels();
  });

  for (const c of cases) {
    it(`matches the composite and float64, with gradients: ${c.name}`, () => check(c));
  }

  it('runs the fused kernel (not the composite) when enabled', async () => {
    enableNativeKernels();
    const q = tf.ones([1, 8, 2, 16]) as tf.Tensor4D;
    const info = await tf.profile(() => attention(q, q, q));
    expect(info.kernelNames).toContain(FUSED_ATTENTION);
    expect(info.kernelNames).not.toContain('BatchMatMul');
    tf.dispose([q, info.result as tf.Tensor]);
    disableNativeKernels();
  });

  it('tells a wrong mask from the right one (the comparison can fail)', () => {
    const c = cases[4]!;
    const x = inputs(c.shape, 1);
    expect(maxAbsDiff(run(true, c).o, reference(x.q, x.k, x.v, x.w, c.shape, all).o)).toBeGreaterThan(1e-2);
  });

  it('gives zero output, -Infinity lse and zero, finite gradients to a query with no visible key', () => {
    const c = cases[15]!;
    const nat = run(true, c);
    const D = 16, rowLen = 2 * 40 * D; // batch 0 is fully padded
    expect(maxAbsDiff(nat.o.subarray(0, rowLen), new Float32Array(rowLen))).toBe(0);
    expect(maxAbsDiff(nat.dq.subarray(0, rowLen), new Float32Array(rowLen))).toBe(0);
    enableNativeKernels();
    const lseT = tf.tidy(() => fusedAttention(tf.ones([2, 40, 2, D]), tf.ones([2, 40, 2, D]), tf.ones([2, 40, 2, D]), { causal: false, keyMask: tf.tensor2d([new Array<number>(40).fill(0), padded[1]!]) }).lse);
    const lse = lseT.dataSync().slice();
    lseT.dispose();
    expect(Array.from(lse.subarray(0, 80)).every((x) => x === -Infinity)).toBe(true);
    expectFinite(lse.subarray(80));
    disableNativeKernels();
  });

  it('lse matches float64, and its gradient (through fusedAttention) too', () => {
    enableNativeKernels();
    const s: AttentionShape = [2, 70, 70, 4, 2, 32];
    const [B, Tq, Tk, H, Hkv, D] = s;
    const x = inputs(s, 5);
    const wl = randomArray(B * H * Tq, 9);
    const ref = reference(x.q, x.k, x.v, x.w, s, (b, i, j) => j <= i && segments[b]![i] === segments[b]![j], wl);
    tf.tidy(() => {
      const seg = tf.tensor2d(segments, [2, 70], 'int32');
      const q = tf.tensor4d(x.q, [B, Tq, H, D]), k = tf.tensor4d(x.k, [B, Tk, Hkv, D]), v = tf.tensor4d(x.v, [B, Tk, Hkv, D]);
      const w = tf.tensor4d(x.w, [B, Tq, H, D]), wlt = tf.tensor3d(wl, [B, H, Tq]);
      expect(maxAbsDiff(fusedAttention(q, k, v, { segmentIds: seg }).lse.dataSync(), ref.lse)).toBeLessThan(2e-5);
      const loss = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => {
        const r = fusedAttention(a as tf.Tensor4D, b as tf.Tensor4D, c as tf.Tensor4D, { segmentIds: seg });
        return tf.add(tf.sum(tf.mul(r.out, w)), tf.sum(tf.mul(r.lse, wlt)));
      };
      const [dq, dk, dv] = tf.grads(loss)([q, k, v]);
      expect(maxAbsDiff(dq!.dataSync(), ref.dq)).toBeLessThan(1e-4);
      expect(maxAbsDiff(dk!.dataSync(), ref.dk)).toBeLessThan(1e-4);
      expect(maxAbsDiff(dv!.dataSync(), ref.dv)).toBeLessThan(1e-4);
    });
    disableNativeKernels();
  });

  it('honours explicit positions (a striped ring layout)', () => {
    enableNativeKernels();
    const s: AttentionShape = [1, 48, 48, 2, 2, 16];
    const x = inputs(s, 7);
    // Queries hold the even global positions, keys the odd ones.
    const qp = Int32Array.from({ length: 48 }, (_, i) => 2 * i), kp = Int32Array.from({ length: 48 }, (_, j) => 2 * j + 1);
    const ref = reference(x.q, x.k, x.v, x.w, s, (_b, i, j) => kp[j]! <= qp[i]!);
    const out = tf.tidy(() => fusedAttention(tf.tensor4d(x.q, [1, 48, 2, 16]), tf.tensor4d(x.k, [1, 48, 2, 16]), tf.tensor4d(x.v, [1, 48, 2, 16]), {
      queryPositions: tf.tensor1d(qp, 'int32'), keyPositions: tf.tensor1d(kp, 'int32'),
    }).out);
    expect(maxAbsDiff(out.dataSync(), ref.o)).toBeLessThan(2e-5);
    out.dispose();
    disableNativeKernels();
  });

  it('merges ring steps: forward accumulate and backward accumulate equal one call over all keys', () => {
    const s: AttentionShape = [1, 130, 130, 4, 2, 32];
    const [, Tq, Tk, H, Hkv, D] = s;
    const x = inputs(s, 11);
    const full = att!.attentionForward(x.q, x.k, x.v, null, null, s, {});
    const [dqF, dkF, dvF] = att!.attentionBackward(x.q, x.k, x.v, full[0], x.w, full[1], null, null, null, null, s, {});
    // Two key blocks [0, 60) and [60, 130) visiting in reverse order, with their global positions.
    const cut = 60, row = Hkv * D;
    const part = (j0: number, j1: number) => ({ k: x.k.slice(j0 * row, j1 * row), v: x.v.slice(j0 * row, j1 * row), kPos: Int32Array.from({ length: j1 - j0 }, (_, j) => j0 + j), n: j1 - j0 });
    const blocks = [part(cut, Tk), part(0, cut)];
    const o = new Float32Array(Tq * H * D), lse = new Float32Array(H * Tq).fill(-Infinity);
    for (const b of blocks) att!.attentionForward(x.q, b.k, b.v, o, lse, [1, Tq, b.n, H, Hkv, D], { kPos: b.kPos, queryOffset: 0, accumulate: true });
    expect(maxAbsDiff(o, full[0])).toBeLessThan(1e-6);
    expect(maxAbsDiff(lse, full[1])).toBeLessThan(1e-5);
    const dq = new Float32Array(Tq * H * D);
    for (const b of blocks) {
      const [, dk, dv] = att!.attentionBackward(x.q, b.k, b.v, full[0], x.w, full[1], null, dq, null, null, [1, Tq, b.n, H, Hkv, D], { kPos: b.kPos, queryOffset: 0, accumulateDq: true });
      const j0 = b.kPos[0]!;
      expect(maxAbsDiff(dk, dkF.subarray(j0 * row, (j0 + b.n) * row))).toBeLessThan(1e-5);
      expect(maxAbsDiff(dv, dvF.subarray(j0 * row, (j0 + b.n) * row))).toBeLessThan(1e-5);
    }
    expect(maxAbsDiff(dq, dqF)).toBeLessThan(1e-5);
    // An empty block (all keys in the future) leaves (o, lse) untouched, NaN-free.
    const before = o.slice();
    att!.attentionForward(x.q, blocks[0]!.k, blocks[0]!.v, o, lse, [1, Tq, blocks[0]!.n, H, Hkv, D], { kPos: blocks[0]!.kPos.map((p) => p + 1000), queryOffset: 0, accumulate: true });
    expect(maxAbsDiff(o, before)).toBe(0);
  });

  it('backward is deterministic (bitwise) from run to run', () => {
    const s: AttentionShape = [1, 300, 300, 4, 2, 64];
    const x = inputs(s, 13);
    const [o, lse] = att!.attentionForward(x.q, x.k, x.v, null, null, s, {});
    const a = att!.attentionBackward(x.q, x.k, x.v, o, x.w, lse, null, null, null, null, s, {});
    const b = att!.attentionBackward(x.q, x.k, x.v, o, x.w, lse, null, null, null, null, s, {});
    for (let i = 0; i < 3; i++) expect(Buffer.compare(Buffer.from(a[i]!.buffer), Buffer.from(b[i]!.buffer))).toBe(0);
  });

  it('gives bitwise the same forward and backward with 1 and 3 threads', () => {
    // Fresh processes, each with its own pool size (LWM_THREADS).
    const script = `
      const A = require(${JSON.stringify(addonStatus().path)});
      const sh = [2, 150, 150, 8, 2, 64], n = (len, seed) => { const o = new Float32Array(len); let s = seed;
        for (let i = 0; i < len; i++) { s = (s * 1103515245 + 12345) >>> 0; o[i] = s / 2 ** 32 - 0.5; } return o; };
      const q = n(2 * 150 * 8 * 64, 1), k = n(2 * 150 * 2 * 64, 2), v = n(2 * 150 * 2 * 64, 3), w = n(2 * 150 * 8 * 64, 4);
      const f = A.attentionForward(q, k, v, null, null, sh, {});
      const h = require('crypto').createHash('sha1');
      for (const a of [...f, ...A.attentionBackward(q, k, v, f[0], w, f[1], null, null, null, null, sh, {})]) h.update(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
      // Decoding: 1 and 2 queries against 1000 keys, whose runs are merged by log-sum-exp, and
      // against 100 keys, where the work items split the kv heads by the thread count.
      const kd = n(2 * 1000 * 2 * 64, 5), vd = n(2 * 1000 * 2 * 64, 6);
      for (const tk of [1000, 100]) for (const t of [1, 2]) {
        for (const a of A.attentionForward(q.subarray(0, 2 * t * 8 * 64), kd.subarray(0, 2 * tk * 128), vd.subarray(0, 2 * tk * 128), null, null, [2, t, tk, 8, 2, 64], {})) h.update(Buffer.from(a.buffer, a.byteOffset, a.byteLength));
      }
      process.stdout.write(A.info().threads + ' ' + h.digest('hex'));`;
    const digest = (threads: number) => {
      const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, LWM_THREADS: String(threads) }, encoding: 'utf8', timeout: 60000 });
      expect(r.stderr).toBe('');
      return r.stdout;
    };
    const [one, three] = [digest(1), digest(3)];
    expect(one.split(' ')[0]).toBe('1');
    expect(three.split(' ')[0]).toBe('3');
    expect(three.split(' ')[1]).toBe(one.split(' ')[1]);
  });

  for (const isa of ['scalar', 'avx2', 'avx512'] as const) {
    it(`${isa} kernels match float64 (skipped where the CPU lacks ${isa})`, () => {
      if (addon!.setIsa(isa) !== isa) return;
      try {
        for (const c of [cases[7]!, cases[9]!, cases[12]!, cases[13]!, cases[14]!, cases[6]!]) {
          const nat = run(true, c);
          const x = inputs(c.shape, 1);
          const ref = reference(x.q, x.k, x.v, x.w, c.shape, c.visible);
          expect(maxAbsDiff(nat.o, ref.o)).toBeLessThan(2e-5);
          for (const key of ['dq', 'dk', 'dv'] as const) expect(maxAbsDiff(nat[key], ref[key])).toBeLessThan(1e-4);
        }
      } finally {
        addon!.setIsa(isa0 as 'avx512' | 'avx2' | 'scalar');
        disableNativeKernels();
      }
    });
  }

  // Decoding reads K and V in place from a KV cache buffer whose rows past the current tokens are
  // not written yet: they must never reach the output, whatever they hold.
  const junk = [NaN, Infinity, -Infinity, 3e38, -3e38];
  const sameOrClose = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
    expect(a.length).toBe(b.length);
    let m = 0;
    for (let i = 0; i < a.length; i++) {
      if (a[i] === b[i]) continue; // also -Infinity lse of a query that sees nothing
      const d = Math.abs(a[i]! - b[i]!);
      m = Number.isNaN(d) ? Infinity : Math.max(m, d);
    }
    return m;
  };

  for (const isa of ['scalar', 'avx2', 'avx512'] as const) {
    it(`decode (${isa}): 1-3 queries against a cache with garbage past its tokens, GQA, key padding, batch 2`, () => {
      if (addon!.setIsa(isa) !== isa) return;
      try {
        const B = 2, H = 8, Hkv = 2, D = 64, extra = 70, row = Hkv * D;
        for (const tk of [1, 63, 64, 65, 1000]) {
          for (const tq of [1, 2, 3]) {
            if (tq > tk) continue;
            const cap = tk + extra, off = tk - tq;
            const q = randomArray(B * tq * H * D, tk + tq), k = randomArray(B * cap * row, 2 * tk + 1), v = randomArray(B * cap * row, 3 * tk + 2);
            // Batch 0 pads its first 3 keys and every 7th; padded keys hold huge (finite) values.
            const pad = (b: number, j: number) => b === 0 && (j < 3 || j % 7 === 5);
            const mask = new Float32Array(B * cap).fill(1);
            for (let b = 0; b < B; b++) {
              for (let j = 0; j < cap; j++) {
                const at = (b * cap + j) * row;
                if (j >= tk) {
                  for (let x = 0; x < row; x++) (k[at + x] = junk[(j + x) % 5]!), (v[at + x] = junk[(j + 2 * x) % 5]!);
                } else if (pad(b, j)) {
                  mask[b * cap + j] = 0;
                  k.fill(1e30, at, at + row);
                  v.fill(-1e30, at, at + row);
                }
              }
            }
            // The reference sees exactly the tokens: no garbage rows.
            const rows = (a: Float32Array) => { const o = new Float32Array(B * tk * row); for (let b = 0; b < B; b++) o.set(a.subarray(b * cap * row, (b * cap + tk) * row), b * tk * row); return o; };
            const kc = rows(k), vc = rows(v), mc = new Float32Array(B * tk).map((_, i) => mask[Math.floor(i / tk) * cap + (i % tk)]!);
            const shape: AttentionShape = [B, tq, tk, H, Hkv, D];
            const ref = reference(q, kc, vc, new Float32Array(q.length), shape, (b, i, j) => j <= off + i && !pad(b, j));

            enableNativeKernels();
            const [out, lse] = tf.tidy(() => {
              const r = fusedAttention(tf.tensor4d(q, [B, tq, H, D]), tf.tensor4d(k, [B, cap, Hkv, D]), tf.tensor4d(v, [B, cap, Hkv, D]), { queryOffset: off, keyMask: tf.tensor2d(mask, [B, cap]) });
              return [r.out, r.lse];
            });
            const o = out!.dataSync().slice(), l = lse!.dataSync().slice();
            tf.dispose([out!, lse!]);
            disableNativeKernels();
            const comp = tf.tidy(() => attention(tf.tensor4d(q, [B, tq, H, D]), tf.tensor4d(kc, [B, tk, Hkv, D]), tf.tensor4d(vc, [B, tk, Hkv, D]), { queryOffset: off, keyMask: tf.tensor2d(mc, [B, tk]) }));
            const c = comp.dataSync().slice();
            comp.dispose();

            const what = `tk ${tk}, tq ${tq}`;
            expect([what, sameOrClose(o, ref.o) < 2e-5]).toEqual([what, true]);
            expect([what, sameOrClose(o, c) < 2e-5]).toEqual([what, true]);
            expect([what, sameOrClose(l, ref.lse) < 2e-5]).toEqual([what, true]);
          }
        }
      } finally {
        addon!.setIsa(isa0 as 'avx512' | 'avx2' | 'scalar');
        disableNativeKernels();
      }
    });
  }

  it('decode: a cache large enough for the prefetching steps (over 8 MiB), garbage past its tokens', () => {
    const s: AttentionShape = [1, 2, 2100, 8, 8, 64];
    const [B, Tq, Tk, H, Hkv, D] = s, cap = Tk + 100, row = Hkv * D;
    const x = inputs([B, Tq, cap, H, Hkv, D], 31);
    for (let j = Tk; j < cap; j++) for (let c = 0; c < row; c++) (x.k[j * row + c] = junk[(j + c) % 5]!), (x.v[j * row + c] = junk[(j + 3 * c) % 5]!);
    const keyMask = Float32Array.from({ length: cap }, (_, j) => (j % 97 === 13 ? 0 : 1));
    const [o, lse] = att!.attentionForward(x.q, x.k, x.v, null, null, [B, Tq, cap, H, Hkv, D], { queryOffset: Tk - Tq, keyMask });
    const ref = reference(x.q, x.k.subarray(0, Tk * row), x.v.subarray(0, Tk * row), x.w, s, (_b, i, j) => j <= Tk - Tq + i && keyMask[j] === 1);
    expect(maxAbsDiff(o, ref.o)).toBeLessThan(2e-5);
    expect(maxAbsDiff(lse, ref.lse)).toBeLessThan(2e-5);
  });

  it('decode: odd head dims, non-causal, segments and a ring merge (accumulate) give the one-call result', () => {
    for (const D of [20, 24, 64]) {
      const s: AttentionShape = [2, 2, 300, 8, 2, D];
      const [B, Tq, Tk, H, Hkv] = s;
      const x = inputs(s, 21 + D);
      const ref = reference(x.q, x.k, x.v, x.w, s, causal(Tk - Tq));
      const full = att!.attentionForward(x.q, x.k, x.v, null, null, s, {});
      expect(maxAbsDiff(full[0], ref.o)).toBeLessThan(2e-5);
      expect(maxAbsDiff(full[1], ref.lse)).toBeLessThan(2e-5);
      const nc = att!.attentionForward(x.q, x.k, x.v, null, null, s, { causal: false });
      expect(maxAbsDiff(nc[0], reference(x.q, x.k, x.v, x.w, s, all).o)).toBeLessThan(2e-5);
      // Segments: queries in segment 1, keys 0..99 in segment 0 (invisible), the rest in 1.
      const qSeg = new Int32Array(B * Tq).fill(1), kSeg = Int32Array.from({ length: B * Tk }, (_, i) => (i % Tk < 100 ? 0 : 1));
      const sg = att!.attentionForward(x.q, x.k, x.v, null, null, s, { qSeg, kSeg });
      expect(maxAbsDiff(sg[0], reference(x.q, x.k, x.v, x.w, s, (_b, i, j) => j <= Tk - Tq + i && j >= 100).o)).toBeLessThan(2e-5);
      // Two key halves visiting in reverse order, merged into (o, lse).
      const row = Hkv * D, cut = 140;
      const part = (j0: number, j1: number) => {
        const k = new Float32Array(B * (j1 - j0) * row), v = new Float32Array(k.length);
        for (let b = 0; b < B; b++) {
          k.set(x.k.subarray((b * Tk + j0) * row, (b * Tk + j1) * row), b * (j1 - j0) * row);
          v.set(x.v.subarray((b * Tk + j0) * row, (b * Tk + j1) * row), b * (j1 - j0) * row);
        }
        return { k, v, kPos: Int32Array.from({ length: j1 - j0 }, (_, j) => j0 + j), n: j1 - j0 };
      };
      const o = new Float32Array(full[0].length), lse = new Float32Array(full[1].length).fill(-Infinity);
      for (const b of [part(cut, Tk), part(0, cut)]) att!.attentionForward(x.q, b.k, b.v, o, lse, [B, Tq, b.n, H, Hkv, D], { kPos: b.kPos, queryOffset: Tk - Tq, accumulate: true });
      expect(maxAbsDiff(o, full[0])).toBeLessThan(1e-5);
      expect(maxAbsDiff(lse, full[1])).toBeLessThan(1e-5);
    }
  });

  it('rejects inputs that do not fit', () => {
    enableNativeKernels();
    const q = tf.zeros([1, 4, 2, 8]) as tf.Tensor4D;
    expect(() => fusedAttention(q, q, q, { keyMask: tf.ones([1, 5]) as tf.Tensor2D })).toThrow(InputError);
    expect(() => att!.attentionForward(new Float32Array(3), new Float32Array(64), new Float32Array(64), null, null, [1, 4, 4, 2, 2, 8], {})).toThrow(/q has 3 elements/);
    tf.dispose(q);
    disableNativeKernels();
  });

  it('does not leak tensors', async () => {
    enableNativeKernels();
    const s: AttentionShape = [1, 20, 20, 2, 2, 16];
    const x = inputs(s, 3);
    const q = tf.tensor4d(x.q, [1, 20, 2, 16]), k = tf.tensor4d(x.k, [1, 20, 2, 16]), v = tf.tensor4d(x.v, [1, 20, 2, 16]);
    const seg = tf.tensor2d([new Array<number>(20).fill(0).map((_, i) => (i < 9 ? 0 : 1))], [1, 20], 'float32');
    await expectNoLeaks(() => {
      attention(q, k, v, { segmentIds: seg }).dispose();
      const gs = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(attention(a as tf.Tensor4D, b as tf.Tensor4D, c as tf.Tensor4D, { segmentIds: seg })))([q, k, v]);
      tf.dispose(gs);
      const r = fusedAttention(q, k, v);
      tf.dispose([r.out, r.lse]);
    });
    tf.dispose([q, k, v, seg]);
    disableNativeKernels();
  });
});
