/**
 * A retrieval grid (context length x depth x rounds) as LWM's needle scripts run it: greedy answers,
 * cut at EOS, scored by exact number match. Each case depends only on (seed, context, depth, round),
 * so every rank of a ring builds the same prompts and a grid that grows keeps its old cases.
 */
import { InputError } from '../../ops/errors.js';
import { mulberry32 } from '../../data/batches.js';
import { haystackTokens, loadHaystack } from '../../data/haystack.js';
import { scorePasskey } from '../../data/passkey.js';
import type { Tokenizer } from '../../data/tokenizer.js';
import type { KVCache } from '../../models/kvCache.js';
import type { LlamaModel } from '../../models/llama.js';
import { generateText, type TextResult } from '../textStream.js';
import { LWM_NEEDLE_CONTEXTS, LWM_NEEDLE_DEPTHS, needleCase, sampleWithoutReplacement, scoreNeedle, type NeedleInfo } from './needle.js';
import { passkeyCase } from './passkeyEval.js';

export type RetrievalKind = 'needle' | 'passkey';

/**
 * Runs all prompt tokens but the last into a fresh KV cache the caller then owns, or returns null
 * on a process that only helps (a ring rank other than 0): that round is then not answered there.
 */
export type PrefillHook = (tokens: readonly number[]) => Promise<KVCache | null>;

export interface RetrievalGridOptions {
  /** Default 'needle'. */
  kind?: RetrievalKind;
  /** Prompt lengths in tokens; default LWM's round(linspace(1000, 10000, 20)). */
  contexts?: readonly number[];
  /** Percentages; default LWM's round(linspace(0, 100, 20)). Multi-needle rounds draw their depths from these. */
  depths?: readonly number[];
  /** Cases per cell; default 3 (run_eval_needle.sh). */
  rounds?: number;
  /** Default 1234, eval_needle.py's. */
  seed?: number;
  /** Needles hidden per prompt (default 1); above 1 the grid is eval_needle_multi.py's: contexts x rounds. */
  needles?: number;
  /** Needles asked for (default all). */
  retrieve?: number;
  /** Needle haystack text; default the shipped one (loadHaystack). */
  haystack?: string;
  /** Passkey digits; default 5. */
  digits?: number;
  /** Answer tokens at most; default 32. */
  maxTokens?: number;
  /** Prompt tokens per forward pass; default 512. */
  prefillChunk?: number;
  /** Replaces the local prefill, e.g. with ringPrefill for --sp. */
  prefill?: PrefillHook;
  /** After each round; the ETA weighs the rounds left by their prompt tokens. */
  onProgress?: (done: number, total: number, etaS: number) => void;
  /** Each answered round as soon as it is scored (to write results as they come). */
  onRound?: (context: number, depth: number | null, round: RoundResult) => void;
  /** Stops before the next round and ends the current answer; the results so far are returned. */
  signal?: AbortSignal;
}

export interface RoundResult {
  round: number;
  /** Every needle asked for was found. */
  correct: boolean;
  /** Fraction of the needles asked for that were found (1 or 0 for one needle). */
  score: number;
  /** Multi-needle: one per number asked, LWM's `correct` list. */
  correctEach?: boolean[];
  response: string;
  answer: string | string[];
  promptTokens: number;
  seconds: number;
  stoppedBy: TextResult['stoppedBy'];
  /** Needle rounds: where each needle landed. */
  needles?: NeedleInfo[];
  /** Passkey rounds: filler sentences before the passkey / all of them. */
  passkeyDepth?: number;
}

export interface CellResult {
  context: number;
  /** null for multi-needle rounds, whose needles each have their own depth. */
  depth: number | null;
  rounds: RoundResult[];
  accuracy: number;
}

export interface RetrievalResults {
  cells: CellResult[];
  accuracyByContext: { context: number; accuracy: number; n: number }[];
  /** Multi-needle: over the needles asked for, by each one's depth. */
  accuracyByDepth: { depth: number; accuracy: number; n: number }[];
  overall: number;
  /** False when stopped by the signal. */
  complete: boolean;
  config: { kind: RetrievalKind; contexts: number[]; depths: number[]; rounds: number; seed: number; needles: number; retrieve: number; digits: number; maxTokens: number; prefillChunk: number };
}

type Config = RetrievalResults['config'];

