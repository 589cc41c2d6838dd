/**
 * `lwm data qa`: documents → chunks → one question-answer pair per chunk (cached) → long chat
 * examples per target length, as a JSONL dataset that `lwm train --data` reads.
 *
 * Output folder:
 *   dataset.jsonl   the examples (fields syntax, loss on answers only), written once at the end
 *   stats.json      documents, chunks, pairs kept and dropped by reason, examples per length
 *   cache/xx/KEY.json  one file per chunk: the outcome of asking for its pair. KEY hashes the
 *                   prompt version, the model and the chunk text, so a rerun (after a kill, or
 *                   with other lengths) asks only for chunks it has no answer for.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../../ops/errors.js';
import { chunkDocument, type Chunk } from '../../data/chunking.js';
import { jsonlLines, jsonlTexts, parseJsonlLine, processExample } from '../../data/examples.js';
import { assembleLength, checkMixRatio, checkTargetLength, mixSelection, seededShuffle, type LengthStats, type QaDocument, type QaPair } from '../../data/qaAssembly.js';
import type { Tokenizer } from '../../data/tokenizer.js';
import { LWM_SYSTEM } from '../chat/template.js';
import { writeFileAtomic } from '../checkpoint/safetensors.js';
import { recordFields } from '../prepare/manifest.js';
import type { QaGenerator } from './generators.js';
import { parseQaReply, qaPrompt, QA_PROMPT_VERSION, type DropReason } from './prompt.js';

export const QA_DATASET_FILE = 'dataset.jsonl';
export const QA_STATS_FILE = 'stats.json';

export interface QaRunOptions {
  docs: string;
  out: string;
  tokenizer: Tokenizer;
  generator: QaGenerator;
  chunkTokens?: number;
  lengths?: readonly number[];
  /** Tries per chunk while replies are rejected (then the chunk is dropped). Default 3. */
  attempts?: number;
  /** Requests at once (capped by the generator). Default 4. */
  parallel?: number;
  mix?: string;
  mixRatio?: number;
  seed?: number;
  /** The chat template's system text; default LWM's. */
  system?: string;
  onProgress?: (p: QaProgress) => void;
}

export interface QaProgress {
  done: number;
  total: number;
  kept: number;
  dropped: number;
  cached: number;
}

interface CacheEntry {
  version: number;
  model: string;
  outcome: 'kept' | 'dropped';
  pair?: QaPair;
  /** Why each rejected try was rejected, in order. */
  rejected: { reason: DropReason; detail: string }[];
}

export interface QaStats {
  documents: number;
  chunks: number;
  chunkTokens: { target: number; mean: number; min: number; max: number };
  pairs: { kept: number; dropped: number; droppedBy: Partial<Record<DropReason, number>>; retried: number; fromCache: number; requested: number };
  lengths: Record<string, LengthStats>;
  mix: { file: string; ratio: number; available: number; used: number } | null;
  examples: number;
  model: string;
  promptVersion: number;
}

/** `{"text": …}` per line of a JSONL file, or every .txt file of a folder (by name). */
export function readDocuments(docs: string): string[] {
  if (!fs.existsSync(docs)) throw new InputError(`--docs ${docs}: no such file or folder; give a JSONL of {"text": …} lines or a folder of .txt files`);
  if (fs.statSync(docs).isDirectory()) {
    const files = fs.readdirSync(docs).filter((f) => f.endsWith('.txt')).sort();
    if (files.length === 0) throw new InputError(`--docs ${docs}: the folder has no .txt files`);
    return files.map((f) => fs.readFileSync(path.join(docs, f), 'utf8')).filter((t) => t.trim() !== '');
  }
  const texts = jsonlTexts(fs.readFileSync(docs, 'utf8'), docs, 'a document line').filter((t) => t.trim() !== '');
  if (texts.length === 0) throw new InputError(`--docs ${docs}: no non-empty documents`);
  return texts;
}

function cacheKey(model: string, chunk: string): string {
  return createHash('sha256').update(JSON.stringify([QA_PROMPT_VERSION, model, chunk])).digest('hex');
}

function readCache(file: string, model: string): CacheEntry | null {
  if (!fs.existsSync(file)) return null;
  try {
    const e = JSON.parse(fs.readFileSync(file, 'utf8')) as CacheEntry;
    if (e.version === QA_PROMPT_VERSION && e.model === model && (e.outcome === 'dropped' || (e.pair && typeof e.pair.answer === 'string'))) return e;
  } catch {
    // Unreadable (a disk error or an edit): asked again below, and overwritten.
  }
  return null;
}

/** Runs `fn` over 0..n-1 with at most `limit` at once; the first error stops new work and is thrown. */
async function pool(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown = null;
  const worker = async (): Promise<void> => {
    while (failed === null && next < n) {
      const i = next++;
      try {
        await fn(i);
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, n)) }, worker));
  if (failed !== null) throw failed;
}

function parseLengths(lengths: readonly number[]): number[] {
  if (lengths.length === 0) throw new InputError('--lengths is empty; give e.g. 4096,32768');
  lengths.forEach(checkTargetLength);
  return [...new Set(lengths)].sort((a, b) => a - b);
}

