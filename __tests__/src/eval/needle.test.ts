import { describe, expect, it } from '@jest/globals';
import { InputError } from '../../../ops/errors.js';
import { mulberry32 } from '../../../data/batches.js';
import { haystackTokens, loadHaystack } from '../../../data/haystack.js';
import { defaultTokenizer } from '../../../data/tokenizer.js';
import {
  LWM_NEEDLE_CONTEXTS,
  LWM_NEEDLE_DEPTHS,
  MULTI_NEEDLE_TEMPLATE,
  NEEDLE_CITIES,
  NEEDLE_TEMPLATE,
  linspaceInts,
  needleCase,
  needleQuestion,
  needleText,
  scoreNeedle,
} from '../../../src/eval/needle.js';
import { passkeyCase } from '../../../src/eval/passkeyEval.js';

const tok = defaultTokenizer();
const hay = haystackTokens(loadHaystack(), tok, 4000);
const HEAD = tok.encode('You are a helpful assistant. USER:').length + 1;

/** numpy.round(numpy.linspace(a, b, n)), written out independently of linspaceInts. */
function numpyGrid(a: number, b: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => {
    const x = a + ((b - a) * i) / (n - 1);
    const f = Math.floor(x);
    return x - f === 0.5 ? (f % 2 === 0 ? f : f + 1) : Math.round(x);
  });
}