export async function runRetrievalGrid(model: LlamaModel, tok: Tokenizer, opts: RetrievalGridOptions = {}): Promise<RetrievalResults> {
  const cfg = resolveConfig(model, opts);
  const multi = cfg.kind === 'needle' && cfg.needles > 1;
  const depthAxis: (number | null)[] = multi ? [null] : cfg.depths;
  const maxContext = Math.max(...cfg.contexts);
  const text = cfg.kind === 'needle' ? (opts.haystack ?? loadHaystack()) : '';
  // A different stretch of the text per round, as LWM reads a different book per round.
  const hay = cfg.kind === 'needle' ? Array.from({ length: cfg.rounds }, (_, r) => haystackTokens(text, tok, maxContext, { start: (r * 0.6180339887) % 1 })) : [];
  // A context too small for the template fails here, before any model time is spent.
  const least = Math.min(...cfg.contexts);
  const probe = { tok, contextLength: least, rng: mulberry32(0) };
  if (cfg.kind === 'passkey') passkeyCase({ ...probe, depthPercent: 0, digits: cfg.digits });
  else needleCase({ ...probe, haystackTokens: hay[0]!, depthPercent: cfg.depths.slice(0, cfg.needles), needles: cfg.needles, retrieve: cfg.retrieve });

  const total = cfg.contexts.length * depthAxis.length * cfg.rounds;
  const totalTokens = cfg.contexts.reduce((s, c) => s + c, 0) * depthAxis.length * cfg.rounds;
  let done = 0;
  let doneTokens = 0;
  const t0 = performance.now();
  const cells: CellResult[] = [];
  let complete = true;
  outer: for (const context of cfg.contexts) {
    for (const depth of depthAxis) {
      const cell: CellResult = { context, depth, rounds: [], accuracy: 0 };
      cells.push(cell);
      for (let round = 0; round < cfg.rounds; round++) {
        const rng = mulberry32(caseSeed(cfg.seed, context, multi ? 0 : (depth ?? 0), round));
        const r = opts.signal?.aborted ? 'aborted' : await runRound(model, tok, cfg, opts, { context, depth, round, rng, haystack: hay[round] ?? [] });
        if (r === 'aborted') {
          complete = false;
          break outer;
        }
        if (r) {
          cell.rounds.push(r);
          opts.onRound?.(context, depth, r);
        }
        done++;
        doneTokens += context;
        const elapsed = (performance.now() - t0) / 1000;
        opts.onProgress?.(done, total, (elapsed * (totalTokens - doneTokens)) / doneTokens);
      }
    }
  }
  return summarize(cells.filter((c) => c.rounds.length > 0 || complete), cfg, complete, multi);
}

type RoundInput = { context: number; depth: number | null; round: number; rng: () => number; haystack: readonly number[] };

async function runRound(model: LlamaModel, tok: Tokenizer, cfg: Config, opts: RetrievalGridOptions, x: RoundInput): Promise<RoundResult | null | 'aborted'> {
  const t = performance.now();
  let prompt: number[];
  let score: (response: string) => Pick<RoundResult, 'correct' | 'score' | 'correctEach' | 'answer'>;
  let extra: Pick<RoundResult, 'needles' | 'passkeyDepth'>;
  if (cfg.kind === 'passkey') {
    const c = passkeyCase({ tok, contextLength: x.context, depthPercent: x.depth!, rng: x.rng, digits: cfg.digits });
    prompt = c.promptTokens;
    extra = { passkeyDepth: c.depth };
    score = (s) => {
      const ok = scorePasskey(s, c.passkey);
      return { correct: ok, score: ok ? 1 : 0, answer: c.passkey };
    };
  } else {
    const depthPercent = x.depth ?? sampleWithoutReplacement(x.rng, cfg.depths, cfg.needles);
    const c = needleCase({ haystackTokens: x.haystack, tok, contextLength: x.context, depthPercent, rng: x.rng, needles: cfg.needles, retrieve: cfg.retrieve });
    prompt = c.promptTokens;
    extra = { needles: c.needles };
    score = (s) => {
      const each = scoreNeedle(s, c.answers);
      const found = each.filter(Boolean).length;
      const single = cfg.needles === 1;
      return { correct: found === each.length, score: found / each.length, answer: single ? c.answers[0]! : c.answers, ...(single ? {} : { correctEach: each }) };
    };
  }
  const out = await answer(model, tok, prompt, cfg, opts);
  if (out === null || out === 'aborted') return out;
  return { round: x.round, ...score(out.text), response: out.text, promptTokens: prompt.length, seconds: (performance.now() - t) / 1000, stoppedBy: out.stoppedBy, ...extra };
}

