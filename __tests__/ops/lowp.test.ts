import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from '@jest/globals';
import { InputError, LlamaModel, lowerParams, LowpWeight, matMulLowp } from '../../src/index.js';
import { f32ToBf16, bf16ToF32 } from '../../src/checkpoint/dtype.js';
import { createModel } from '../../src/index.js';
import { fixture } from '../helpers/paths.js';
import { expectGoldenCasesAs, expectGoldenCasesWith } from '../helpers/golden.js';
import { mulberry32 } from '../../data/batches.js';
import { quantizeInt8, quantizeInt8Js } from '../../ops/native/lowp.js';

function randomMatrix(n: number, k: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  return Float32Array.from({ length: n * k }, () => (r() - 0.5) * 4);
}

describe('LowpWeight', () => {
  it('bf16 rounds to nearest even exactly as the checkpoint writer does', () => {
    const w = randomMatrix(7, 13, 1);
    w[0] = NaN;
    w[1] = -Infinity;
    w[2] = 1 + 2 ** -8; // a tie: rounds to even (1)
    const bits = new Uint16Array(w.length);
    f32ToBf16(w, bits);
    const lw = LowpWeight.fromFloat32(w, [7, 13], 'bf16');
    expect(Array.from(lw.bits!)).toEqual(Array.from(bits));
    const back = new Float32Array(w.length);
    bf16ToF32(bits, back);
    expect(Array.from(lw.toFloat32())).toEqual(Array.from(back));
    expect(lw.bytes).toBe(2 * 7 * 13);
  });

  it('int8 keeps every value within half a step of its row scale, and zero rows at zero', () => {
    const w = randomMatrix(5, 33, 2);
    w.fill(0, 33, 66);
    const lw = LowpWeight.fromFloat32(w, [5, 33], 'int8');
    const back = lw.toFloat32();
    for (let j = 0; j < 5; j++) {
      const s = lw.scales![j]!;
      for (let i = 0; i < 33; i++) expect(Math.abs(back[j * 33 + i]! - w[j * 33 + i]!)).toBeLessThanOrEqual(s / 2 + 1e-7);
    }
    expect(lw.scales![1]).toBe(0);
    expect(lw.bytes).toBe(5 * 33 + 4 * 5);
  });

  it('int8 from the addon (float32 or bf16 input) gives the same bytes as the plain-JS quantizer', () => {
    const w = randomMatrix(33, 70, 9);
    w.fill(0, 70, 140);
    w[5] = 0.5 * (w[6]! + w[7]!);
    const js = quantizeInt8Js(w, 33, 70);
    const nat = quantizeInt8(w, 33, 70);
    expect(Array.from(nat.q)).toEqual(Array.from(js.q));
    expect(Array.from(nat.scales)).toEqual(Array.from(js.scales));
    const bits = new Uint16Array(w.length);
    f32ToBf16(w, bits);
    const wide = new Float32Array(w.length);
    bf16ToF32(bits, wide);
    const fromBits = LowpWeight.int8FromBf16(bits, [33, 70]);
    const ref = quantizeInt8Js(wide, 33, 70);
    expect(Array.from(fromBits.q!)).toEqual(Array.from(ref.q));
    expect(Array.from(fromBits.scales!)).toEqual(Array.from(ref.scales));
  });

  it('matMulLowp equals x @ dequantized(w)^T for m = 1 and m > 1, and checks shapes', () => {
    for (const dtype of ['bf16', 'int8'] as const) {
      for (const m of [1, 5]) {
        const lw = LowpWeight.fromFloat32(randomMatrix(19, 37, 3), [19, 37], dtype);
        const x = tf.tensor2d(randomMatrix(m, 37, 4), [m, 37]);
        const got = matMulLowp(x, lw).dataSync();
        const want = tf.matMul(x, tf.tensor2d(lw.toFloat32(), [19, 37]), false, true).dataSync();
        for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(1e-4 * (1 + Math.abs(want[i]!)));
      }
    }
    const lw = LowpWeight.fromFloat32(randomMatrix(4, 8, 5), [4, 8], 'bf16');
    expect(() => matMulLowp(tf.zeros([2, 7]) as tf.Tensor2D, lw)).toThrow(/input has 7 features but the weight \[4, 8\] expects 8/);
  });

  it('a lowered model keeps embeddings and norms in float32 and refuses float32 access to its linear weights', () => {
    const m = createModel('tiny', { seed: 1, overrides: { maxSeqLen: 32 } });
    const before = m.params.bytes;
    const low = new LlamaModel(m.config, lowerParams(m.params, 'bf16'));
    try {
      expect(low.params.get('model.embed_tokens.weight').dtype).toBe('float32');
      expect(low.params.get('model.layers.0.input_layernorm.weight').dtype).toBe('float32');
      expect(low.params.weight('model.layers.0.mlp.up_proj.weight')).toBeInstanceOf(LowpWeight);
      expect(() => low.params.get('lm_head.weight')).toThrow(InputError);
      expect(() => low.params.get('lm_head.weight')).toThrow(/stored as bf16, which only inference matmuls take; load the model with dtype f32/);
      expect(low.params.lowPrecision).toBe(true);
      expect(low.params.bytes).toBeLessThan(before * 0.8);
    } finally {
      low.dispose();
    }
  });
});

describe('bf16 model (the fixture stored in bf16, linear weights kept in bf16)', () => {
  it("reproduces expected.json's greedy tokens, top-5 ids and logprobs", () => {
    expectGoldenCasesAs('bf16', fixture('tiny-lwm-text'));
  });

  it('with a bf16 KV cache too: the same greedy tokens, top-5 logprobs within 5e-2 (keys and values carry 8 mantissa bits)', () => {
    expectGoldenCasesWith({ dtype: 'bf16', kvDtype: 'bf16', logprobTol: 5e-2 }, fixture('tiny-lwm-text'));
  });
});
