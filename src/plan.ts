import * as os from 'node:os';
import { ConfigError, InputError } from '../ops/errors.js';
import { paramName, paramSpecs } from '../models/params.js';
import type { LlamaConfig } from '../models/config.js';

/**
 * Memory a model run needs, from the config alone (nothing is loaded), so a request that would
 * exhaust the machine is refused with an explanation instead of being killed half way.
 *
 * The model is the peak resident set of one `lwm` process on the cpu backend:
 *   runtime (Node, tfjs, addon, tokenizer) + weights + embeddings + KV cache at the full context
 *   + activations (one prefill chunk's intermediates, cache growth, and without native kernels attention scores).
 * The constants below were calibrated against measured peak RSS (`node dist/bench/plan.js`); on a
 * GPU backend the weights and cache live in GPU memory instead, which this does not plan.
 */

export type WeightDtype = 'f32' | 'bf16' | 'int8';
import { CAPACITY_STEP, type KvDtype } from '../models/kvCache.js';

export type { KvDtype };

export const WEIGHT_DTYPES: readonly WeightDtype[] = ['f32', 'bf16', 'int8'];
export const KV_DTYPES: readonly KvDtype[] = ['f32', 'bf16'];

/**
 * Resident memory of an idle `lwm generate`/`chat`/`serve` before any weight exists: Node.js,
 * TensorFlow.js, the native addon and its thread pool, yargs, and the tokenizer's vocabulary.
 * Measured 136-141 MiB after a 1-token prompt and ~150 MiB after eight 512-token chunks (JIT code
 * and heap grow with the work done), so the middle.
 */
export const RUNTIME_BYTES = 145 * 2 ** 20;

/** Prompt tokens per forward pass when the caller gives none: generate's and chat's default. */
export const DEFAULT_PREFILL_CHUNK = 512;

/**
 * Layers' intermediates resident at once in an inference pass: the running layer's, plus those of
 * the layers before it, freed but not yet collected by V8 (calibrated on 100m at 0.5-4K tokens).
 */
const LAYERS_RESIDENT = 3;

/**
 * Without the native fused attention, tfjs' attention keeps about this many score-sized
 * [heads, queries, keys] float32 tensors alive at once: matmul, scale, -inf fill, where, sub,
 * exp, div, and the previous layer's, not yet collected (calibrated on tiny with LWM_NATIVE=0).
 */
const SCORE_COPIES = 8;

/** ringPrefill's mlpChunkSize (src/chat/ringPrefill.ts). */
const RING_MLP_CHUNK = 1024;

export interface PlanOptions {
  config: Readonly<LlamaConfig>;
  /** Tokens the KV cache holds at its fullest (prompt + generated). */
  context: number;
  /** How linear-layer weights are held. Default f32. */
  dtype?: WeightDtype;
  /** Element type of the KV cache. Default f32. */
  kvDtype?: KvDtype;
  /** Processes of a sequence-parallel prefill on this machine (`--sp`); each holds the weights. Default 1. */
  sp?: number;
  /** Prompt tokens per forward pass. Default 512. */
  prefillChunk?: number;
  /** Sequences decoded together. Default 1. */
  batch?: number;
  /** KV caches alive at once (lwm serve: requests in flight plus kept slots). Default 1. */
  caches?: number;
  /** lwm's native kernels (fused attention, norms, RoPE, SwiGLU) serve the forward. Default true. */
  native?: boolean;
  /** Logits of every prompt position (generate --echo), not just the last. Default false. */
  allLogits?: boolean;
  /** The KV cache writes into growing buffers (the cpu backend) rather than concatenating (tfjs-node). Default true. */
  inPlaceCache?: boolean;
}

/** Bytes of each part, and one human line per part. */
export interface MemoryPlan {
  /** What was planned, defaults filled in (longestContext and fitsVerdict re-plan from it). */
  options: Required<PlanOptions>;
  context: number;
  dtype: WeightDtype;
  kvDtype: KvDtype;
  sp: number;
  prefillChunk: number;
  batch: number;
  caches: number;
  /** Linear layers and norms, at `dtype` (norms always fp32), in every process. */
  weights: number;
  /** Token embedding tables, always fp32, in every process. */
  embeddings: number;
  /** Keys and values of `context` tokens of every layer, for all caches. */
  kvCache: number;
  /** Transients at the peak: a prefill chunk's intermediates, cache growth, attention scores; with sp, the other ranks' passes. */
  activations: number;
  /** Node.js + tfjs + addon baseline of every process. */
  runtime: number;
  /** Peak resident bytes of every process of the run together: the sum of the parts above. */
  total: number;
  /** KV cache bytes one more token of context costs. */
  kvBytesPerToken: number;
  parameters: number;
  breakdown: string[];
}

