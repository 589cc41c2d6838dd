// RingAttention against a float64 naive reference (spec section 8.2): every layout, ring sizes
// 1-8, causal and not, packed uneven documents, key padding with empty rows, grouped-query heads.
import { describe, expect, it } from '@jest/globals';
import * as tf from '@tensorflow/tfjs';
import {
  blockwiseAttentionWithLse,
  defaultBlockKernel,
  ringAttention,
  ringForward,
  runVirtualRing,
  tfjsBlockKernel,
  type BlockKernel,
  type RingLayout,
} from '../../ops/index.js';
import { mergePartial } from '../../ops/ring/blockKernels.js';
import { initBackend } from '../../src/backend.js';
import { allFinite, maxAbsErr, randn } from '../helpers/naiveAttention.js';
import { makeRingCase, naiveFor, problemFor, shardCase, unshard, virtualRing, type AttentionResult, type RingCase, type RingCaseOptions } from '../helpers/ringCase.js';
import { expectNoLeaks } from '../helpers/tensors.js';

await initBackend();
const native = defaultBlockKernel();
const LAYOUTS: RingLayout[] = ['contiguous', 'zigzag', 'striped'];
const KEYS = ['o', 'lse', 'dq', 'dk', 'dv'] as const;

/**
 * flash-attn's criterion (spec 8.2 item 9): the fp32 ring may be off the fp64 reference by at
 * most twice what a naive fp32 computation is, plus 1e-6.
 */
function expectMatchesReference(c: RingCase, got: AttentionResult): void {
  const ref = naiveFor(c);
  const base = naiveFor(c, 'float32');
  for (const key of KEYS) {
    expect(allFinite(got[key].filter((x) => x !== -Infinity))).toBe(true);
    const err = maxAbsErr(got[key], ref[key]);
    const bound = 2 * maxAbsErr(base[key], ref[key]) + 1e-6;
    if (!(err <= bound)) throw new Error(`${key}: error ${err} exceeds ${bound} (${JSON.stringify(c.opts)})`);
  }
  // Empty rows: exactly zero output and gradient, -Infinity log-sum-exp.
  const { b, h, d } = c.opts;
  let empty = 0;
  for (let bi = 0; bi < b; bi++) {
    for (let i = 0; i < c.s; i++) {
      if (ref.lse[(bi * h) * c.s + i] !== -Infinity) continue;
      empty++;
      expect(got.lse[(bi * h) * c.s + i]).toBe(-Infinity);
      const off = (bi * c.s + i) * h * d;
      for (let x = 0; x < h * d; x++) {
        expect(got.o[off + x]).toBe(0);
        expect(got.dq[off + x]).toBe(0);
      }
    }
  }
  if (c.opts.padding) expect(empty).toBeGreaterThan(0);
}

const bytes = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

function check(o: RingCaseOptions, kernel: BlockKernel, blockSize: number): void {
  const c = makeRingCase(o);
  expectMatchesReference(c, unshard(c, virtualRing(c, kernel, blockSize)));
}

describe('virtual ring vs float64 reference', () => {
  for (const n of [1, 2, 3, 4, 5, 8]) {
    for (const layout of LAYOUTS) {
      it(`N=${n} ${layout}: causal and not, packed documents, key padding, GQA (native, whole and odd blocks)`, () => {
        for (const causal of [true, false]) {
          check({ n, layout, causal, seed: n * 100 + (causal ? 1 : 2) }, native, 0);
          check({ n, layout, causal, seed: n * 100 + (causal ? 3 : 4) }, native, 3);
        }
      });
    }
  }
  for (const n of [1, 2, 3]) {
    it(`N=${n} every layout through the tfjs fallback, non-dividing blocks`, () => {
      for (const layout of LAYOUTS) for (const causal of [true, false]) check({ n, layout, causal, seed: n * 7 + (causal ? 1 : 0) }, tfjsBlockKernel, 5);
    });
  }
  it('blockwise (one rank): block sizes 1, odd, non-dividing and whole', () => {
    for (const blockSize of [1, 3, 5, 0]) {
      check({ n: 1, layout: 'contiguous', causal: true, seed: 11 + blockSize }, native, blockSize);
      check({ n: 1, layout: 'contiguous', causal: false, seed: 21 + blockSize, tokens: 20 }, tfjsBlockKernel, blockSize);
    }
  });
  it('mask variants: causal only, segments without padding, padding without segments', () => {
    for (const layout of LAYOUTS) {
      check({ n: 4, layout, causal: true, seed: 31, segments: false, padding: false }, native, 0);
      check({ n: 3, layout, causal: false, seed: 32, segments: true, padding: false }, native, 0);
      check({ n: 3, layout, causal: true, seed: 33, segments: false, padding: true }, native, 2);
    }
  });
  it('head layouts: multi-query (Hkv=1), multi-head (Hkv=H), documents spanning several ranks', () => {
    check({ n: 4, layout: 'zigzag', causal: true, seed: 41, hkv: 1 }, native, 0);
    check({ n: 4, layout: 'striped', causal: true, seed: 42, hkv: 4 }, tfjsBlockKernel, 0);
    // 96 tokens in 8 ranks with few, long documents: every document crosses rank boundaries.
    check({ n: 8, layout: 'contiguous', causal: true, seed: 43, tokens: 90, b: 1 }, native, 0);
  });
});

