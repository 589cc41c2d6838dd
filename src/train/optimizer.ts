import * as tf from '@tensorflow/tfjs';
import { CheckpointError, ConfigError, InputError } from '../../ops/errors.js';

/**
 * optax.chain(clip_by_global_norm(clip), adamw(lr, b1, b2, eps, weight_decay, mask=all)) (spec 6.2),
 * in float32 with optax's order of operations, so one update follows the reference step by step.
 *
 * Determinism: parameters are visited in sorted name order (as optax flattens a dict), the global
 * norm is summed in float64 in that order, and every other op is elementwise, so equal inputs give
 * bit-identical outputs whatever order the caller's Maps were built in. That is what makes a resume
 * from `state()` continue exactly.
 */

export interface AdamWOptions {
  b1?: number;
  b2?: number;
  eps?: number;
  /** Decoupled weight decay, applied to every parameter (LWM masks nothing). */
  weightDecay?: number;
  /** Global-norm clipping threshold; null or 0 turns clipping off (`--clip 0`). */
  clip?: number | null;
}

/** `train.py` defaults; the `run_train_*.sh` scripts use weightDecay 0.1. */
export const LWM_ADAMW: Readonly<Required<AdamWOptions>> = Object.freeze({ b1: 0.9, b2: 0.95, eps: 1e-8, weightDecay: 1e-4, clip: 1.0 });

export interface AdamWState {
  /** Updates applied so far. */
  step: number;
  m: Map<string, Float32Array>;
  v: Map<string, Float32Array>;
}

export interface ApplyResult {
  /** Global L2 norm of the gradients before clipping (the `gradient_norm` metric). */
  gradNorm: number;
  clipped: boolean;
}

interface Slot {
  p: tf.Variable;
  m: tf.Variable;
  v: tf.Variable;
}

export class AdamW {
  readonly options: Readonly<Required<AdamWOptions>>;
  private readonly names: string[];
  private readonly slots = new Map<string, Slot>();
  private count = 0;
  private disposed = false;

  constructor(params: Map<string, tf.Variable>, opts: AdamWOptions = {}) {
    const o = { ...LWM_ADAMW, ...definedOnly(opts) };
    checkOption('--b1', o.b1, (x) => x >= 0 && x < 1, 'a number in [0, 1)');
    checkOption('--b2', o.b2, (x) => x >= 0 && x < 1, 'a number in [0, 1)');
    checkOption('AdamW eps', o.eps, (x) => x >= 0, 'a finite number >= 0');
    checkOption('--weight-decay', o.weightDecay, (x) => x >= 0, 'a finite number >= 0');
    if (o.clip !== null) checkOption('--clip', o.clip, (x) => x >= 0, 'a finite number >= 0 (0 turns clipping off)');
    if (o.clip === 0) o.clip = null;
    if (params.size === 0) throw new InputError('AdamW was given no parameters to optimize');
    this.options = Object.freeze(o);
    this.names = sortedNames(params);
    for (const name of this.names) {
      const p = params.get(name)!;
      if (p.dtype !== 'float32') throw new InputError(`parameter '${name}' is ${p.dtype}; AdamW trains float32 parameters only`);
      const zeros = (): tf.Variable => tf.tidy(() => tf.variable(tf.zerosLike(p), false));
      this.slots.set(name, { p, m: zeros(), v: zeros() });
    }
  }

  get step(): number {
    return this.count;
  }

  /**
   * One update with learning rate `lr` (optax evaluates the schedule at the count before the
   * update: pass `schedule(opt.step)`). `grads` must hold one float32 gradient per parameter name;
   * they stay the caller's. Throws InputError, changing nothing, when the gradient norm is not
   * finite, where optax would silently write NaNs into every parameter.
   */
  apply(grads: Map<string, tf.Tensor>, lr: number): ApplyResult {
    this.checkLive();
    if (typeof lr !== 'number' || !Number.isFinite(lr) || lr < 0) {
      throw new ConfigError(`learning rate must be a finite number >= 0, got ${String(lr)}; check --lr and the schedule`);
    }
    this.checkGrads(grads);
    const { b1, b2, eps, weightDecay, clip } = this.options;
    const gs = this.names.map((n) => grads.get(n)!);
    const gradNorm = normOf(gs);
    if (!Number.isFinite(gradNorm)) {
      throw new InputError(`gradient norm is ${gradNorm} at step ${this.count}; parameters left unchanged. Training diverged: lower --lr or check the data`);
    }
    // optax: select(norm < clip, g, g / norm * clip), so a norm equal to clip still goes through the division.
    const clipped = clip !== null && !(gradNorm < clip);
    const t = this.count + 1;
    // optax computes the bias corrections in float32 from a float32 power; float64 then rounding differs by at most 1 ulp.
    const bc1 = 1 - b1 ** t;
    const bc2 = 1 - b2 ** t;
    this.names.forEach((name, i) => {
      const { p, m, v } = this.slots.get(name)!;
      tf.tidy(() => {
        let g = gs[i]!;
        if (clipped) g = tf.mul(tf.div(g, gradNorm), clip);
        const m1 = tf.add(tf.mul(g, 1 - b1), tf.mul(m, b1));
        const v1 = tf.add(tf.mul(tf.square(g), 1 - b2), tf.mul(v, b2));
        let u = tf.div(tf.div(m1, bc1), tf.add(tf.sqrt(tf.div(v1, bc2)), eps));
        if (weightDecay !== 0) u = tf.add(u, tf.mul(p, weightDecay));
        const p1 = tf.add(p, tf.mul(u, -lr));
        m.assign(m1);
        v.assign(v1);
        p.assign(p1);
      });
    });
    this.count = t;
    return { gradNorm, clipped };
  }

