import { describe, expect, it } from '@jest/globals';
import { chunkDocument, sentenceSpans } from '../../data/chunking.js';
import { defaultTokenizer } from '../../data/tokenizer.js';
import { syntheticDocs } from '../helpers/qaServer.js';

const tok = defaultTokenizer();
const count = (s: string) => tok.encode(s).length;

describe('sentence spans', () => {
  it('end after . ! ? (with closing quotes) before whitespace, and at blank lines', () => {
    const t = 'He said "Stop!" and left. Did he? Yes.\n\nA heading\n\nMr. Smith e.g. 3.5 apples… done';
    const s = sentenceSpans(t).map(([a, b]) => t.slice(a, b));
    expect(s).toEqual(['He said "Stop!"', 'and left.', 'Did he?', 'Yes.', 'A heading', 'Mr.', 'Smith e.g.', '3.5 apples…', 'done']);
  });

  it('cover every non-space character once, in order', () => {
    const t = syntheticDocs(1, 60, 3)[0]!;
    const spans = sentenceSpans(t);
    let prev = 0;
    for (const [a, b] of spans) {
      expect(t.slice(prev, a).trim()).toBe('');
      expect(b).toBeGreaterThan(a);
      prev = b;
    }
    expect(t.slice(prev).trim()).toBe('');
  });
});

describe('chunkDocument', () => {
  const text = syntheticDocs(1, 400, 7)[0]!;
  const sentences = sentenceSpans(text);
  const starts = new Set(sentences.map(([a]) => a));
  const ends = new Set(sentences.map(([, b]) => b));

  for (const size of [40, 100, 300]) {
    it(`gives chunks of at most ${size} tokens, of whole sentences, each as full as the next sentence allows`, () => {
      const chunks = chunkDocument(text, tok, size);
      expect(chunks.length).toBeGreaterThan(2);
      chunks.forEach((c, i) => {
        expect(c.index).toBe(i);
        expect(c.text).toBe(text.slice(c.start, c.end));
        expect(c.tokens).toBe(count(c.text));
        expect(c.tokens).toBeLessThanOrEqual(size);
        // Never split a sentence: chunks start and end at sentence boundaries.
        expect(starts.has(c.start)).toBe(true);
        expect(ends.has(c.end)).toBe(true);
        if (i + 1 < chunks.length) {
          // Near the target: adding the next chunk's first sentence would go over it.
          const next = sentences.find(([a]) => a === chunks[i + 1]!.start)!;
          expect(count(text.slice(c.start, next[1]))).toBeGreaterThan(size);
          expect(chunks[i + 1]!.start).toBeGreaterThan(c.end);
          expect(text.slice(c.end, chunks[i + 1]!.start).trim()).toBe('');
        }
      });
      // Nothing lost: the chunks cover the document's text.
      expect(chunks.map((c) => c.text).join(' ').replace(/\s+/g, ' ')).toBe(text.trim().replace(/\s+/g, ' '));
    });
  }

  it('splits a sentence only when it alone exceeds the size, at spaces', () => {
    const long = Array.from({ length: 120 }, (_, i) => `word${i}`).join(' ') + '.';
    const t = `Short one. ${long} Another short one.`;
    const chunks = chunkDocument(t, tok, 50);
    expect(chunks[0]!.text).toBe('Short one.');
    expect(chunks.at(-1)!.text.endsWith('Another short one.')).toBe(true);
    const middle = chunks.slice(1, -1);
    expect(middle.length).toBeGreaterThan(1);
    for (const c of chunks) expect(c.tokens).toBeLessThanOrEqual(50);
    for (const c of middle) expect(/^word\d+/.test(c.text)).toBe(true);
    expect(chunks.map((c) => c.text).join(' ')).toBe(t);
  });

  it('cuts a single over-long word by characters', () => {
    const chunks = chunkDocument('x'.repeat(2000), tok, 16);
    expect(chunks.map((c) => c.text).join('')).toBe('x'.repeat(2000));
    for (const c of chunks) expect(c.tokens).toBeLessThanOrEqual(16);
  });

  it('refuses a size too small to hold a sentence', () => {
    expect(() => chunkDocument(text, tok, 4)).toThrow(/--chunk-tokens must be an integer >= 8/);
  });
});