export async function runQa(o: QaRunOptions): Promise<QaStats> {
  const tok = o.tokenizer;
  const chunkTokens = o.chunkTokens ?? 1000;
  const lengths = parseLengths(o.lengths ?? [4096, 32768]);
  const attempts = o.attempts ?? 3;
  if (!Number.isInteger(attempts) || attempts < 1) throw new InputError(`--attempts must be a positive integer, got ${attempts}`);
  const parallel = o.parallel ?? 4;
  if (!Number.isInteger(parallel) || parallel < 1) throw new InputError(`--parallel must be a positive integer, got ${parallel}`);
  const mixRatio = o.mixRatio ?? 0.3;
  if (o.mix !== undefined) checkMixRatio(mixRatio);
  const mixLines = o.mix !== undefined ? readMix(o.mix, tok) : null;
  const texts = readDocuments(o.docs);
  const docs = texts.map((text) => ({ text, chunks: chunkDocument(text, tok, chunkTokens) }));
  const all: { doc: number; chunk: Chunk }[] = docs.flatMap((d, doc) => d.chunks.map((chunk) => ({ doc, chunk })));

  fs.mkdirSync(path.join(o.out, 'cache'), { recursive: true });
  const model = o.generator.id;
  const outcome = new Map<string, Promise<CacheEntry>>();
  const progress: QaProgress = { done: 0, total: all.length, kept: 0, dropped: 0, cached: 0 };
  let requested = 0;
  const entries: CacheEntry[] = new Array(all.length);

  // The same chunk text twice (repeated boilerplate) is asked for once.
  const resolve = (text: string): Promise<CacheEntry> => {
    const key = cacheKey(model, text);
    let p = outcome.get(key);
    if (p) return p;
    p = (async () => {
      const file = path.join(o.out, 'cache', key.slice(0, 2), `${key}.json`);
      const hit = readCache(file, model);
      if (hit) {
        progress.cached++;
        return hit;
      }
      const entry: CacheEntry = { version: QA_PROMPT_VERSION, model, outcome: 'dropped', rejected: [] };
      for (let a = 0; a < attempts; a++) {
        requested++;
        const v = parseQaReply(await o.generator.reply(qaPrompt(text), a), text);
        if (v.ok) {
          entry.outcome = 'kept';
          entry.pair = v.pair;
          break;
        }
        entry.rejected.push({ reason: v.reason, detail: v.detail });
      }
      fs.mkdirSync(path.dirname(file), { recursive: true });
      writeFileAtomic(file, JSON.stringify(entry) + '\n');
      return entry;
    })();
    outcome.set(key, p);
    return p;
  };

  await pool(all.length, Math.min(parallel, o.generator.maxParallel), async (i) => {
    const e = await resolve(all[i]!.chunk.text);
    entries[i] = e;
    progress.done++;
    if (e.outcome === 'kept') progress.kept++;
    else progress.dropped++;
    o.onProgress?.({ ...progress });
  });

  const qaDocs: QaDocument[] = [];
  let k = 0;
  for (const d of docs) {
    qaDocs.push({ text: d.text, chunks: d.chunks, pairs: d.chunks.map(() => entries[k++]!.pair ?? null) });
  }
  const droppedBy: Partial<Record<DropReason, number>> = {};
  let retried = 0;
  for (const e of entries) {
    if (e.rejected.length > 0) retried++;
    if (e.outcome === 'dropped') {
      const r = e.rejected.at(-1)!.reason;
      droppedBy[r] = (droppedBy[r] ?? 0) + 1;
    }
  }

  const records: unknown[] = [];
  const perLength: Record<string, LengthStats> = {};
  for (const L of lengths) {
    const r = assembleLength(qaDocs, L, { tokenizer: tok, system: o.system ?? LWM_SYSTEM });
    perLength[String(L)] = r.stats;
    records.push(...r.records);
  }
  let mix: QaStats['mix'] = null;
  if (mixLines) {
    const pick = mixSelection(records.length, mixLines.length, mixRatio, o.seed ?? 0);
    for (const i of pick) records.push(mixLines[i]);
    mix = { file: o.mix!, ratio: mixRatio, available: mixLines.length, used: pick.length };
  }
  seededShuffle(records, o.seed ?? 0);

  const sizes = all.map((c) => c.chunk.tokens);
  const stats: QaStats = {
    documents: docs.length,
    chunks: all.length,
    chunkTokens: { target: chunkTokens, mean: Math.round(sizes.reduce((s, x) => s + x, 0) / Math.max(1, sizes.length)), min: Math.min(...sizes), max: Math.max(...sizes) },
    pairs: { kept: progress.kept, dropped: progress.dropped, droppedBy, retried, fromCache: progress.cached, requested },
    lengths: perLength,
    mix,
    examples: records.length,
    model,
    promptVersion: QA_PROMPT_VERSION,
  };
  writeFileAtomic(path.join(o.out, QA_DATASET_FILE), records.map((r) => JSON.stringify(r)).join('\n') + (records.length ? '\n' : ''));
  writeFileAtomic(path.join(o.out, QA_STATS_FILE), JSON.stringify(stats, null, 2) + '\n');
  return stats;
}

/** The short chat examples of --mix, each checked now (a bad line fails before any request). */
function readMix(file: string, tok: Tokenizer): Record<string, unknown>[] {
  if (!fs.existsSync(file)) throw new InputError(`--mix ${file}: no such file; give a JSONL of chat examples in the fields syntax`);
  const out: Record<string, unknown>[] = [];
  for (const l of jsonlLines(fs.readFileSync(file, 'utf8'))) {
    const rec = parseJsonlLine(l.text, l.line, file);
    processExample(rec, { tokenizer: tok, source: file, fields: recordFields(rec.value, undefined, `${file}:${l.line}`) });
    out.push(rec.value);
  }
  if (out.length === 0) throw new InputError(`--mix ${file}: no examples`);
  return out;
}
