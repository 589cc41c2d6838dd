import * as tf from '@tensorflow/tfjs';
import { InputError, logSoftmax, Rng, sampleToken, topEntries, validateSampling, type SamplingOptions } from '../ops/index.js';
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
  /** Called with each step as soon as it is chosen (for streaming), before generate() returns. */
  onStep?: (step: GenerateStep) => void;
}

export interface GenerateStep {
  token: number;
  /** [id, logprob] pairs, most likely first (only with topLogprobs). */
  top?: [number, number][];
}

export interface GenerateResult {
  prompt: number[];
  tokens: number[];
  steps: GenerateStep[];
  /** prompt_top[i]: top tokens after prompt[0..i] (only with echo). */
  promptTop?: [number, number][][];
  stoppedBy: 'stop-token' | 'max-tokens' | 'context';
  timings: { promptMs: number; generateMs: number };
}

/** Checks ids before any tensor work, so bad input never reaches the model. */
export function validatePrompt(model: LlamaModel, prompt: readonly number[]): void {
  if (prompt.length === 0) throw new InputError('the prompt is empty; give text (-p) or token ids (--prompt-tokens)');
  const v = model.config.vocabSize;
  prompt.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= v) throw new InputError(`prompt token ${i} is ${id}, outside the vocabulary [0, ${v})`);
  });
  if (prompt.length > model.config.maxSeqLen) {
    throw new InputError(`the prompt has ${prompt.length} tokens but the model's context is ${model.config.maxSeqLen}; shorten it`);
  }
}

/**
 * Decodes with a KV cache: one prefill over the prompt, then one token per step. Yields each
 * step as soon as it is chosen, so callers can stream text.
 */
export async function* generateTokens(
  model: LlamaModel,
  prompt: readonly number[],
  opts: GenerateOptions = {},
  onPromptTop?: (top: [number, number][][]) => void,
): AsyncGenerator<GenerateStep, GenerateResult['stoppedBy']> {
  validatePrompt(model, prompt);
  validateSampling(opts);
  const maxTokens = opts.maxTokens ?? 128;
  if (!Number.isInteger(maxTokens) || maxTokens < 0) throw new InputError(`max-tokens must be a non-negative integer, got ${maxTokens}`);
  const topK = opts.topLogprobs ?? 0;
  const stop = new Set(opts.stopTokens ?? [model.config.eosTokenId]);
  const rng = new Rng(opts.seed ?? 0);
  const cache = new KVCache(model.config.numLayers);
  try {
    let logits = await runStep(model, prompt, cache, !!opts.echo, opts.prefillBlockSize ?? 0);
    const vocab = model.config.vocabSize;
    if (opts.echo && onPromptTop) {
      const rows = logits.length / vocab;
      const top: [number, number][][] = [];
      for (let r = 0; r < rows; r++) top.push(topEntries(logSoftmax(logits.subarray(r * vocab, (r + 1) * vocab)), Math.max(topK, 1)));
      onPromptTop(top);
      logits = logits.subarray((rows - 1) * vocab);
    }
    for (let n = 0; n < maxTokens; n++) {
      const token = sampleToken(logits, opts, rng);
      if (stop.has(token)) return 'stop-token';
      yield topK > 0 ? { token, top: topEntries(logSoftmax(logits), topK) } : { token };
      if (n === maxTokens - 1) break;
      if (cache.length >= model.config.maxSeqLen) return 'context';
      logits = await runStep(model, [token], cache, false, 0);
    }
    return 'max-tokens';
  } finally {
    cache.dispose();
  }
}

/** Runs tokens through the model and returns the logits of the last (or, with all, every) position. */
async function runStep(model: LlamaModel, tokens: readonly number[], cache: KVCache, all: boolean, blockSize: number): Promise<Float32Array> {
  const out = tf.tidy(() => {
    const ids = tf.tensor2d([Array.from(tokens)], [1, tokens.length], 'int32');
    return model.forward(ids, { cache, lastOnly: !all, attentionBlockSize: blockSize });
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