describe("LWM's needle protocol (spec 7.2, 7.3, checklist item 20)", () => {
  it('grid: round(linspace(1000, 10000, 20)) and round(linspace(0, 100, 20)), halves to even as numpy', () => {
    expect(LWM_NEEDLE_CONTEXTS).toEqual(numpyGrid(1000, 10000, 20));
    expect(LWM_NEEDLE_CONTEXTS.slice(0, 3)).toEqual([1000, 1474, 1947]);
    expect(LWM_NEEDLE_CONTEXTS[19]).toBe(10000);
    expect(LWM_NEEDLE_DEPTHS).toEqual(numpyGrid(0, 100, 20));
    expect(LWM_NEEDLE_DEPTHS.slice(0, 4)).toEqual([0, 5, 11, 16]);
    // numpy: round(linspace(0, 100, 9)) = [0, 12, 25, 38, 50, 62, 75, 88, 100].
    expect(linspaceInts(0, 100, 9)).toEqual([0, 12, 25, 38, 50, 62, 75, 88, 100]);
    expect(linspaceInts(500, 900, 1)).toEqual([500]);
    expect(() => linspaceInts(0, 1, 0)).toThrow(InputError);
  });

  it("needle, question and templates are LWM's strings; the city list is its 100 entries", () => {
    expect(needleText('Paris', '1234567')).toBe('\nThe special magic Paris number is: 1234567\n');
    expect(needleQuestion(['Paris'], false)).toBe('What is the special magic Paris number?');
    expect(needleQuestion(['Paris'], true)).toBe('What is the special magic number for Paris?');
    expect(needleQuestion(['Paris', 'Lima'], true)).toBe('What are the special magic numbers for Paris, and Lima?');
    expect(needleQuestion(['Paris', 'Lima', 'Oslo'], true)).toBe('What are the special magic numbers for Paris, Lima, and Oslo?');
    expect(NEEDLE_TEMPLATE).toBe(
      "You are a helpful assistant. USER: {context} {question} Don't give information outside the document or repeat your findings. Keep your response short and direct. ASSISTANT: ",
    );
    expect(MULTI_NEEDLE_TEMPLATE).toBe("You are a helpful assistant. USER: {context} {question} Don't give information outside the document. ASSISTANT: ");
    expect(NEEDLE_CITIES.length).toBe(100);
    expect(NEEDLE_CITIES.filter((c) => c === 'Chicago').length).toBe(4);
    expect(new Set(NEEDLE_CITIES).size).toBe(69);
  });

  it('places the needle right after a sentence end, at the requested token depth, in a prompt that fits', () => {
    const endsWithPeriod = (id: number) => tok.idToPiece(id).endsWith('.');
    for (const context of [1000, 2000, 4000]) {
      for (const depth of [0, 11, 25, 50, 74, 95, 100]) {
        const c = needleCase({ haystackTokens: hay, tok, contextLength: context, depthPercent: depth, rng: mulberry32(context + depth) });
        const n = c.needles[0]!;
        const ids = c.promptTokens;
        expect(ids.length).toBeLessThanOrEqual(context);
        expect(ids.length).toBeGreaterThanOrEqual(context - 1);
        expect(ids[0]).toBe(tok.bosId);
        expect(tok.decode(ids.slice(n.tokenIndex)).startsWith(`\nThe special magic ${n.city} number is: ${n.number}\n`)).toBe(true);
        expect(n.number).toMatch(/^[1-9]\d{6}$/);
        expect(c.answers).toEqual([n.number]);
        expect(c.question).toBe(`What is the special magic ${n.city} number?`);
        // The prompt is the template filled with the haystack-and-needle text, as LWM formats it.
        const tail = tok.encode(`${c.question} Don't give information outside the document or repeat your findings. Keep your response short and direct. ASSISTANT: `).length;
        const context_ = tok.decode(ids.slice(HEAD, ids.length - tail));
        expect(c.prompt).toBe(NEEDLE_TEMPLATE.replace('{context}', context_).replace('{question}', c.question));
        expect(tok.encode(c.prompt, { bos: true }).length).toBe(ids.length);

        const needleLen = ids.length - HEAD - tail - c.haystackLength;
        const before = n.tokenIndex - HEAD;
        expect(n.tokenDepth).toBeCloseTo(before / c.haystackLength, 12);
        if (depth === 100) {
          expect(n.tokenDepth).toBe(1);
          expect(n.tokenIndex + needleLen).toBe(ids.length - tail);
        } else if (before === 0) {
          // Only when no '.' comes before the requested point (or it is 0).
          const want = Math.floor(c.haystackLength * (depth / 100));
          expect(ids.slice(HEAD, HEAD + want).some(endsWithPeriod)).toBe(false);
        } else {
          expect(endsWithPeriod(ids[n.tokenIndex - 1]!)).toBe(true);
          // Moved back to the nearest sentence end: no '.' between it and the requested point.
          const want = Math.floor(c.haystackLength * (depth / 100));
          const skipped = ids.slice(n.tokenIndex + needleLen, n.tokenIndex + needleLen + (want - before));
          expect(skipped.some(endsWithPeriod)).toBe(false);
          expect(depth / 100 - n.tokenDepth).toBeGreaterThanOrEqual(0);
          expect(depth / 100 - n.tokenDepth).toBeLessThan(200 / c.haystackLength);
        }
      }
    }
  });

  it('depth 0 keeps the template space: "USER: \\nThe special magic ..."', () => {
    const c = needleCase({ haystackTokens: hay, tok, contextLength: 1000, depthPercent: 0, rng: mulberry32(1) });
    expect(c.prompt.startsWith(`You are a helpful assistant. USER: \nThe special magic ${c.needles[0]!.city}`)).toBe(true);
    expect(c.promptTokens.length).toBe(1000);
  });

  it('multi-needle: distinct cities at their depths, the asked ones in the question, the multi template', () => {
    const c = needleCase({ haystackTokens: hay, tok, contextLength: 2000, depthPercent: [10, 50, 80, 30], rng: mulberry32(3), retrieve: 2 });
    expect(c.needles.map((n) => n.depthPercent)).toEqual([10, 50, 80, 30]);
    expect(new Set(c.needles.map((n) => n.city)).size).toBe(4);
    expect(c.answers.length).toBe(2);
    const asked = c.answers.map((a) => c.needles.find((n) => n.number === a)!.city);
    expect(c.question).toBe(`What are the special magic numbers for ${asked[0]}, and ${asked[1]}?`);
    expect(c.prompt.endsWith(`${c.question} Don't give information outside the document. ASSISTANT: `)).toBe(true);
    for (const n of c.needles) {
      expect(c.prompt).toContain(needleText(n.city, n.number));
      expect(Math.abs(n.tokenDepth - n.depthPercent / 100)).toBeLessThan(0.1);
    }
    expect(c.promptTokens.length).toBeLessThanOrEqual(2000);
    const one = needleCase({ haystackTokens: hay, tok, contextLength: 1000, depthPercent: [20, 60], rng: mulberry32(4), retrieve: 1 });
    expect(one.question).toMatch(/^What is the special magic number for [A-Za-z ]+\?$/);
  });

  it('is deterministic for an rng seed', () => {
    const a = needleCase({ haystackTokens: hay, tok, contextLength: 1000, depthPercent: 40, rng: mulberry32(9) });
    expect(needleCase({ haystackTokens: hay, tok, contextLength: 1000, depthPercent: 40, rng: mulberry32(9) })).toEqual(a);
  });

  it('scores by substring: words around the number are fine, a wrong digit is not', () => {
    expect(scoreNeedle('The special magic Paris number is: 1234567.', '1234567')).toBe(true);
    expect(scoreNeedle('1234567', '1234567')).toBe(true);
    expect(scoreNeedle('1234568', '1234567')).toBe(false);
    expect(scoreNeedle('123 4567', '1234567')).toBe(false);
    expect(scoreNeedle('They are 1111111 and 2222222.', ['2222222', '3333333', '1111111'])).toEqual([true, false, true]);
    expect(() => scoreNeedle('x', 'abc')).toThrow(InputError);
  });

  it('bad inputs give one-line errors', () => {
    const oneLine = (f: () => unknown, re: RegExp) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(InputError);
        expect((e as Error).message).toMatch(re);
        expect((e as Error).message).not.toContain('\n');
        return;
      }
      throw new Error('expected an error');
    };
    const base = { haystackTokens: hay, tok, rng: mulberry32(1) };
    oneLine(() => needleCase({ ...base, contextLength: 40, depthPercent: 50 }), /cannot hold the needle prompt.*--context \d+ or more/);
    oneLine(() => needleCase({ ...base, haystackTokens: hay.slice(0, 100), contextLength: 1000, depthPercent: 50 }), /haystack has 100 tokens/);
    oneLine(() => needleCase({ ...base, contextLength: 1000, depthPercent: 120 }), /percentages in \[0, 100\]/);
    oneLine(() => needleCase({ ...base, contextLength: 1000, depthPercent: [10, 20], retrieve: 3 }), /--retrieve/);
    oneLine(() => needleCase({ ...base, contextLength: 1000, depthPercent: 10, needles: 2 }), /2 needles need 2 depths/);
    oneLine(() => passkeyCase({ tok, contextLength: 20, depthPercent: 50, rng: mulberry32(1) }), /cannot hold the passkey prompt.*--context/);
  });
});

describe('passkey cases', () => {
  it('fit the context, put the passkey at the depth, and end with the question', () => {
    for (const context of [200, 1000]) {
      for (const depth of [0, 50, 100]) {
        const c = passkeyCase({ tok, contextLength: context, depthPercent: depth, rng: mulberry32(context + depth) });
        expect(c.promptTokens.length).toBeLessThanOrEqual(context);
        expect(c.promptTokens.length).toBeGreaterThan(context - 10);
        expect(c.promptTokens[0]).toBe(tok.bosId);
        expect(c.passkey).toMatch(/^[1-9]\d{4}$/);
        expect(c.prompt).toContain(`The pass key is ${c.passkey}. Remember it.`);
        expect(c.prompt.endsWith('What is the pass key? The pass key is')).toBe(true);
        expect(Math.abs(c.depth - depth / 100)).toBeLessThan(0.05);
      }
    }
  });
});
