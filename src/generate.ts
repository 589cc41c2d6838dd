import * as tf from '@tensorflow/tfjs';
import { applyRepeatPenalty, InputError, logSoftmax, Rng, sampleToken, topEntries, validateSampling, type SamplingOptions } from '../ops/index.js';
import { KVCache } from '../models/kvCache.js';
import type { LlamaModel } from '../models/llama.js';

export interface GenerateOptions extends SamplingOptions {
  /** New tokens to produce at most. Default 128. */
  maxTokens?: number;
  /** Seed for sampling. Default 0. */
  seed?: number;
  /** Also report the K most likely tokens with natural-log probabilities at each step. Default 0. */
  topLogprobs?: number;
  /** Also score every prompt position (prompt_top). Default false. */
  echo?: boolean;
  /** Token ids that end generation (not emitted). Default: the model's EOS. Empty = never stop early. */
  stopTokens?: number[];
  /** Queries per attention block during prefill (bounds memory). Default 0 (one block). */
  prefillBlockSize?: number;
  /**
   * Prompt tokens per forward pass: a long prompt goes through the KV cache in chunks, so
   * activation memory stays that of one chunk and the cache grows linearly. Default 512.
   */
  prefillChunk?: number;
  /**
   * Continue from these cached tokens (a chat history or a loaded prompt cache): the prompt is
   * appended to it. The caller owns it; the last sampled token is not run, so it is not in it.
   */
  cache?: KVCache;
  /** Per prompt token: true for vision-vocabulary ids (vision-language models). */
  promptVisionMask?: readonly boolean[];
  /** Tokens already in `cache`, newest last; only the repeat penalty reads them. */
  history?: readonly number[];
  /** Called with each step as soon as it is chosen (for streaming), before generate() returns. */
  onStep?: (step: GenerateStep) => void;
  /** Raw next-token logits before each choice (step 0 is right after the prompt); read-only. */
  onLogits?: (logits: Float32Array, step: number) => void;
  /** Stops generation before the next step (stoppedBy 'aborted'). */
  signal?: AbortSignal;
}

export interface GenerateStep {
  token: number;
  /** [id, logprob] pairs, most likely first (only with topLogprobs). */
  top?: [number, number][];
}

export type StopReason = 'stop-token' | 'max-tokens' | 'context' | 'aborted';

export interface GenerateResult {
  prompt: number[];
  tokens: number[];
  steps: GenerateStep[];
  /** prompt_top[i]: top tokens after prompt[0..i] (only with echo). */
  promptTop?: [number, number][][];
  stoppedBy: StopReason;
  timings: { promptMs: number; generateMs: number };
}

/** Checks ids before any tensor work, so bad input never reaches the model. */
export function validatePrompt(model: LlamaModel, prompt: readonly number[], opts: { cached?: number; visionMask?: readonly boolean[] } = {}): void {
  if (prompt.length === 0) throw new InputError('the prompt is empty; give text (-p) or token ids (--prompt-tokens)');
  const { vocabSize: v, visionVocabSize: vv } = model.config;
  const vm = opts.visionMask;
  if (vm && vm.length !== prompt.length) throw new InputError(`the prompt has ${prompt.length} tokens but its vision mask has ${vm.length}`);
  if (vm?.some(Boolean) && vv === 0) throw new InputError('the prompt holds image or video tokens but this is a text model; load a vision-language model (LWM-Chat)');
  prompt.forEach((id, i) => {
    const limit = vm?.[i] ? vv : v;
    if (!Number.isInteger(id) || id < 0 || id >= limit) throw new InputError(`prompt token ${i} is ${id}, outside the ${vm?.[i] ? 'vision ' : ''}vocabulary [0, ${limit})`);
  });
  const cached = opts.cached ?? 0;
  if (cached + prompt.length > model.config.maxSeqLen) {
    const what = cached ? `${cached} tokens of history plus a prompt of ${prompt.length}` : `the prompt has ${prompt.length} tokens`;
    throw new InputError(`${what}, but the model's context is ${model.config.maxSeqLen} tokens; shorten it (lwm chat: --truncate cuts the document to fit)`);
  }
}

/**
 * Decodes with a KV cache: a prefill over the prompt, then one token per step. Yields each
 * step as soon as it is chosen, so callers can stream text.
 */
