import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from '@jest/globals';
import { applyRope, ropeAngles, ropeFrequencies } from '../../ops/index.js';
import { expectNoLeaks, randomArray } from '../helpers/tensors.js';

// The spec prints float32 values to 7-8 digits; 3e-7 relative is about 2 float32 ulps.
const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
const ULPS = 3e-7;

describe('ropeFrequencies', () => {
  it('theta 1e4, D 128 gives the known table values (lwm-spec 11 item 3)', () => {
    const f = ropeFrequencies(128, 1e4);
    expect(f.length).toBe(64);
    expect(f[0]).toBe(1);
    expect(rel(f[1]!, 0.86596435)).toBeLessThan(ULPS);
    expect(rel(f[2]!, 0.7498942)).toBeLessThan(ULPS);
    expect(rel(f[63]!, 1.1547821e-4)).toBeLessThan(ULPS);
  });

  it('theta 5e7 (LWM 1M and vision models) gives the known values', () => {
    const f = ropeFrequencies(128, 5e7);
    expect(rel(f[1]!, 0.75806004)).toBeLessThan(ULPS);
    expect(rel(f[63]!, 2.6383136e-8)).toBeLessThan(ULPS);
  });

  it('freq[1] for theta 1e6, 1e7, 2.5e7 matches the spec', () => {
    expect(rel(ropeFrequencies(128, 1e6)[1]!, 0.8058422)).toBeLessThan(ULPS);
    expect(rel(ropeFrequencies(128, 1e7)[1]!, 0.7773651)).toBeLessThan(ULPS);
    expect(rel(ropeFrequencies(128, 2.5e7)[1]!, 0.7663147)).toBeLessThan(ULPS);
  });

  it('angle table at p=1: cos/sin of pairs 0 and 1', () => {
    const { cos, sin } = ropeAngles(tf.tensor1d([1], 'int32'), ropeFrequencies(128, 1e4));
    const c = cos.dataSync();
    const s = sin.dataSync();
    expect(c[0]).toBeCloseTo(0.5403023, 6);
    expect(s[0]).toBeCloseTo(0.841471, 6);
    expect(c[1]).toBeCloseTo(0.6479058, 6);
    expect(s[1]).toBeCloseTo(0.7617204, 6);
  });
});

describe('applyRope', () => {
  const freq = ropeFrequencies(128, 1e4);
  const head = (values: number[]) => {
    const x = new Float32Array(128);
    values.forEach((v, i) => (x[i] = v));
    return tf.tensor4d(x, [1, 1, 1, 128]);
  };

  it('interleaved layout at p=1 rotates adjacent pairs (lwm-spec 11 item 4)', () => {
    const y = applyRope(head([1, 0, 1, 0]), ropeAngles(tf.tensor2d([[1]], [1, 1], 'int32'), freq), 'interleaved').dataSync();
    expect(y[0]).toBeCloseTo(0.5403023, 6);
    expect(y[1]).toBeCloseTo(0.841471, 6);
    expect(y[2]).toBeCloseTo(0.6479058, 6);
    expect(y[3]).toBeCloseTo(0.7617204, 6);
  });

  it('rotate-half layout pairs dimension i with i + D/2', () => {
    const x = new Array(128).fill(0);
    x[0] = 1;
    x[1] = 1;
    const y = applyRope(head(x), ropeAngles(tf.tensor2d([[1]], [1, 1], 'int32'), freq), 'rotate-half').dataSync();
    expect(y[0]).toBeCloseTo(0.5403023, 6);
    expect(y[64]).toBeCloseTo(0.841471, 6);
    expect(y[1]).toBeCloseTo(0.6479058, 6);
    expect(y[65]).toBeCloseTo(0.7617204, 6);
  });

  it('position 0 is the identity in both layouts', () => {
    const x = tf.tensor4d(randomArray(2 * 128, 3), [1, 1, 2, 128]);
    for (const layout of ['interleaved', 'rotate-half'] as const) {
      const y = applyRope(x, ropeAngles(tf.tensor2d([[0]], [1, 1], 'int32'), freq), layout);
      expect(Array.from(y.dataSync())).toEqual(Array.from(x.dataSync()));
    }
  });

  it('q.k after rotation depends only on the position difference', () => {
    const q = tf.tensor4d(randomArray(128, 5), [1, 1, 1, 128]);
    const k = tf.tensor4d(randomArray(128, 6), [1, 1, 1, 128]);
    const dot = (pq: number, pk: number) => {
      const rq = applyRope(q, ropeAngles(tf.tensor2d([[pq]], [1, 1], 'int32'), freq));
      const rk = applyRope(k, ropeAngles(tf.tensor2d([[pk]], [1, 1], 'int32'), freq));
      return tf.sum(tf.mul(rq, rk)).dataSync()[0]!;
    };
    expect(dot(7, 3)).toBeCloseTo(dot(104, 100), 4);
    expect(dot(7, 3)).not.toBeCloseTo(dot(8, 3), 2);
  });

  it('interleaved RoPE with Jax weights equals rotate-half RoPE with HF-permuted weights (lwm-spec 2.5)', () => {
    // HF row h*D + j*(D/2) + i = Jax column h*D + 2i + j: permuting q and k identically keeps scores.
    const d = 16;
    const f = ropeFrequencies(d, 1e4);
    const jaxQ = randomArray(2 * d, 11);
    const jaxK = randomArray(2 * d, 12);
    const permute = (x: Float32Array) => {
      const y = new Float32Array(x.length);
      for (let h = 0; h < 2; h++) for (let j = 0; j < 2; j++) for (let i = 0; i < d / 2; i++) y[h * d + j * (d / 2) + i] = x[h * d + 2 * i + j]!;
      return y;
    };
    const pos = tf.tensor2d([[5]], [1, 1], 'int32');
    const posK = tf.tensor2d([[2]], [1, 1], 'int32');
    const score = (q: Float32Array, k: Float32Array, layout: 'interleaved' | 'rotate-half') =>
      tf.sum(tf.mul(applyRope(tf.tensor4d(q, [1, 1, 2, d]), ropeAngles(pos, f), layout), applyRope(tf.tensor4d(k, [1, 1, 2, d]), ropeAngles(posK, f), layout)), [0, 1, 3]).dataSync();
    const a = score(jaxQ, jaxK, 'interleaved');
    const b = score(permute(jaxQ), permute(jaxK), 'rotate-half');
    expect(Math.abs(a[0]! - b[0]!)).toBeLessThan(1e-5);
    expect(Math.abs(a[1]! - b[1]!)).toBeLessThan(1e-5);
  });

  it('does not leak tensors', async () => {
    const x = tf.randomNormal([1, 3, 2, 16]) as tf.Tensor4D;
    const p = tf.tensor2d([[0, 1, 2]], [1, 3], 'int32');
    await expectNoLeaks(() => {
      const a = ropeAngles(p, ropeFrequencies(16, 1e4));
      applyRope(x, a).dispose();
      applyRope(x, a, 'interleaved').dispose();
      tf.dispose([a.cos, a.sin]);
    });
    x.dispose();
    p.dispose();
  });
});