describe('ring properties', () => {
  it('is deterministic: two runs give identical bytes', () => {
    const c = makeRingCase({ n: 4, layout: 'zigzag', causal: true, seed: 5 });
    const a = virtualRing(c, native, 0);
    const b = virtualRing(c, native, 0);
    for (let r = 0; r < 4; r++) for (const key of KEYS) expect(bytes(a[r]![key]).equals(bytes(b[r]![key]))).toBe(true);
  });

  it('folding key blocks in a shuffled order changes results only at rounding level', () => {
    const c = makeRingCase({ n: 1, layout: 'contiguous', causal: true, seed: 6, padding: false });
    const sh = shardCase(c, 0);
    const p = problemFor(c, sh, 0, native, 0);
    const { b, h, hkv, d } = p.dims;
    const fold = (order: number[]) => {
      const o = new Float32Array(b * c.s * h * d);
      const lse = new Float32Array(b * h * c.s).fill(-Infinity);
      const chunk = 8;
      for (const ci of order) {
        const k0 = ci * chunk;
        const nk = Math.min(chunk, c.s - k0);
        const rows = (x: Float32Array | Int32Array, row: number) => {
          const out = new (x.constructor as { new (n: number): Float32Array | Int32Array })(b * nk * row);
          for (let bi = 0; bi < b; bi++) out.set(x.subarray((bi * c.s + k0) * row, (bi * c.s + k0 + nk) * row), bi * nk * row);
          return out;
        };
        native.forward(
          { dims: p.dims, tq: c.s, tk: nk, q: p.q, qMeta: p.meta, k: rows(p.k, hkv * d) as Float32Array, v: rows(p.v, hkv * d) as Float32Array, kMeta: { pos: rows(p.meta.pos, 1) as Int32Array, seg: rows(p.meta.seg!, 1) as Int32Array, valid: null }, causal: true, scale: p.scale },
          o,
          lse,
        );
      }
      return { o, lse };
    };
    const chunks = Math.ceil(c.s / 8);
    const inOrder = fold([...Array(chunks).keys()]);
    const shuffled = fold([...Array(chunks).keys()].reverse().sort((x, y) => ((x * 7919) % 5) - ((y * 7919) % 5)));
    expect(maxAbsErr(inOrder.o, shuffled.o)).toBeLessThan(1e-6);
    expect(maxAbsErr(inOrder.lse, shuffled.lse)).toBeLessThan(1e-6);
  });

  it('merging partials: an empty partial is the identity and two empty ones stay empty, without NaN', () => {
    const o = Float32Array.from([1, 2, 0, 0]);
    const lse = Float32Array.from([0.5, -Infinity]);
    mergePartial(o, lse, Float32Array.from([9, 9, 0, 0]), Float32Array.from([-Infinity, -Infinity]), 1, 2, 1, 2);
    expect(Array.from(o)).toEqual([1, 2, 0, 0]);
    expect(Array.from(lse)).toEqual([0.5, -Infinity]);
    // Huge log-sum-exp gaps must not overflow exp.
    mergePartial(o, lse, Float32Array.from([3, 4, 0, 0]), Float32Array.from([Math.fround(1e30), -Infinity]), 1, 2, 1, 2);
    expect(Array.from(o)).toEqual([3, 4, 0, 0]);
    expect(lse[0]).toBe(Math.fround(1e30));
  });

  it('a ring whose ranks disagree fails with a message naming the blocks instead of hanging', () => {
    const c = makeRingCase({ n: 3, layout: 'contiguous', causal: true, seed: 8 });
    const programs = [0, 1, 2].map((r) => ringForward(problemFor(c, shardCase(c, r), r, native, 0, r === 1 ? 5 : 0)));
    expect(() => runVirtualRing(programs)).toThrow(/rank \d expected attn call \d forward step 0 from rank \d but got attn call \d/);
  });
});

