import { ConfigError, InputError } from '../../ops/errors.js';

/**
 * Learning-rate schedules (spec 6.2): pure functions of the optimizer step, computed in float64.
 * Each carries the resolved JSON spec it was built from, so logs and checkpoints can record it and
 * `makeSchedule(s.spec)` rebuilds the same function.
 *
 * optax evaluates the schedule at the update count *before* the update, so the first update uses
 * lr(0) (0 with LWM's defaults): pass `schedule(optimizer.step)` to `AdamW.apply`.
 */

export type ScheduleKind = 'cosine' | 'linear' | 'constant';

export interface WarmupDecayOptions {
  initLr: number;
  peakLr: number;
  endLr: number;
  warmupSteps: number;
  /** The step at which decay ends (counted from 0, warmup included), as in optax. */
  decaySteps: number;
}

/** A JSON schedule description; absent fields take LWM's defaults (`LWM_SCHEDULE`). */
export interface ScheduleSpec extends Partial<WarmupDecayOptions> {
  kind: ScheduleKind;
}

export type ResolvedScheduleSpec = { kind: ScheduleKind } & WarmupDecayOptions;

export type Schedule = ((step: number) => number) & { readonly spec: ResolvedScheduleSpec };

/** `train.py` defaults (`OptimizerFactory` adamw). */
export const LWM_SCHEDULE: Readonly<ResolvedScheduleSpec> = Object.freeze({
  kind: 'cosine',
  initLr: 0,
  peakLr: 0.01,
  endLr: 0.001,
  warmupSteps: 2000,
  decaySteps: 500000,
});

/** `scripts/run_train_*.sh`: lr = end_lr, so linear warmup then constant. */
export const LWM_SCRIPT_SCHEDULE: Readonly<ResolvedScheduleSpec> = Object.freeze({
  kind: 'cosine',
  initLr: 0,
  peakLr: 8e-5,
  endLr: 8e-5,
  warmupSteps: 5,
  decaySteps: 200,
});

const FLAGS: Record<keyof WarmupDecayOptions, string> = {
  initLr: '--init-lr',
  peakLr: '--lr',
  endLr: '--end-lr',
  warmupSteps: '--warmup-steps',
  decaySteps: '--decay-steps',
};

/**
 * optax.warmup_cosine_decay_schedule. Edge cases optax rejects or leaves implicit:
 * warmupSteps 0 starts at peakLr; warmupSteps == decaySteps (no decay span) drops to endLr at the
 * end of warmup, the value the cosine reaches at decaySteps; past decaySteps the rate stays endLr.
 */
export function warmupCosine(o: WarmupDecayOptions): Schedule {
  return warmupThen('cosine', o, (u) => 0.5 * (1 + Math.cos(Math.PI * u)));
}

/** Linear warmup, then linear decay from peakLr to endLr until decaySteps; same edge cases as warmupCosine. */
export function warmupLinear(o: WarmupDecayOptions): Schedule {
  return warmupThen('linear', o, (u) => 1 - u);
}

export function constant(lr: number): Schedule {
  checkLr('peakLr', lr);
  const spec: ResolvedScheduleSpec = { kind: 'constant', initLr: lr, peakLr: lr, endLr: lr, warmupSteps: 0, decaySteps: 0 };
  return Object.assign((step: number) => (checkStep(step), lr), { spec });
}

/**
 * Builds a schedule from JSON. Unknown keys are rejected (they are usually typos); for 'constant'
 * only peakLr (--lr) is used.
 */
export function makeSchedule(spec: ScheduleSpec): Schedule {
  if (spec === null || typeof spec !== 'object') throw new ConfigError(`a schedule spec must be an object like {"kind":"cosine","peakLr":0.01}, got ${JSON.stringify(spec)}`);
  for (const k of Object.keys(spec)) {
    if (k !== 'kind' && !(k in FLAGS)) throw new ConfigError(`unknown schedule option '${k}'; use kind, ${Object.keys(FLAGS).join(', ')}`);
  }
  // undefined means "not given" (an unset CLI flag), not "no value".
  const given = Object.fromEntries(Object.entries(spec).filter(([, v]) => v !== undefined));
  const o: WarmupDecayOptions = { ...LWM_SCHEDULE, ...given };
  switch (spec.kind) {
    case 'cosine':
      return warmupCosine(o);
    case 'linear':
      return warmupLinear(o);
    case 'constant':
      return constant(o.peakLr);
    default:
      throw new ConfigError(`schedule kind ${JSON.stringify((spec as { kind: unknown }).kind)} is not one of cosine, linear, constant`);
  }
}

function warmupThen(kind: 'cosine' | 'linear', o: WarmupDecayOptions, shape: (u: number) => number): Schedule {
  const { initLr, peakLr, endLr, warmupSteps, decaySteps } = o;
  checkLr('initLr', initLr);
  checkLr('peakLr', peakLr);
  checkLr('endLr', endLr);
  checkSteps('warmupSteps', warmupSteps);
  checkSteps('decaySteps', decaySteps);
  if (warmupSteps > decaySteps) {
    throw new ConfigError(`--warmup-steps ${warmupSteps} exceeds --decay-steps ${decaySteps}; decay steps count from step 0, warmup included, so raise --decay-steps`);
  }
  const T = decaySteps - warmupSteps;
  const spec: ResolvedScheduleSpec = { kind, initLr, peakLr, endLr, warmupSteps, decaySteps };
  const lr = (step: number): number => {
    checkStep(step);
    const s = Math.max(step, 0);
    if (s < warmupSteps) return initLr + ((peakLr - initLr) * s) / warmupSteps;
    if (T === 0) return endLr;
    const u = Math.min(s - warmupSteps, T);
    return endLr + (peakLr - endLr) * shape(u / T);
  };
  return Object.assign(lr, { spec });
}

function checkLr(name: keyof WarmupDecayOptions, v: unknown): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new ConfigError(`${FLAGS[name]} must be a finite number >= 0, got ${String(v)}`);
  }
}

function checkSteps(name: keyof WarmupDecayOptions, v: unknown): void {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new ConfigError(`${FLAGS[name]} must be a whole number >= 0, got ${String(v)}`);
  }
}

// Negative steps clamp to 0 as optax's linear schedule does; NaN would silently poison training.
function checkStep(step: number): void {
  if (typeof step !== 'number' || Number.isNaN(step)) throw new InputError(`schedule step must be a number, got ${String(step)}`);
}
