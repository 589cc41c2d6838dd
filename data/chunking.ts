/**
 * Long documents cut into chunks of about N tokens at sentence boundaries (the first step of LWM's
 * model-generated question-answer data: one question-answer pair is written per chunk).
 *
 * A chunk is a run of whole sentences whose text encodes to at most `chunkTokens` tokens with the
 * model's tokenizer; a sentence is split (at spaces, else anywhere) only when it alone exceeds
 * that. Chunks keep their character offsets, so adjacent chunks can later be joined with the
 * document's own text between them.
 */
import { InputError } from '../ops/errors.js';
import type { Tokenizer } from './tokenizer.js';

export interface Chunk {
  /** Index of the chunk within its document. */
  index: number;
  /** [start, end) character offsets in the document. */
  start: number;
  end: number;
  text: string;
  /** tok.encode(text).length. */
  tokens: number;
}

/**
 * Sentence spans [start, end) of a text: a sentence ends after `.`, `!`, `?` or `…` (with any
 * closing quotes or brackets) followed by whitespace, or at a blank line. Leading whitespace is
 * not part of a sentence; spans cover every non-space character once.
 */
export function sentenceSpans(text: string): [number, number][] {
  const spans: [number, number][] = [];
  const end = /[.!?\u2026]+["'\u2019\u201d)\]]*(?=\s)|\n[ \t]*\n/g;
  let start = skipSpace(text, 0);
  let m: RegExpExecArray | null;
  while ((m = end.exec(text)) !== null) {
    const stop = m[0].startsWith('\n') ? m.index : m.index + m[0].length;
    if (stop > start) spans.push([start, trimEnd(text, start, stop)]);
    start = skipSpace(text, Math.max(stop, start));
    end.lastIndex = Math.max(end.lastIndex, start);
  }
  if (start < text.length) {
    const e = trimEnd(text, start, text.length);
    if (e > start) spans.push([start, e]);
  }
  return spans.filter(([s, e]) => e > s);
}

function skipSpace(text: string, i: number): number {
  while (i < text.length && /\s/.test(text[i]!)) i++;
  return i;
}

function trimEnd(text: string, start: number, end: number): number {
  while (end > start && /\s/.test(text[end - 1]!)) end--;
  return end;
}

/** Cuts a span that alone is over the limit: at spaces where possible, by characters otherwise. */
function splitLong(text: string, start: number, end: number, max: number, count: (s: number, e: number) => number): [number, number][] {
  const out: [number, number][] = [];
  let s = start;
  while (s < end) {
    if (count(s, end) <= max) {
      out.push([s, end]);
      break;
    }
    // The longest prefix within the limit, found by bisection over the word ends.
    const cuts: number[] = [];
    for (let i = s + 1; i < end; i++) if (/\s/.test(text[i]!) && !/\s/.test(text[i - 1]!)) cuts.push(i);
    let lo = 0;
    let hi = cuts.length - 1;
    let best = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (count(s, cuts[mid]!) <= max) {
        best = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    let e: number;
    if (best >= 0) e = cuts[best]!;
    else {
      // One word over the limit: the longest run of characters that fits (at least one).
      let a = s + 1;
      let b = end;
      while (a < b) {
        const mid = (a + b + 1) >> 1;
        if (count(s, mid) <= max) a = mid;
        else b = mid - 1;
      }
      e = a;
    }
    out.push([s, e]);
    s = skipSpace(text, e);
  }
  return out;
}

/**
 * Chunks of whole sentences, each at most `chunkTokens` tokens and as full as the next sentence
 * allows. Sentence token counts are summed to choose a chunk's end, then the chunk's own text is
 * encoded; if that comes out over the limit (merges across a boundary), its last sentence goes to
 * the next chunk.
 */
export function chunkDocument(text: string, tok: Tokenizer, chunkTokens: number): Chunk[] {
  if (!Number.isInteger(chunkTokens) || chunkTokens < 8) throw new InputError(`--chunk-tokens must be an integer >= 8, got ${chunkTokens}`);
  const count = (s: number, e: number): number => tok.encode(text.slice(s, e)).length;
  const pieces: [number, number][] = [];
  for (const [s, e] of sentenceSpans(text)) {
    if (count(s, e) <= chunkTokens) pieces.push([s, e]);
    else pieces.push(...splitLong(text, s, e, chunkTokens, count));
  }
  const sizes = pieces.map(([s, e]) => count(s, e));
  const chunks: Chunk[] = [];
  let i = 0;
  while (i < pieces.length) {
    let j = i + 1;
    let sum = sizes[i]!;
    while (j < pieces.length && sum + sizes[j]! <= chunkTokens) sum += sizes[j++]!;
    let n = count(pieces[i]![0], pieces[j - 1]![1]);
    while (n > chunkTokens && j > i + 1) n = count(pieces[i]![0], pieces[--j - 1]![1]);
    const start = pieces[i]![0];
    const end = pieces[j - 1]![1];
    chunks.push({ index: chunks.length, start, end, text: text.slice(start, end), tokens: n });
    i = j;
  }
  return chunks;
}
