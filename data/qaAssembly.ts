/**
 * Long-context chat examples from chunked documents and one question-answer pair per chunk (LWM's
 * model-generated QA data): for a target length, adjacent chunks of one document as the context of
 * the first user turn, then each included chunk's pair as a chat turn, in document order.
 *
 * An example is a JSONL record in the `fields` syntax (data/examples.ts) in LWM's chat template:
 *   <s>{system} USER: {chunks}  {q0} ASSISTANT:  {a0}</s>  USER: {q1} ASSISTANT:  {a1}</s> …
 * with loss only on the answers and the EOS that ends each (fields "[context],[q0],a0,<|eos|>,…").
 */
import { InputError } from '../ops/errors.js';
import { epochPermutation } from './batches.js';
import type { Chunk } from './chunking.js';
import { processExample, type JsonlRecord } from './examples.js';
import type { Tokenizer } from './tokenizer.js';

export interface QaPair {
  question: string;
  answer: string;
}

/** A document's text, its chunks, and the pair kept for each chunk (null: none was). */
export interface QaDocument {
  text: string;
  chunks: readonly Chunk[];
  pairs: readonly (QaPair | null)[];
}

export interface QaExampleMeta {
  doc: number;
  /** Indices of the included chunks, [first, last]. */
  chunks: [number, number];
  /** Chunks whose pair is in the example (the included chunks that have one). */
  pairChunks: number[];
  target: number;
  tokens: number;
}

export interface QaRecord {
  fields: string;
  context: string;
  [key: string]: unknown;
  meta: QaExampleMeta;
}

export interface AssembleOptions {
  tokenizer: Tokenizer;
  /** The chat template's system text (LWM_SYSTEM in src/chat/template.ts; '' for none). */
  system: string;
}

export interface LengthStats {
  examples: number;
  pairs: number;
  tokensMean: number;
  tokensMin: number;
  tokensMax: number;
  /** Documents (or their last windows) too short to come within one chunk of the target. */
  shortWindowsDropped: number;
}

/** The record of chunks [a, b] of a document with the given pairs. */
export function qaRecord(doc: QaDocument, docIndex: number, a: number, b: number, target: number, system: string): QaRecord {
  const fields = ['[context]'];
  const rec: Record<string, unknown> = {
    context: `${system === '' ? '' : `${system} `}USER: ${doc.text.slice(doc.chunks[a]!.start, doc.chunks[b]!.end)}`,
  };
  const pairChunks: number[] = [];
  for (let i = a; i <= b; i++) {
    const p = doc.pairs[i];
    if (!p) continue;
    const t = pairChunks.length;
    if (t > 0) fields.push('<|eos|>');
    fields.push(`[q${t}]`, `a${t}`);
    rec[`q${t}`] = `${t === 0 ? '' : 'USER: '}${p.question} ASSISTANT:`;
    rec[`a${t}`] = p.answer;
    pairChunks.push(i);
  }
  return { fields: fields.join(','), ...rec, meta: { doc: docIndex, chunks: [a, b], pairChunks, target, tokens: 0 } } as QaRecord;
}

/** Tokens of a record as lwm train will see it (BOS, fields, final EOS). */
export function recordTokens(rec: QaRecord, tok: Tokenizer): number {
  const r: JsonlRecord = { value: rec as unknown as Record<string, unknown>, line: 1 };
  return processExample(r, { tokenizer: tok }).tokens.length;
}

/**
 * Windows of adjacent chunks per document for one target length: each as long as fits (exact
 * token count of the whole example), consecutive and non-overlapping; a window is kept when it has
 * at least one pair and comes within one chunk (that chunk's text and pair) of the target.
 */
/** A target example length, checked (the smallest leaves room for the template and one pair). */
export function checkTargetLength(target: number): void {
  if (!Number.isInteger(target) || target < 16) throw new InputError(`--lengths: each length must be an integer >= 16, got ${target}`);
}

export function assembleLength(docs: readonly QaDocument[], target: number, o: AssembleOptions): { records: QaRecord[]; stats: LengthStats } {
  checkTargetLength(target);
  const tok = o.tokenizer;
  const records: QaRecord[] = [];
  let shortDropped = 0;
  docs.forEach((doc, d) => {
    const m = doc.chunks.length;
    // A chunk's cost: its text plus its pair's turn (question, answer, EOS); the estimate a window
    // is grown by before its exact count is taken.
    const cost = doc.chunks.map((c, i) => {
      const p = doc.pairs[i];
      return c.tokens + (p ? tok.encode(`USER: ${p.question} ASSISTANT:`).length + tok.encode(p.answer).length + 1 : 0);
    });
    const base = tok.encode(`${o.system} USER:`).length + 2;
    let a = 0;
    while (a < m) {
      let b = a;
      let est = base + cost[a]!;
      while (b + 1 < m && est + cost[b + 1]! <= target) est += cost[++b]!;
      let rec = qaRecord(doc, d, a, b, target, o.system);
      let n = recordTokens(rec, tok);
      while (n > target && b > a) {
        rec = qaRecord(doc, d, a, --b, target, o.system);
        n = recordTokens(rec, tok);
      }
      if (n > target) {
        // One chunk and its pair alone exceed the target: nothing of this length starts here.
        a++;
        continue;
      }
      const full = b + 1 < m ? true : target - n < Math.max(...cost.slice(a, b + 1));
      if (rec.meta.pairChunks.length > 0 && full) {
        rec.meta.tokens = n;
        records.push(rec);
      } else if (!full) shortDropped++;
      a = b + 1;
    }
  });
  const tokens = records.map((r) => r.meta.tokens);
  return {
    records,
    stats: {
      examples: records.length,
      pairs: records.reduce((s, r) => s + r.meta.pairChunks.length, 0),
      tokensMean: tokens.length ? Math.round(tokens.reduce((s, x) => s + x, 0) / tokens.length) : 0,
      tokensMin: tokens.length ? Math.min(...tokens) : 0,
      tokensMax: tokens.length ? Math.max(...tokens) : 0,
      shortWindowsDropped: shortDropped,
    },
  };
}

/** Reorders `items` in place by the batch iterator's seeded Fisher-Yates order (the same for the same seed). */
export function seededShuffle<T>(items: T[], seed: number): T[] {
  const order = epochPermutation(items.length, seed, 0);
  const copy = items.slice();
  for (let i = 0; i < items.length; i++) items[i] = copy[order[i]!]!;
  return items;
}

export function checkMixRatio(ratio: number): void {
  if (!(ratio >= 0 && ratio < 1)) throw new InputError(`--mix-ratio must be in [0, 1), got ${ratio}`);
}

/**
 * How many short examples make `ratio` of the output next to `long` long ones, and which (drawn
 * without replacement from `available`, in a seeded order).
 */
export function mixSelection(long: number, available: number, ratio: number, seed: number): number[] {
  checkMixRatio(ratio);
  const want = Math.round((long * ratio) / (1 - ratio));
  const idx = seededShuffle(Array.from({ length: available }, (_, i) => i), seed ^ 0x5bd1e995);
  return idx.slice(0, Math.min(want, available)).sort((x, y) => x - y);
}
