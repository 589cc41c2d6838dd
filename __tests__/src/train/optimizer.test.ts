import * as tf from '@tensorflow/tfjs';
import { afterEach, describe, expect, it } from '@jest/globals';
import { CheckpointError, ConfigError, InputError } from '../../../ops/errors.js';
import { AdamW, clipByGlobalNorm, globalNorm, paramNorm } from '../../../src/train/optimizer.js';
import { warmupCosine } from '../../../src/train/schedule.js';
import { expectNoLeaks, oneLineError, randomArray } from '../../helpers/tensors.js';

const f32 = Math.fround;
const owned: { dispose(): void }[] = [];
afterEach(() => owned.splice(0).forEach((x) => x.dispose()));

function vars(init: Record<string, number[] | Float32Array>, shapes: Record<string, number[]> = {}): Map<string, tf.Variable> {
  const m = new Map<string, tf.Variable>();
  for (const [k, v] of Object.entries(init)) {
    const x = tf.tidy(() => tf.variable(tf.tensor(Float32Array.from(v), shapes[k] ?? [v.length])));
    owned.push(x);
    m.set(k, x);
  }
  return m;
}

function grads(g: Record<string, number[] | Float32Array>, shapes: Record<string, number[]> = {}): Map<string, tf.Tensor> {
  const m = new Map<string, tf.Tensor>();
  for (const [k, v] of Object.entries(g)) {
    const x = tf.tensor(Float32Array.from(v), shapes[k] ?? [v.length]);
    owned.push(x);
    m.set(k, x);
  }
  return m;
}

function adamw(params: Map<string, tf.Variable>, opts: ConstructorParameters<typeof AdamW>[1] = {}): AdamW {
  const o = new AdamW(params, opts);
  owned.push(o);
  return o;
}

const values = (t: tf.Tensor): Float32Array => (t.dataSync() as Float32Array).slice();
const bits = (a: Float32Array): Uint32Array => new Uint32Array(a.slice().buffer);

