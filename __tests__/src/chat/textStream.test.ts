import { describe, expect, it } from '@jest/globals';
import { applyRepeatPenalty, InputError, StopStringMatcher } from '../../../src/index.js';

function run(stops: string[], pieces: string[]): { out: string[]; stopped: boolean; all: string } {
  const m = new StopStringMatcher(stops);
  const out = pieces.map((p) => m.push(p));
  out.push(m.flush());
  return { out, stopped: m.stopped, all: out.join('') };
}

describe('stop strings', () => {
  it('cut exactly before a stop string split over several pieces, which is never shown in part', () => {
    const r = run(['###'], ['Hello #', '#', '# world']);
    expect(r.all).toBe('Hello ');
    expect(r.stopped).toBe(true);
    expect(r.out.slice(0, 3)).toEqual(['Hello ', '', '']);
  });

  it('release held text when it turns out not to be a stop string', () => {
    const r = run(['###'], ['a #', '#b', 'c']);
    expect(r.all).toBe('a ##bc');
    expect(r.stopped).toBe(false);
    expect(r.out[0]).toBe('a ');
    expect(run(['END'], ['the E']).all).toBe('the E');
  });

  it('stop at the earliest of several stop strings', () => {
    expect(run(['USER:', 'x'], ['one USER: two x']).all).toBe('one ');
    expect(run(['bc', 'abcd'], ['zabcd']).all).toBe('z');
  });

  it('emit nothing after stopping, and refuse empty stop strings', () => {
    const m = new StopStringMatcher(['.']);
    expect(m.push('a.b')).toBe('a');
    expect(m.push('more')).toBe('');
    expect(m.flush()).toBe('');
    expect(() => new StopStringMatcher([''])).toThrow(InputError);
  });
});

describe('repeat penalty', () => {
  it('divides positive and multiplies negative logits of recent tokens, once each', () => {
    const out = applyRepeatPenalty([2, -2, 1, 3], [0, 1, 1], 2);
    expect(Array.from(out)).toEqual([1, -4, 1, 3]);
    expect(Array.from(applyRepeatPenalty([2, -2], [0], 1))).toEqual([2, -2]);
  });
});