const bytesOf = { f32: 4, bf16: 2 } as const;

/** Weight bytes split as the loader holds them: embeddings fp32, other matrices at dtype, norms fp32. */
export function weightBytes(config: Readonly<LlamaConfig>, dtype: WeightDtype = 'f32'): { weights: number; embeddings: number; parameters: number; largestMatrix: number } {
  checkDtype(dtype);
  const embeddingNames = new Set([paramName.embed, paramName.visionEmbed]);
  let weights = 0;
  let embeddings = 0;
  let parameters = 0;
  let largestMatrix = 0;
  for (const s of paramSpecs(config)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    parameters += n;
    if (embeddingNames.has(s.name)) embeddings += n * 4;
    else if (s.shape.length !== 2 || dtype === 'f32') weights += n * 4;
    else {
      // int8 keeps one fp32 scale per output row (the first dimension of an [out, in] weight).
      weights += dtype === 'bf16' ? n * 2 : n + 4 * s.shape[0]!;
      largestMatrix = Math.max(largestMatrix, n * 4);
    }
  }
  return { weights, embeddings, parameters, largestMatrix };
}

/** Rows of the cpu backend's in-place KV buffers for `context` tokens. */
export function cacheCapacity(context: number): number {
  // Preallocated for the whole context.
  return Math.ceil(context / CAPACITY_STEP) * CAPACITY_STEP;
}