describe('AdamW (spec 6.2, 11 item 14)', () => {
  it('one step on p=1, g=1: p - lr*(1/(1+eps) + wd*p)', () => {
    const p = vars({ w: [1] }, { w: [] });
    const opt = adamw(p, { b1: 0.9, b2: 0.95, weightDecay: 1e-4, clip: null });
    const r = opt.apply(grads({ w: [1] }, { w: [] }), 0.01);
    expect(r).toEqual({ gradNorm: 1, clipped: false });
    expect(opt.step).toBe(1);
    expect(values(p.get('w')!)[0]).toBe(f32(1 - 0.01 * (1 / (1 + 1e-8) + 1e-4)));
  });

  it('global-norm clipping: [3,4] with clip 1 -> [0.6, 0.8], and the update uses the clipped gradient', () => {
    const g = grads({ a: [3, 4] });
    expect(globalNorm(g)).toBe(5);
    const c = clipByGlobalNorm(g, 1);
    owned.push(...c.grads.values());
    expect([c.norm, c.clipped]).toEqual([5, true]);
    expect(values(c.grads.get('a')!)).toEqual(Float32Array.from([0.6, 0.8]));

    const opt = adamw(vars({ a: [0, 0] }), { clip: 1 });
    expect(opt.apply(g, 0.01)).toEqual({ gradNorm: 5, clipped: true });
    const s = opt.state();
    expect(s.m.get('a')).toEqual(Float32Array.from([f32(f32(0.6) * f32(0.1)), f32(f32(0.8) * f32(0.1))]));
    expect(s.v.get('a')).toEqual(Float32Array.from([f32(f32(f32(0.6) * f32(0.6)) * f32(0.05)), f32(f32(f32(0.8) * f32(0.8)) * f32(0.05))]));
  });

  it('leaves gradients under the threshold alone and spreads one norm across tensors', () => {
    const g = grads({ b: [4], a: [3] });
    const c = clipByGlobalNorm(g, 10);
    owned.push(...c.grads.values());
    expect([c.norm, c.clipped]).toEqual([5, false]);
    expect(values(c.grads.get('b')!)).toEqual(Float32Array.from([4]));
    const d = clipByGlobalNorm(g, 2.5);
    owned.push(...d.grads.values());
    expect([values(d.grads.get('a')!)[0], values(d.grads.get('b')!)[0]]).toEqual([1.5, 2]);
  });

  it('clip 0 or null turns clipping off', () => {
    for (const clip of [0, null]) {
      const opt = adamw(vars({ a: [0, 0] }), { clip });
      expect(opt.options.clip).toBeNull();
      expect(opt.apply(grads({ a: [3, 4] }), 0.01)).toEqual({ gradNorm: 5, clipped: false });
      expect(opt.state().m.get('a')).toEqual(Float32Array.from([f32(3 * f32(0.1)), f32(4 * f32(0.1))]));
    }
  });

  it('decays every parameter, norm weights and embeddings included', () => {
    const p = vars({ 'transformer.ln_f.kernel': [1, 2], 'transformer.wte.embedding': [-4, 0.5], 'transformer.h.0.attention_norm.kernel': [3] });
    const opt = adamw(p, { weightDecay: 0.1 });
    const zero = grads({ 'transformer.ln_f.kernel': [0, 0], 'transformer.wte.embedding': [0, 0], 'transformer.h.0.attention_norm.kernel': [0] });
    opt.apply(zero, 0.5);
    const dec = (x: number): number => f32(x + f32(f32(x * f32(0.1)) * f32(-0.5)));
    expect(values(p.get('transformer.ln_f.kernel')!)).toEqual(Float32Array.from([dec(1), dec(2)]));
    expect(values(p.get('transformer.wte.embedding')!)).toEqual(Float32Array.from([dec(-4), dec(0.5)]));
    expect(values(p.get('transformer.h.0.attention_norm.kernel')!)).toEqual(Float32Array.from([dec(3)]));
  });

  it('follows a float64 reference over several scheduled, sometimes clipped steps', () => {
    const shapes = { w: [3, 4], b: [4], n: [2] };
    const init = { w: randomArray(12, 1), b: randomArray(4, 2), n: Float32Array.from([1, 1]) };
    const p = vars(init, shapes);
    const o = { b1: 0.9, b2: 0.95, eps: 1e-8, weightDecay: 0.1, clip: 1 };
    const opt = adamw(p, o);
    const lr = warmupCosine({ initLr: 0, peakLr: 1e-2, endLr: 1e-3, warmupSteps: 2, decaySteps: 8 });

    const ref = Object.fromEntries(Object.entries(init).map(([k, v]) => [k, { p: Float64Array.from(v), m: new Float64Array(v.length), v: new Float64Array(v.length) }]));
    for (let t = 1; t <= 8; t++) {
      const scale = t % 2 ? 2 : 0.05;
      const g = Object.fromEntries(Object.entries(init).map(([k, v], i) => [k, randomArray(v.length, 100 * t + i).map((x) => x * scale)]));
      const r = opt.apply(grads(g, shapes), lr(opt.step));

      let sq = 0;
      for (const k in g) for (const x of g[k]!) sq += x * x;
      const norm = Math.sqrt(sq);
      const c = norm < o.clip ? 1 : o.clip / norm;
      expect(r.gradNorm).toBeCloseTo(norm, 5);
      expect(r.clipped).toBe(c !== 1);
      const a = lr(t - 1);
      for (const k in ref) {
        const s = ref[k]!;
        g[k]!.forEach((gi0, i) => {
          const gi = gi0 * c;
          s.m[i] = o.b1 * s.m[i]! + (1 - o.b1) * gi;
          s.v[i] = o.b2 * s.v[i]! + (1 - o.b2) * gi * gi;
          const mh = s.m[i]! / (1 - o.b1 ** t);
          const vh = s.v[i]! / (1 - o.b2 ** t);
          s.p[i] = s.p[i]! - a * (mh / (Math.sqrt(vh) + o.eps) + o.weightDecay * s.p[i]!);
        });
      }
    }
    for (const k in ref) {
      const got = values(p.get(k)!);
      ref[k]!.p.forEach((x, i) => expect(Math.abs(got[i]! - x)).toBeLessThan(2e-6));
    }
    expect(paramNorm(p)).toBeCloseTo(Math.sqrt(Object.values(ref).reduce((s, r) => s + r.p.reduce((a, x) => a + x * x, 0), 0)), 5);
  });

  it('resumes bit-identically from state() in a fresh optimizer, whatever the Map order', () => {
    const shapes = { w: [2, 3], b: [3] };
    const init = { w: randomArray(6, 7), b: randomArray(3, 8) };
    const stepGrads = (t: number): Map<string, tf.Tensor> => grads({ w: randomArray(6, 50 + t).map((x) => x * 3), b: randomArray(3, 90 + t) }, shapes);
    const lr = warmupCosine({ initLr: 0, peakLr: 0.05, endLr: 0.005, warmupSteps: 2, decaySteps: 10 });
    const o = { weightDecay: 0.1, clip: 1 };

    const pa = vars(init, shapes);
    const a = adamw(pa, o);
    for (let t = 0; t < 3; t++) a.apply(stepGrads(t), lr(a.step));
    const saved = { w: values(pa.get('w')!), b: values(pa.get('b')!) };
    const st = a.state();
    for (let t = 3; t < 6; t++) a.apply(stepGrads(t), lr(a.step));

    const pb = vars({ b: saved.b, w: saved.w }, shapes);
    const b = adamw(pb, o);
    b.loadState(st);
    st.m.get('w')!.fill(123); // the loaded state must not alias the caller's arrays
    expect(b.step).toBe(3);
    for (let t = 3; t < 6; t++) b.apply(stepGrads(t), lr(b.step));
    for (const k of ['w', 'b']) expect(bits(values(pb.get(k)!))).toEqual(bits(values(pa.get(k)!)));
    const [sa, sb] = [a.state(), b.state()];
    for (const k of ['w', 'b']) {
      expect(bits(sb.m.get(k)!)).toEqual(bits(sa.m.get(k)!));
      expect(bits(sb.v.get(k)!)).toEqual(bits(sa.v.get(k)!));
    }
  });

  it('leaks no tensors in apply, state, loadState, the norms and dispose', async () => {
    const before = tf.memory().numTensors;
    const p = vars({ w: randomArray(8, 3), b: [1, 2] }, { w: [2, 4] });
    const g = grads({ w: randomArray(8, 4).map((x) => x * 10), b: [0.5, -0.5] }, { w: [2, 4] });
    const opt = new AdamW(p, { clip: 1 });
    await expectNoLeaks(() => {
      opt.apply(g, 0.01);
      opt.apply(g, 0.01);
      opt.loadState(opt.state());
      globalNorm(g);
      paramNorm(p);
    });
    opt.dispose();
    for (const x of owned.splice(0)) x.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('AdamW errors', () => {
  it('rejects gradients that do not match the parameters, changing nothing', () => {
    const p = vars({ a: [1, 2], b: [3] });
    const opt = adamw(p);
    expect(oneLineError(() => opt.apply(grads({ a: [1, 1] }), 0.1), InputError)).toMatch(/no gradient for parameter 'b'/);
    expect(oneLineError(() => opt.apply(grads({ a: [1, 1], b: [1], c: [1] }), 0.1), InputError)).toMatch(/gradient 'c' has no parameter/);
    expect(oneLineError(() => opt.apply(grads({ a: [1, 1, 1], b: [1] }), 0.1), InputError)).toMatch(/gradient 'a' has shape \[3\] but the parameter has \[2\]/);
    expect(oneLineError(() => opt.apply(grads({ a: [NaN, 1], b: [1] }), 0.1), InputError)).toMatch(/gradient norm is NaN at step 0; parameters left unchanged/);
    expect(oneLineError(() => opt.apply(grads({ a: [1, 1], b: [1] }), -1), ConfigError)).toMatch(/learning rate must be a finite number >= 0, got -1/);
    expect(opt.step).toBe(0);
    expect(values(p.get('a')!)).toEqual(Float32Array.from([1, 2]));
  });

  it('rejects bad options', () => {
    const p = vars({ a: [1] });
    expect(oneLineError(() => new AdamW(p, { b2: 1 }), ConfigError)).toBe('--b2 must be a number in [0, 1), got 1');
    expect(oneLineError(() => new AdamW(p, { weightDecay: -1 }), ConfigError)).toBe('--weight-decay must be a finite number >= 0, got -1');
    expect(oneLineError(() => new AdamW(p, { clip: -1 }), ConfigError)).toMatch(/^--clip must be a finite number >= 0 \(0 turns clipping off\), got -1$/);
    expect(oneLineError(() => new AdamW(p, { eps: NaN }), ConfigError)).toMatch(/^AdamW eps /);
    expect(oneLineError(() => new AdamW(new Map()), InputError)).toMatch(/no parameters/);
  });

  it('rejects optimizer state from another model', () => {
    const opt = adamw(vars({ a: [1, 2], b: [3] }));
    const good = opt.state();
    const other = { ...good, m: new Map([...good.m, ['c', new Float32Array(1)]]) };
    expect(oneLineError(() => opt.loadState(other), CheckpointError)).toMatch(/has m for 'c', which is not a parameter/);
    const short = { ...good, v: new Map([['a', new Float32Array(2)]]) };
    expect(oneLineError(() => opt.loadState(short), CheckpointError)).toMatch(/lacks v for parameter 'b'/);
    const wrong = { ...good, m: new Map([['a', new Float32Array(3)], ['b', new Float32Array(1)]]) };
    expect(oneLineError(() => opt.loadState(wrong), CheckpointError)).toMatch(/m for 'a' has 3 values, expected 2 float32/);
    expect(oneLineError(() => opt.loadState({ ...good, step: -1 }), CheckpointError)).toMatch(/step must be a whole number/);
  });
});