export async function* generateTokens(
  model: LlamaModel,
  prompt: readonly number[],
  opts: GenerateOptions = {},
  onPromptTop?: (top: [number, number][][]) => void,
): AsyncGenerator<GenerateStep, StopReason> {
  const own = !opts.cache;
  // Room for the whole request up front (a model's kvCapacity, when larger, was planned for).
  const cache = opts.cache ?? model.newCache(Math.max(model.kvCapacity, prompt.length + (opts.maxTokens ?? 128)));
  try {
    validatePrompt(model, prompt, { cached: cache.length, visionMask: opts.promptVisionMask });
    validateSampling(opts);
    const maxTokens = opts.maxTokens ?? 128;
    if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new InputError(`max-tokens must be a non-negative integer, got ${maxTokens}`);
    const chunk = opts.prefillChunk ?? 512;
    if (!Number.isInteger(chunk) || chunk < 1) throw new InputError(`prefill chunk must be a positive integer, got ${chunk}`);
    if (opts.echo && !own) throw new InputError('echo (scoring the prompt) needs a fresh cache');
    const topK = opts.topLogprobs ?? 0;
    const stop = new Set(opts.stopTokens ?? [model.config.eosTokenId]);
    const rng = new Rng(opts.seed ?? 0);
    const penalty = opts.repeatPenalty ?? 1;
    const lastN = opts.repeatLastN ?? 64;
    const recent = penalty !== 1 ? [...(opts.history ?? []).slice(-lastN), ...prompt].slice(-lastN) : [];
    const vocab = model.config.vocabSize;
    let logits = await prefill(model, prompt, opts.promptVisionMask, cache, !!opts.echo, opts.prefillBlockSize ?? 0, opts.echo ? prompt.length : chunk, opts.signal);
    if (!logits) return 'aborted';
    if (opts.echo && onPromptTop) {
      const rows = logits.length / vocab;
      const top: [number, number][][] = [];
      for (let r = 0; r < rows; r++) top.push(topEntries(logSoftmax(logits.subarray(r * vocab, (r + 1) * vocab)), Math.max(topK, 1)));
      onPromptTop(top);
    }
    if (logits.length > vocab) logits = logits.subarray(logits.length - vocab);
    for (let n = 0; n < maxTokens; n++) {
      opts.onLogits?.(logits, n);
      const scored = penalty !== 1 ? applyRepeatPenalty(logits, recent, penalty) : logits;
      const token = sampleToken(scored, opts, rng);
      if (stop.has(token)) return 'stop-token';
      yield topK > 0 ? { token, top: topEntries(logSoftmax(scored), topK) } : { token };
      if (penalty !== 1) {
        recent.push(token);
        if (recent.length > lastN) recent.shift();
      }
      if (n === maxTokens - 1) break;
      if (cache.length >= model.config.maxSeqLen) return 'context';
      if (opts.signal?.aborted) return 'aborted';
      logits = await runStep(model, [token], null, cache, false, 0);
    }
    return 'max-tokens';
  } finally {
    if (own) cache.dispose();
  }
}

/**
 * Appends tokens to a KV cache without sampling anything (e.g. a document, to be saved as a
 * prompt cache), in chunks of `chunk` tokens. False when aborted between chunks.
 */
export async function prefillCache(
  model: LlamaModel,
  tokens: readonly number[],
  cache: KVCache,
  opts: { visionMask?: readonly boolean[]; chunk?: number; signal?: AbortSignal } = {},
): Promise<boolean> {
  if (tokens.length === 0) return true;
  validatePrompt(model, tokens, { cached: cache.length, visionMask: opts.visionMask });
  return (await prefill(model, tokens, opts.visionMask, cache, false, 0, opts.chunk ?? 512, opts.signal)) !== null;
}

/**
 * Runs the prompt through the cache chunk by chunk; returns the last position's logits (every
 * position's with all), or null when aborted between chunks.
 */
async function prefill(
  model: LlamaModel,
  prompt: readonly number[],
  vision: readonly boolean[] | undefined,
  cache: KVCache,
  all: boolean,
  blockSize: number,
  chunk: number,
  signal?: AbortSignal,
): Promise<Float32Array | null> {
  let logits: Float32Array | null = null;
  for (let s = 0; s < prompt.length; s += chunk) {
    if (signal?.aborted) return null;
    const e = Math.min(prompt.length, s + chunk);
    logits = await runStep(model, prompt.slice(s, e), vision?.slice(s, e) ?? null, cache, all, blockSize);
    // Yield between chunks, so a long prefill lets signals and HTTP requests through.
    if (e < prompt.length) await new Promise((r) => setImmediate(r));
  }
  return logits;
}

/** Runs tokens through the model and returns the logits of the last (or, with all, every) position. */
async function runStep(model: LlamaModel, tokens: readonly number[], vision: readonly boolean[] | null, cache: KVCache, all: boolean, blockSize: number): Promise<Float32Array> {
  const out = tf.tidy(() => {
    const ids = tf.tensor2d([Array.from(tokens)], [1, tokens.length], 'int32');
    // Vision ids need the mask on the embedding; a lone text step needs no mask (sampleMode 'text' picks the text table).
    const visionMask = model.isVision && vision && (tokens.length > 1 || vision[0]) ? tf.tensor2d([vision.map((b) => (b ? 1 : 0))], [1, tokens.length], 'int32') : undefined;
    return model.forward(ids, { cache, lastOnly: !all, attentionBlockSize: blockSize, visionMask });
  });
  try {
    return (await out.data()) as Float32Array;
  } finally {
    out.dispose();
  }
}

/** Generates to completion and collects everything `lwm generate --json` reports. */
export async function generate(model: LlamaModel, prompt: readonly number[], opts: GenerateOptions = {}): Promise<GenerateResult> {
  const t0 = performance.now();
  let promptTop: [number, number][][] | undefined;
  const steps: GenerateStep[] = [];
  const it = generateTokens(model, prompt, opts, (top) => (promptTop = top));
  let r = await it.next();
  // With maxTokens 0 the first result is already the end; the prompt time is still right.
  const tFirst = performance.now();
  while (!r.done) {
    steps.push(r.value);
    opts.onStep?.(r.value);
    r = await it.next();
  }
  const t1 = performance.now();
  return {
    prompt: [...prompt],
    tokens: steps.map((s) => s.token),
    steps,
    ...(opts.echo ? { promptTop } : {}),
    stoppedBy: r.value,
    timings: { promptMs: tFirst - t0, generateMs: t1 - tFirst },
  };
}