/** Peak memory of running `config` with a KV cache of `context` tokens. */
export function planMemory(opts: PlanOptions): MemoryPlan {
  const c = opts.config;
  const { context } = opts;
  const dtype = opts.dtype ?? 'f32';
  const kvDtype = opts.kvDtype ?? 'f32';
  const sp = opts.sp ?? 1;
  const batch = opts.batch ?? 1;
  const caches = opts.caches ?? 1;
  const chunk = opts.prefillChunk ?? DEFAULT_PREFILL_CHUNK;
  const native = opts.native ?? true;
  const inPlace = opts.inPlaceCache ?? true;
  checkDtype(dtype);
  if (!KV_DTYPES.includes(kvDtype)) throw new ConfigError(`KV cache dtype must be ${KV_DTYPES.join(' or ')}, got ${JSON.stringify(kvDtype)}`);
  for (const [name, v] of [['context', context], ['sp', sp], ['prefill chunk', chunk], ['batch', batch], ['caches', caches]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new InputError(`${name} must be a positive integer, got ${v}`);
  }
  const { weights, embeddings, parameters, largestMatrix } = weightBytes(c, dtype);
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const e = c.hiddenSize;
  const kvBytesPerToken = c.numLayers * 2 * batch * kv * bytesOf[kvDtype];
  const kvOne = kvBytesPerToken * context;

  // An inference pass frees each layer's intermediates when the layer is done, so one layer's
  // are alive at a time: two norms, q/k/v, RoPE'd q/k, the attention output, o_proj, two residual
  // adds, gate, up, SwiGLU and down_proj, next to the hidden state coming in. Sequence
  // parallelism runs each rank's share as one pass, its MLP in chunks of RING_MLP_CHUNK tokens
  // (only their down_proj outputs and the concat stay).
  const tokens = sp > 1 ? Math.ceil(context / sp) : Math.min(chunk, context);
  const mlpLive = sp > 1 ? 2 * e : 3 * c.intermediateSize;
  const perLayer = 4 * batch * tokens * (6 * e + 3 * q + 3 * kv + mlpLive);
  const mlpChunk = sp > 1 ? 4 * batch * Math.min(tokens, RING_MLP_CHUNK) * 3 * c.intermediateSize : 0;
  const vocab = c.vocabSize + c.visionVocabSize;
  const logits = 4 * batch * vocab * (opts.allLogits ? tokens : 1);
  const forward = LAYERS_RESIDENT * perLayer + mlpChunk + 4 * batch * tokens * (3 * e + c.headDim) + logits;
  let attentionScores = 0;
  if (!native) {
    // In-place buffers show attention all their rows (the unused ones masked), plus head-major transposes of them.
    const keys = sp > 1 || !inPlace ? context : cacheCapacity(context);
    attentionScores = SCORE_COPIES * 4 * batch * c.numHeads * tokens * keys + 2 * 4 * batch * keys * kv;
  }
  // In-place caches are allocated once for the whole context; concatenation holds one layer's
  // old and new keys (then values) at once.
  const growth = sp > 1 || inPlace ? 0 : kvOne / c.numLayers;
  // Rank 0 of a ring prefill gathers every rank's keys and values, then copies them into its cache.
  const gather = sp > 1 ? kvOne : 0;
  // Ranks other than 0 hold the pass over their share and the keys and values they copied out of it.
  const otherRanks = (sp - 1) * (forward + attentionScores + (2 * kvOne) / sp);
  const kvCache = kvOne * caches;
  // Converting fp32 weights to bf16/int8 holds one fp32 matrix at a time, before the cache exists:
  // it only counts when it is larger than everything that comes after it.
  const run = forward + attentionScores + growth + gather + otherRanks;
  const loading = dtype === 'f32' ? 0 : Math.max(0, sp * largestMatrix - kvCache - run);
  const activations = run + loading;
  const total = sp * (RUNTIME_BYTES + weights + embeddings) + kvCache + activations;

  const each = sp > 1 ? ` x ${sp} processes` : '';
  const pieces = [
    [sp * forward, sp > 1 ? `each rank's ${fmt(tokens)}-token share in one pass` : `one ${fmt(tokens)}-token prefill chunk, a layer at a time`],
    [sp * attentionScores, 'attention scores (no native kernels)'],
    [growth, inPlace ? 'cache growth' : 'cache concatenation'],
    [gather + ((sp - 1) * 2 * kvOne) / sp, "keys and values: each rank's, gathered on rank 0"],
    [loading, `converting an fp32 matrix to ${dtype} while loading`],
  ] as const;
  const breakdown = [
    `weights      ${pad(gib(sp * weights))}  linear layers at ${dtype}${dtype === 'int8' ? ' (+ one fp32 scale per row)' : ''}, norms f32${each}`,
    `embeddings   ${pad(gib(sp * embeddings))}  token embedding table${c.visionVocabSize > 0 ? 's (text and vision)' : ''}, f32${each}`,
    `KV cache     ${pad(gib(kvCache))}  ${c.numLayers} layers x 2 x ${tokenCount(context)} x ${kv} x ${bytesOf[kvDtype]} B${caches > 1 ? ` x ${caches} caches` : ''}${batch > 1 ? ` x batch ${batch}` : ''}`,
    `activations  ${pad(gib(activations))}  ${pieces.filter(([n]) => n > 0).map(([n, what]) => `${what} (${gib(n)})`).join(', ')}`,
    `runtime      ${pad(gib(sp * RUNTIME_BYTES))}  Node.js, TensorFlow.js, native addon, tokenizer${each}`,
    `total        ${pad(gib(total))}`,
  ];
  const options: Required<PlanOptions> = { config: c, context, dtype, kvDtype, sp, prefillChunk: chunk, batch, caches, native, allLogits: opts.allLogits ?? false, inPlaceCache: inPlace };
  return { options, context, dtype, kvDtype, sp, prefillChunk: chunk, batch, caches, weights: sp * weights, embeddings: sp * embeddings, kvCache, activations, runtime: sp * RUNTIME_BYTES, total, kvBytesPerToken, parameters, breakdown };
}

/**
 * Memory this machine can give one run: physical RAM (or the cgroup limit, when lower), less a
 * reserve for the OS and other programs of 10% of it, at least 1 GiB and at most 4 GiB.
 * Total rather than free memory, so the answer does not change with the page cache.
 */
export function availableMemory(): number {
  let total = os.totalmem();
  const limit = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.();
  if (limit && limit > 0 && limit < total) total = limit;
  return Math.max(0, total - Math.min(4 * 2 ** 30, Math.max(2 ** 30, total * 0.1)));
}

/** A GiB budget (`--memory`, or what `source` names) as bytes; this machine's availableMemory() when undefined. */
export function memoryBudget(gibibytes?: number, source = '--memory'): number {
  if (gibibytes === undefined) return availableMemory();
  if (!(Number.isFinite(gibibytes) && gibibytes > 0)) throw new InputError(`${source} must be a positive number of GiB, got ${gibibytes}`);
  return gibibytes * 2 ** 30;
}

/** Everything of PlanOptions but the context. */
export type ContextFreeOptions = Omit<PlanOptions, 'config' | 'context'>;

/**
 * The longest context whose plan fits in `memoryBytes` (0 when not even one token does), at most
 * `limit` (default 2^31). Memory only grows with context, so a binary search finds it.
 */
export function longestContext(config: Readonly<LlamaConfig>, memoryBytes: number, opts: ContextFreeOptions & { limit?: number } = {}): number {
  const { limit = 2 ** 31, ...rest } = opts;
  const fits = (n: number) => planMemory({ ...rest, config, context: n }).total <= memoryBytes;
  if (!fits(1)) return 0;
  if (fits(limit)) return limit;
  let lo = 1;
  let hi = limit;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

export interface Verdict {
  fits: boolean;
  /** One line: 'fits: ...' or 'does not fit: ...', with every part's size and the longest context that fits. */
  text: string;
  /** Longest context that fits the same memory with the same options (0: not even the weights fit). */
  longest: number;
  memory: number;
}

/**
 * Whether `plan` fits in `memoryBytes`, as one line. `memoryLabel` names the budget in the text
 * (default "the <GiB> available": this machine's RAM less its reserve).
 */
export function fitsVerdict(plan: MemoryPlan, memoryBytes: number, memoryLabel = `the ${gib(memoryBytes)} available`): Verdict {
  const { config, ...rest } = plan.options;
  const longest = longestContext(config, memoryBytes, rest);
  const fits = plan.total <= memoryBytes;
  const need = `${tokenCount(plan.context)} of context need ${gib(plan.total)}`;
  if (fits) {
    const pct = Math.round((100 * plan.total) / memoryBytes);
    return { fits, longest, memory: memoryBytes, text: `fits: ${need}, ${pct}% of ${memoryLabel}` };
  }
  const parts = `weights ${gib(plan.weights + plan.embeddings)} + KV cache ${gib(plan.kvCache)} + activations ${gib(plan.activations)} + runtime ${gib(plan.runtime)}`;
  const what =
    longest > 0
      ? `the longest context that fits is ${fmt(longest)} tokens`
      : `the weights alone do not fit: use a smaller model${plan.dtype === 'int8' ? '' : ' or lower-precision weights (int8 is a quarter of f32)'}`;
  return { fits, longest, memory: memoryBytes, text: `does not fit: ${need} (${parts}), more than ${memoryLabel}; ${what}` };
}

/**
 * Throws a one-line InputError with the plan's explanation when `plan` exceeds the memory:
 * "<what> would run out of memory: <verdict>; <hint>". Returns the verdict when it fits.
 */
export function refuseIfTooLarge(plan: MemoryPlan, what: string, opts: { memory?: number; memoryLabel?: string; hint?: string } = {}): Verdict {
  const memory = opts.memory ?? availableMemory();
  const v = fitsVerdict(plan, memory, opts.memoryLabel);
  if (!v.fits) throw new InputError(`${what} would run out of memory: ${v.text.replace(/^does not fit: /, '')}${opts.hint && v.longest > 0 ? `; ${opts.hint}` : ''}`);
  return v;
}

function checkDtype(dtype: string): void {
  if (!(WEIGHT_DTYPES as readonly string[]).includes(dtype)) throw new ConfigError(`weight dtype must be ${WEIGHT_DTYPES.join(', ')}, got ${JSON.stringify(dtype)}`);
}

/** Bytes as GiB (or MiB below 1 GiB), for people. */
export function gib(bytes: number): string {
  if (bytes >= 2 ** 40) return `${(bytes / 2 ** 40).toFixed(2)} TiB`;
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  return `${(bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0)} MiB`;
}

function pad(s: string): string {
  return s.padStart(10);
}

function tokenCount(n: number): string {
  return `${fmt(n)} token${n === 1 ? '' : 's'}`;
}

/** Integer with thousands separators, independent of the locale. */
export function fmt(n: number): string {
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}