  /** Copies of the moments, by parameter name, for checkpoints; `loadState` restores them exactly. */
  state(): AdamWState {
    this.checkLive();
    const m = new Map<string, Float32Array>();
    const v = new Map<string, Float32Array>();
    for (const name of this.names) {
      const s = this.slots.get(name)!;
      // The cpu backend hands out its own buffer; copy so neither side can change the other.
      m.set(name, (s.m.dataSync() as Float32Array).slice());
      v.set(name, (s.v.dataSync() as Float32Array).slice());
    }
    return { step: this.count, m, v };
  }

  loadState(s: AdamWState): void {
    this.checkLive();
    if (!Number.isSafeInteger(s.step) || s.step < 0) throw new CheckpointError(`optimizer state step must be a whole number >= 0, got ${String(s.step)}`);
    for (const [kind, moments] of [['m', s.m], ['v', s.v]] as const) {
      for (const name of moments.keys()) {
        if (!this.slots.has(name)) throw new CheckpointError(`optimizer state has ${kind} for '${name}', which is not a parameter of this model; the checkpoint belongs to another model`);
      }
      for (const name of this.names) {
        const a = moments.get(name);
        const want = this.slots.get(name)!.p.size;
        if (!a) throw new CheckpointError(`optimizer state lacks ${kind} for parameter '${name}'; the checkpoint belongs to another model or is incomplete`);
        if (!(a instanceof Float32Array) || a.length !== want) {
          throw new CheckpointError(`optimizer state ${kind} for '${name}' has ${a.length} values, expected ${want} float32; the checkpoint belongs to another model`);
        }
      }
    }
    for (const name of this.names) {
      const { p, m, v } = this.slots.get(name)!;
      tf.tidy(() => {
        m.assign(tf.tensor(s.m.get(name)!.slice(), p.shape, 'float32'));
        v.assign(tf.tensor(s.v.get(name)!.slice(), p.shape, 'float32'));
      });
    }
    this.count = s.step;
  }

  /** Frees the moments; the parameters stay the caller's. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const { m, v } of this.slots.values()) {
      m.dispose();
      v.dispose();
    }
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('AdamW used after dispose()');
  }

  private checkGrads(grads: Map<string, tf.Tensor>): void {
    for (const name of grads.keys()) {
      if (!this.slots.has(name)) throw new InputError(`gradient '${name}' has no parameter of that name; pass gradients keyed like the parameters`);
    }
    for (const name of this.names) {
      const g = grads.get(name);
      const p = this.slots.get(name)!.p;
      if (!g) throw new InputError(`no gradient for parameter '${name}'; pass one gradient per parameter`);
      if (g.dtype !== 'float32') throw new InputError(`gradient '${name}' is ${g.dtype}; gradients must be float32`);
      if (!tf.util.arraysEqual(g.shape, p.shape)) throw new InputError(`gradient '${name}' has shape [${g.shape}] but the parameter has [${p.shape}]`);
    }
  }
}

/** Global L2 norm over tensors (Map entries in sorted name order), as optax.global_norm. */
export function globalNorm(tensors: Map<string, tf.Tensor> | readonly tf.Tensor[]): number {
  return normOf(tensors instanceof Map ? sortedNames(tensors).map((n) => tensors.get(n)!) : tensors);
}

/** Global L2 norm of the parameters (the `param_norm` metric). */
export function paramNorm(params: Map<string, tf.Tensor>): number {
  return globalNorm(params);
}

/**
 * optax.clip_by_global_norm on its own. Returns new tensors the caller owns (unclipped ones are
 * clones), the pre-clip norm and whether clipping happened.
 */
export function clipByGlobalNorm(grads: Map<string, tf.Tensor>, clip: number): { grads: Map<string, tf.Tensor>; norm: number; clipped: boolean } {
  checkOption('--clip', clip, (x) => x > 0, 'a finite number > 0');
  const norm = globalNorm(grads);
  const clipped = !(norm < clip);
  const out = new Map<string, tf.Tensor>();
  for (const [name, g] of grads) out.set(name, tf.tidy(() => (clipped ? tf.mul(tf.div(g, norm), clip) : tf.clone(g))));
  return { grads: out, norm, clipped };
}

/**
 * Each tensor's sum of squares comes back as float32 (the cpu backend accumulates it in float64);
 * the partial sums are added in float64 in the given order. One scalar per tensor is alive at a
 * time besides the result, so the squares of a large model never coexist.
 */
function normOf(ts: readonly tf.Tensor[]): number {
  if (ts.length === 0) return 0;
  const sums = tf.tidy(() => tf.stack(ts.map((t) => tf.tidy(() => tf.sum(tf.square(t))))));
  const parts = sums.dataSync();
  sums.dispose();
  let total = 0;
  for (const x of parts) total += x;
  return Math.sqrt(total);
}

function sortedNames(m: Map<string, unknown>): string[] {
  // Code-unit order, like Python's sorted() on the flattened param dict.
  return [...m.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function checkOption(name: string, x: unknown, ok: (x: number) => boolean, what: string): void {
  if (typeof x !== 'number' || !Number.isFinite(x) || !ok(x)) throw new ConfigError(`${name} must be ${what}, got ${String(x)}`);
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