describe('the differentiable op', () => {
  it('blockwiseAttentionWithLse and its gradient equal the one-rank ring bit for bit', async () => {
    const c = makeRingCase({ n: 1, layout: 'contiguous', causal: true, seed: 9 });
    const [ring] = virtualRing(c, native, 0);
    const { b, h, hkv, d } = c.opts;
    await expectNoLeaks(() => {
      tf.tidy(() => {
        const q = tf.tensor4d(c.q, [b, c.s, h, d]);
        const k = tf.tensor4d(c.k, [b, c.s, hkv, d]);
        const v = tf.tensor4d(c.v, [b, c.s, hkv, d]);
        const opts = { causal: true, segmentIds: c.seg!, keyMask: c.valid! };
        const dO = tf.tensor4d(c.dO, [b, c.s, h, d]);
        const dLse = tf.tensor3d(c.dLse, [b, h, c.s]);
        const loss = (qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor) => {
          const { out, lse } = blockwiseAttentionWithLse(qq as tf.Tensor4D, kk as tf.Tensor4D, vv as tf.Tensor4D, opts);
          // dLse only where lse is finite: -Infinity * x is NaN for the empty rows.
          return tf.add(tf.sum(tf.mul(out, dO)), tf.sum(tf.where(tf.isFinite(lse), tf.mul(lse, dLse), tf.zerosLike(lse))));
        };
        const { out, lse } = blockwiseAttentionWithLse(q, k, v, opts);
        expect(bytes(out.dataSync()).equals(bytes(ring!.o))).toBe(true);
        expect(bytes(lse.dataSync()).equals(bytes(ring!.lse))).toBe(true);
        const [dq, dk, dv] = tf.grads(loss)([q, k, v]);
        expect(maxAbsErr(dq!.dataSync(), ring!.dq)).toBe(0);
        expect(maxAbsErr(dk!.dataSync(), ring!.dk)).toBe(0);
        expect(maxAbsErr(dv!.dataSync(), ring!.dv)).toBe(0);
      });
    });
  });

  it('ringAttention (output only) has the same gradient as the packed output-and-lse op', () => {
    tf.tidy(() => {
      const q = tf.tensor4d(randn(2 * 12 * 4 * 8, 4), [2, 12, 4, 8]);
      const k = tf.tensor4d(randn(2 * 12 * 2 * 8, 5), [2, 12, 2, 8]);
      const w = tf.tensor4d(randn(2 * 12 * 4 * 8, 6), [2, 12, 4, 8]);
      for (const kernel of ['native', 'tfjs'] as const) {
        const a = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(ringAttention(x as tf.Tensor4D, y as tf.Tensor4D, y as tf.Tensor4D, { kernel }), w)))([q, k]);
        const b = tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(blockwiseAttentionWithLse(x as tf.Tensor4D, y as tf.Tensor4D, y as tf.Tensor4D, { kernel }).out, w)))([q, k]);
        expect(maxAbsErr(a[0]!.dataSync(), b[0]!.dataSync())).toBe(0);
        expect(maxAbsErr(a[1]!.dataSync(), b[1]!.dataSync())).toBe(0);
      }
    });
  });

  it('matches the model attention() on a causal packed batch, native and tfjs', () => {
    tf.tidy(() => {
      const q = tf.tensor4d(randn(2 * 19 * 4 * 8, 1), [2, 19, 4, 8]);
      const k = tf.tensor4d(randn(2 * 19 * 2 * 8, 2), [2, 19, 2, 8]);
      const v = tf.tensor4d(randn(2 * 19 * 2 * 8, 3), [2, 19, 2, 8]);
      const seg = tf.tensor2d(Array.from({ length: 38 }, (_, i) => Number(i % 19 >= 7)), [2, 19], 'int32');
      for (const kernel of ['native', 'tfjs'] as const) {
        const out = ringAttention(q, k, v, { segmentIds: seg, kernel, blockSize: 4 });
        const want = blockwiseAttentionWithLse(q, k, v, { segmentIds: seg, kernel: 'tfjs', blockSize: 19 }).out;
        expect(maxAbsErr(out.dataSync(), want.dataSync())).toBeLessThan(1e-6);
      }
    });
  });

  it('refuses bad input with one-line errors', () => {
    tf.tidy(() => {
      const q = tf.zeros([1, 4, 2, 8]) as tf.Tensor4D;
      const k = tf.zeros([1, 4, 1, 8]) as tf.Tensor4D;
      expect(() => ringAttention(q, k, tf.zeros([1, 4, 2, 8]) as tf.Tensor4D)).toThrow(/do not agree/);
      expect(() => ringAttention(tf.zeros([1, 4, 2, 8], 'int32') as tf.Tensor4D, k, k)).toThrow(/q is int32; cast it to float32/);
      expect(() => ringAttention(q, k, k, { layout: 'spiral' as RingLayout })).toThrow(/layout 'spiral' is not one of/);
      expect(() => ringAttention(q, k, k, { blockSize: -1 })).toThrow(/blockSize -1/);
      expect(() => ringAttention(q, k, k, { segmentIds: new Int32Array(3) })).toThrow(/segmentIds has shape \[3\], expected \[1, 4\]/);
    });
  });
});
