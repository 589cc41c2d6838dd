/**
 * Long text for needle-in-a-haystack evaluation. LWM's script reads PG-19 books from a JSONL file
 * (`create_needle_data.py` downloads them); we ship a public-domain text instead, so the eval runs
 * offline, and still read a user's JSONL or plain text when given.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { InputError } from '../ops/errors.js';
import { jsonlTexts } from './examples.js';
import type { Tokenizer } from './tokenizer.js';

/**
 * The King James Bible (1769 text), one book per paragraph (see data/haystack/README.md). The path
 * holds from both data/ and dist/data/, since the .gz sits in the package root's data/haystack.
 */
export const SHIPPED_HAYSTACK = (() => {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [resolve(here, 'haystack', 'kjv.txt.gz'), resolve(here, '..', '..', 'data', 'haystack', 'kjv.txt.gz')];
  return candidates.find((p) => existsSync(p)) ?? candidates[1]!;
})();

export interface HaystackOptions {
  /** A .txt (or .txt.gz) plain text, or a .jsonl of {"text": ...} records as LWM's PG-19 dump; default the shipped text. */
  file?: string;
}

let shipped: string | undefined;

/** The haystack's whole text. */
export function loadHaystack(opts: HaystackOptions = {}): string {
  if (opts.file === undefined) {
    if (!existsSync(SHIPPED_HAYSTACK)) throw new InputError(`the shipped haystack ${SHIPPED_HAYSTACK} is missing; reinstall lwm or pass a haystack file`);
    shipped ??= gunzipSync(readFileSync(SHIPPED_HAYSTACK)).toString('utf8');
    return shipped;
  }
  const file = opts.file;
  if (!existsSync(file)) throw new InputError(`haystack ${file}: no such file; give a .txt or .jsonl file`);
  const lower = file.toLowerCase();
  let text: string;
  if (lower.endsWith('.jsonl')) text = jsonlText(readFileSync(file, 'utf8'), file);
  else if (lower.endsWith('.txt.gz')) text = gunzipSync(readFileSync(file)).toString('utf8');
  else if (lower.endsWith('.txt')) text = readFileSync(file, 'utf8');
  else throw new InputError(`haystack ${file}: unknown format; give a .txt (plain text) or .jsonl ({"text": ...} per line) file`);
  if (text.trim() === '') throw new InputError(`haystack ${file} has no text; give a long document (books, articles)`);
  return text;
}

/**
 * LWM concatenates the records' texts as they are; a paragraph break goes between two that would
 * otherwise run words together (PG-19 books end in a newline, other dumps may not).
 */
function jsonlText(raw: string, file: string): string {
  let out = '';
  for (const t of jsonlTexts(raw, file, 'a haystack record')) {
    if (out !== '' && t !== '' && !/\s$/.test(out) && !/^\s/.test(t)) out += '\n\n';
    out += t;
  }
  return out;
}

export interface HaystackTokenOptions {
  /**
   * Where in the text to begin, as a fraction of its length (moved forward to the next paragraph,
   * else the next space); the text wraps around. Gives each round its own haystack, as LWM reads a
   * different book per round.
   */
  start?: number;
}

/**
 * Token ids of the start of the text, at least `minTokens` of them: the text is repeated (after a
 * paragraph break) when shorter. Only a prefix is encoded, cut before a space, where SentencePiece
 * tokens always break, so the ids are exactly those of encoding the whole text.
 */
export function haystackTokens(text: string, tok: Tokenizer, minTokens: number, opts: HaystackTokenOptions = {}): number[] {
  if (!Number.isInteger(minTokens) || minTokens < 1) throw new InputError(`haystack tokens must be a positive integer, got ${minTokens}`);
  const body = text.trim();
  if (body === '') throw new InputError('the haystack has no text; give a long document (books, articles)');
  const start = opts.start ?? 0;
  if (!(start >= 0 && start < 1)) throw new InputError(`haystack start must be in [0, 1), got ${start}`);
  const rotated = rotate(body, start);
  let source = rotated;
  // ~4 characters per LLaMA token in English prose; 6 leaves room so one pass usually suffices.
  let chars = minTokens * 6 + 64;
  for (;;) {
    while (source.length < chars) source += '\n\n' + rotated;
    const cut = source.length === chars ? chars : lastSpaceAtOrBefore(source, chars);
    const ids = tok.encode(source.slice(0, cut));
    if (ids.length >= minTokens) return ids;
    chars *= 2;
  }
}

function rotate(text: string, start: number): string {
  if (start === 0) return text;
  const at = Math.floor(text.length * start);
  let k = text.indexOf('\n\n', at);
  k = k >= 0 ? k + 2 : text.indexOf(' ', at) + 1;
  if (k <= 0 || k >= text.length) return text;
  return `${text.slice(k).trimStart()}\n\n${text.slice(0, k).trimEnd()}`;
}

function lastSpaceAtOrBefore(s: string, i: number): number {
  for (let j = Math.min(i, s.length - 1); j > 0; j--) if (/\s/.test(s[j]!)) return j;
  return Math.min(i, s.length);
}
