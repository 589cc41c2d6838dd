import { describe, expect, it } from '@jest/globals';
import { ConfigError, InputError } from '../../../ops/errors.js';
import { constant, LWM_SCHEDULE, LWM_SCRIPT_SCHEDULE, makeSchedule, warmupCosine, warmupLinear } from '../../../src/train/schedule.js';
import { oneLineError } from '../../helpers/tensors.js';

const close = (a: number, b: number): void => expect(Math.abs(a - b)).toBeLessThanOrEqual(1e-12 * Math.max(1, Math.abs(b)));

describe('warmupCosine (spec 11 item 14)', () => {
  it('LWM defaults: 0 -> 0.01 over 2000 steps, cosine to 0.001 at 500000', () => {
    const lr = makeSchedule({ kind: 'cosine' });
    expect(lr(0)).toBe(0);
    close(lr(1000), 0.005);
    close(lr(2000), 0.01);
    close(lr(251000), 0.0055);
    close(lr(500000), 0.001);
    close(lr(10_000_000), 0.001);
    expect(lr.spec).toEqual(LWM_SCHEDULE);
  });

  it('script settings: linear warmup over 5 steps, then constant 8e-5', () => {
    const lr = warmupCosine(LWM_SCRIPT_SCHEDULE);
    close(lr(1), 1.6e-5);
    close(lr(4), 6.4e-5);
    for (const s of [5, 6, 100, 200, 1000]) close(lr(s), 8e-5);
  });

  it('is monotone inside the decay span and matches the formula', () => {
    const o = { initLr: 1e-3, peakLr: 1, endLr: 0.1, warmupSteps: 10, decaySteps: 110 };
    const lr = warmupCosine(o);
    close(lr(5), 1e-3 + (1 - 1e-3) * 0.5);
    close(lr(35), 0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI / 4)));
    for (let s = 10; s < 110; s++) expect(lr(s + 1)).toBeLessThan(lr(s));
  });

  it('edge cases: no warmup starts at the peak, warmup == decay drops to the end, negative steps clamp', () => {
    close(warmupCosine({ initLr: 0, peakLr: 1, endLr: 0.5, warmupSteps: 0, decaySteps: 10 })(0), 1);
    const flat = warmupCosine({ initLr: 0, peakLr: 1, endLr: 0.5, warmupSteps: 4, decaySteps: 4 });
    close(flat(2), 0.5);
    close(flat(4), 0.5);
    close(flat(99), 0.5);
    expect(flat(-3)).toBe(0);
    expect(oneLineError(() => flat(NaN), InputError)).toMatch(/step/);
  });
});

describe('other schedules', () => {
  it('warmupLinear decays linearly from peak to end', () => {
    const lr = warmupLinear({ initLr: 0, peakLr: 1, endLr: 0.2, warmupSteps: 10, decaySteps: 50 });
    close(lr(5), 0.5);
    close(lr(10), 1);
    close(lr(30), 0.6);
    close(lr(50), 0.2);
    close(lr(80), 0.2);
    expect(makeSchedule({ kind: 'linear', peakLr: 1, endLr: 0.2, warmupSteps: 10, decaySteps: 50 })(30)).toBe(lr(30));
  });

  it('constant', () => {
    const lr = constant(3e-4);
    expect([lr(0), lr(1), lr(1e9)]).toEqual([3e-4, 3e-4, 3e-4]);
    expect(makeSchedule({ kind: 'constant', peakLr: 3e-4 })(7)).toBe(3e-4);
  });

  it('spec round-trips through JSON', () => {
    const a = makeSchedule({ kind: 'linear', peakLr: 2e-4, warmupSteps: 3, decaySteps: 9, endLr: 0 });
    const b = makeSchedule(JSON.parse(JSON.stringify(a.spec)));
    for (let s = 0; s < 12; s++) expect(b(s)).toBe(a(s));
  });

  it('absent or undefined options take LWM defaults', () => {
    expect(makeSchedule({ kind: 'cosine', peakLr: undefined, endLr: 0.002 }).spec).toEqual({ ...LWM_SCHEDULE, endLr: 0.002 });
  });
});

describe('bad values are one-line ConfigErrors naming the flag', () => {
  const cases: [string, () => unknown, RegExp][] = [
    ['negative lr', () => makeSchedule({ kind: 'cosine', peakLr: -1 }), /^--lr must be a finite number >= 0, got -1$/],
    ['NaN end lr', () => makeSchedule({ kind: 'linear', endLr: NaN }), /^--end-lr .*got NaN/],
    ['infinite init lr', () => warmupCosine({ ...LWM_SCHEDULE, initLr: Infinity }), /^--init-lr /],
    ['fractional warmup', () => makeSchedule({ kind: 'cosine', warmupSteps: 2.5 }), /^--warmup-steps must be a whole number/],
    ['negative decay', () => makeSchedule({ kind: 'cosine', warmupSteps: 0, decaySteps: -1 }), /^--decay-steps /],
    ['warmup > decay', () => makeSchedule({ kind: 'cosine', warmupSteps: 300, decaySteps: 200 }), /^--warmup-steps 300 exceeds --decay-steps 200/],
    ['constant with a bad lr', () => constant(-0.1), /^--lr /],
    ['unknown kind', () => makeSchedule({ kind: 'step' } as never), /kind "step" is not one of cosine, linear, constant/],
    ['typo', () => makeSchedule({ kind: 'cosine', peak_lr: 1 } as never), /unknown schedule option 'peak_lr'/],
  ];
  it.each(cases)('%s', (_name, fn, re) => {
    expect(oneLineError(fn, ConfigError)).toMatch(re);
  });
});
