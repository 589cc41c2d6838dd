import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from '@jest/globals';
import { attention } from '../../ops/index.js';
import { expectNoLeaks, maxAbsDiff, randomArray } from '../helpers/tensors.js';

/** Plain float64 attention over [B, T, H, D] arrays: the oracle. */
function reference(
  q: Float32Array, k: Float32Array, v: Float32Array,
  [b, tq, h, d]: [number, number, number, number], tk: number, hkv: number,
  visible: (bi: number, i: number, j: number) => boolean,
): Float64Array {
  const out = new Float64Array(b * tq * h * d);
  const g = h / hkv;
  for (let bi = 0; bi < b; bi++)
    for (let hi = 0; hi < h; hi++)
      for (let i = 0; i < tq; i++) {
        const kh = Math.floor(hi / g);
        const s: number[] = [];
        for (let j = 0; j < tk; j++) {
          if (!visible(bi, i, j)) { s.push(-Infinity); continue; }
          let dot = 0;
          for (let x = 0; x < d; x++) dot += q[((bi * tq + i) * h + hi) * d + x]! * k[((bi * tk + j) * hkv + kh) * d + x]!;
          s.push(dot / Math.sqrt(d));
        }
        const m = Math.max(...s);
        if (m === -Infinity) continue;
        const p = s.map((x) => Math.exp(x - m));
        const z = p.reduce((a, c) => a + c, 0);
        for (let x = 0; x < d; x++) {
          let acc = 0;
          for (let j = 0; j < tk; j++) acc += (p[j]! / z) * v[((bi * tk + j) * hkv + kh) * d + x]!;
          out[((bi * tq + i) * h + hi) * d + x] = acc;
        }
      }
  return out;
}

const B = 2, T = 8, H = 4, D = 8;
const qa = randomArray(B * T * H * D, 1);
const ka = randomArray(B * T * H * D, 2);
const va = randomArray(B * T * H * D, 3);
const q = () => tf.tensor4d(qa, [B, T, H, D]);
const k = () => tf.tensor4d(ka, [B, T, H, D]);
const v = () => tf.tensor4d(va, [B, T, H, D]);