/** Greedy, stopped at the model's EOS; through the prefill hook when given. */
async function answer(model: LlamaModel, tok: Tokenizer, prompt: number[], cfg: Config, opts: RetrievalGridOptions): Promise<TextResult | null | 'aborted'> {
  const gen = { maxTokens: cfg.maxTokens, prefillChunk: cfg.prefillChunk, temperature: 0, signal: opts.signal };
  let r: TextResult;
  if (!opts.prefill) {
    r = await generateText(model, tok, prompt, gen);
  } else {
    const cache = await opts.prefill(prompt.slice(0, -1));
    if (!cache) return null;
    try {
      r = await generateText(model, tok, prompt.slice(-1), { ...gen, cache });
    } finally {
      cache.dispose();
    }
  }
  return r.stoppedBy === 'aborted' ? 'aborted' : r;
}

function resolveConfig(model: LlamaModel, o: RetrievalGridOptions): Config {
  const kind = o.kind ?? 'needle';
  if (kind !== 'needle' && kind !== 'passkey') throw new InputError(`unknown retrieval test '${String(kind)}'; use needle or passkey`);
  const contexts = [...(o.contexts ?? LWM_NEEDLE_CONTEXTS)];
  const depths = [...(o.depths ?? LWM_NEEDLE_DEPTHS)];
  const wholes = (name: string, v: number, min: number): number => {
    if (!Number.isInteger(v) || v < min) throw new InputError(`--${name} must be a whole number >= ${min}, got ${v}`);
    return v;
  };
  if (contexts.length === 0) throw new InputError('--context needs at least one length');
  if (depths.length === 0) throw new InputError('--depth needs at least one percentage');
  const max = model.config.maxSeqLen;
  for (const c of contexts) {
    wholes('context', c, 1);
    if (c > max) throw new InputError(`--context ${c} is longer than the model's maximum of ${max} tokens; use --context ${max} or less (or load the model with a longer context)`);
  }
  for (const d of depths) if (!(d >= 0 && d <= 100)) throw new InputError(`--depth values are percentages in [0, 100], got ${d}`);
  const needles = wholes('needles', o.needles ?? 1, 1);
  const retrieve = wholes('retrieve', o.retrieve ?? needles, 1);
  if (retrieve > needles) throw new InputError(`--retrieve ${retrieve} asks for more needles than --needles ${needles} hides`);
  if (kind === 'passkey' && needles > 1) throw new InputError('--needles applies to the needle test; passkey prompts hold one passkey');
  if (needles > new Set(depths).size) throw new InputError(`--needles ${needles} needs as many distinct depths, but --depth gives ${new Set(depths).size}`);
  return {
    kind,
    contexts,
    depths,
    rounds: wholes('rounds', o.rounds ?? 3, 1),
    seed: wholes('seed', o.seed ?? 1234, 0),
    needles,
    retrieve,
    digits: wholes('digits', o.digits ?? 5, 1),
    maxTokens: wholes('max-tokens', o.maxTokens ?? 32, 1),
    prefillChunk: wholes('prefill-chunk', o.prefillChunk ?? 512, 1),
  };
}

function caseSeed(seed: number, context: number, depth: number, round: number): number {
  let h = seed >>> 0;
  for (const v of [context, Math.round(depth * 1000), round]) h = Math.imul(h ^ (v >>> 0), 0x9e3779b1) ^ (h >>> 15);
  return h >>> 0;
}

function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

function summarize(cells: CellResult[], config: Config, complete: boolean, multi: boolean): RetrievalResults {
  const byContext = new Map<number, number[]>();
  const byDepth = new Map<number, number[]>();
  const add = (m: Map<number, number[]>, k: number, v: number): void => void (m.get(k) ?? m.set(k, []).get(k)!).push(v);
  for (const c of cells) {
    c.accuracy = mean(c.rounds.map((r) => r.score));
    for (const r of c.rounds) {
      add(byContext, c.context, r.score);
      if (!multi) add(byDepth, c.depth!, r.score);
      else r.correctEach?.forEach((ok, i) => add(byDepth, askedDepth(r, i), ok ? 1 : 0));
    }
  }
  const rows = <K extends string>(m: Map<number, number[]>, key: K) =>
    [...m].sort((a, b) => a[0] - b[0]).map(([k, v]) => ({ [key]: k, accuracy: mean(v), n: v.length }) as Record<K, number> & { accuracy: number; n: number });
  return {
    cells,
    accuracyByContext: rows(byContext, 'context'),
    accuracyByDepth: rows(byDepth, 'depth'),
    overall: mean(cells.flatMap((c) => c.rounds.map((r) => r.score))),
    complete,
    config,
  };
}

/** The depth of the i-th number asked for: the needle holding that number. */
function askedDepth(r: RoundResult, i: number): number {
  const want = (r.answer as string[])[i];
  return r.needles!.find((n) => n.number === want)!.depthPercent;
}