describe('attention', () => {
  it('matches the float64 reference with a causal mask', () => {
    const y = attention(q(), k(), v(), { causal: true });
    expect(maxAbsDiff(y.dataSync(), reference(qa, ka, va, [B, T, H, D], T, H, (_, i, j) => j <= i))).toBeLessThan(1e-5);
  });

  it('non-causal attention sees every key', () => {
    const y = attention(q(), k(), v(), { causal: false });
    expect(maxAbsDiff(y.dataSync(), reference(qa, ka, va, [B, T, H, D], T, H, () => true))).toBeLessThan(1e-5);
  });

  it('causal: output at t is independent of inputs after t', () => {
    const k2 = ka.slice();
    const v2 = va.slice();
    for (let x = 5 * H * D; x < T * H * D; x++) { k2[x] = 9; v2[x] = -9; } // positions 5.. of batch 0
    const a = attention(q(), k(), v()).slice([0, 0, 0, 0], [1, 5, H, D]).dataSync();
    const b = attention(q(), tf.tensor4d(k2, [B, T, H, D]), tf.tensor4d(v2, [B, T, H, D])).slice([0, 0, 0, 0], [1, 5, H, D]).dataSync();
    expect(maxAbsDiff(a, b)).toBe(0);
  });

  it('padding: a masked key does not change any output', () => {
    const mask = tf.tensor2d([[1, 1, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]]);
    const v2 = va.slice();
    for (let x = 2 * H * D; x < 3 * H * D; x++) v2[x] = 100;
    const a = attention(q(), k(), v(), { keyMask: mask }).dataSync();
    const b = attention(q(), k(), tf.tensor4d(v2, [B, T, H, D]), { keyMask: mask }).dataSync();
    expect(maxAbsDiff(a, b)).toBe(0);
    expect(maxAbsDiff(a, reference(qa, ka, va, [B, T, H, D], T, H, (bi, i, j) => j <= i && !(bi === 0 && j === 2)))).toBeLessThan(1e-5);
  });

  it('segments: packed documents attend only within their segment', () => {
    const seg = tf.tensor2d([[0, 0, 0, 1, 1, 1, 1, 2], [0, 0, 0, 0, 0, 0, 0, 0]], [2, 8], 'int32');
    const segs = [[0, 0, 0, 1, 1, 1, 1, 2], [0, 0, 0, 0, 0, 0, 0, 0]];
    const y = attention(q(), k(), v(), { segmentIds: seg });
    const ref = reference(qa, ka, va, [B, T, H, D], T, H, (bi, i, j) => j <= i && segs[bi]![i] === segs[bi]![j]);
    expect(maxAbsDiff(y.dataSync(), ref)).toBeLessThan(1e-5);
  });

  it('a query with no visible key gets a finite zero output', () => {
    const mask = tf.tensor2d([[0, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]]);
    const y = attention(q(), k(), v(), { keyMask: mask }).dataSync();
    for (let x = 0; x < H * D; x++) expect(y[x]).toBe(0); // batch 0, query 0 sees only the masked key 0
    expect(Array.from(y).every(Number.isFinite)).toBe(true);
  });

  it('gradients stay finite with fully masked rows', () => {
    const mask = tf.tensor2d([[0, 1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 1]]);
    const grads = tf.grads((qq, kk, vv) => tf.sum(attention(qq as tf.Tensor4D, kk as tf.Tensor4D, vv as tf.Tensor4D, { keyMask: mask })))([q(), k(), v()]);
    for (const g of grads) expect(Array.from(g.dataSync()).every(Number.isFinite)).toBe(true);
  });

  it('blockwise queries equal one block', () => {
    const full = attention(q(), k(), v()).dataSync();
    for (const block of [1, 3, 4]) expect(maxAbsDiff(attention(q(), k(), v(), { blockSize: block }).dataSync(), full)).toBeLessThan(1e-6);
  });

  it('queries after a KV cache use the cache offset', () => {
    // The last 3 queries against all 8 keys equal rows 5..7 of the full causal result.
    const full = attention(q(), k(), v()).slice([0, 5, 0, 0], [B, 3, H, D]).dataSync();
    const part = attention(q().slice([0, 5, 0, 0], [B, 3, H, D]), k(), v(), { queryOffset: 5 }).dataSync();
    expect(maxAbsDiff(part, full)).toBeLessThan(1e-6);
  });

  it('grouped-query attention equals repeating each kv head', () => {
    const hkv = 2;
    const kg = randomArray(B * T * hkv * D, 7);
    const vg = randomArray(B * T * hkv * D, 8);
    const y = attention(q(), tf.tensor4d(kg, [B, T, hkv, D]), tf.tensor4d(vg, [B, T, hkv, D]));
    expect(maxAbsDiff(y.dataSync(), reference(qa, kg, vg, [B, T, H, D], T, hkv, (_, i, j) => j <= i))).toBeLessThan(1e-5);
  });

  it('rejects mismatched shapes with a message naming them', () => {
    expect(() => attention(q(), tf.zeros([B, T, 3, D]) as tf.Tensor4D, tf.zeros([B, T, 3, D]) as tf.Tensor4D)).toThrow(/not a multiple of 3 kv heads/);
    expect(() => attention(q(), tf.zeros([B, T, H, 4]) as tf.Tensor4D, v())).toThrow(/do not agree/);
  });

  it('does not leak tensors', async () => {
    const [a, b, c] = [q(), k(), v()];
    const seg = tf.zeros([B, T], 'int32') as tf.Tensor2D;
    await expectNoLeaks(() => attention(a, b, c, { blockSize: 3, segmentIds: seg }).dispose());
    tf.dispose([a, b, c, seg]);
  });
});
