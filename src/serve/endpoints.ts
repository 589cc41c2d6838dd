import type { IncomingMessage, ServerResponse } from 'node:http';
import { validateSampling } from '../../ops/index.js';
import type { TokenSegment, Tokenizer } from '../../data/index.js';
import type { LlamaModel } from '../../models/index.js';
import type { MediaEncoder } from '../chat/media.js';
import { conversationTokens } from '../chat/template.js';
import { validatePrompt } from '../generate.js';
import { streamText, type TextGenerateOptions, type TextResult } from '../textStream.js';
import { badRequest, HttpError } from './errors.js';
import { EventStream, readJson, sendError, sendJson } from './http.js';
import { resolveMediaPath, type MediaRoot } from './mediaPath.js';
import { chatLogprobs, completionId, finishReason, LogprobRecorder, textLogprobs, timings, usage, type TokenLogprob } from './openai.js';
import { DEFAULT_TEMPERATURE, DEFAULT_TOP_K, parseChatRequest, parseCompletionRequest, type ChatTurnIn, type SamplingParams } from './params.js';
import type { SlotQueue } from './queue.js';
import type { KvPool } from './kvPool.js';

/** What the endpoints share: the loaded model and the server's settings. */
export interface EndpointContext {
  model: LlamaModel;
  tok: Tokenizer;
  modelId: string;
  system?: string;
  defaultMaxTokens?: number;
  prefillChunk?: number;
  maxBodyBytes: number;
  mediaRoot: MediaRoot | null;
  media: MediaEncoder | null;
  queue: SlotQueue;
  /** Caches of recent requests, reused when a request starts the same way. */
  kvPool: KvPool;
  /** The abort reason the server uses when it shuts down (told apart from a client leaving). */
  shutdown: unknown;
}

/** Filled in as a request goes, for its log line. */
export interface RequestStats {
  promptTokens: number;
  completionTokens: number;
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

function checkModel(ctx: EndpointContext, model: string | undefined): void {
  if (model !== undefined && model !== ctx.modelId) {
    throw badRequest(`model '${model}' is not served here; this server has '${ctx.modelId}' (see GET /v1/models)`, 'model', 'model_not_found');
  }
}

/** Each turn's media files as real paths; every refusal happens here, before the request queues. */
function mediaFiles(ctx: EndpointContext, turns: readonly ChatTurnIn[]): string[][] {
  const first = turns.flatMap((t) => t.media)[0];
  if (!first) return turns.map(() => []);
  if (!ctx.mediaRoot) {
    throw badRequest('images and videos are refused: the server was started without --allowed-media-dir DIR, the only folder it reads media from', first.param, 'media_not_allowed');
  }
  const files = turns.map((t) => t.media.map((m) => resolveMediaPath(m.url, ctx.mediaRoot!, m.param)));
  if (!ctx.model.isVision) throw badRequest('this is a text model; images and videos need a vision-language model (LWM-Chat)', first.param, 'model_not_vision');
  if (!ctx.media) throw badRequest('images and videos need a VQGAN: start the server with --vqgan DIR', first.param, 'no_vqgan');
  return files;
}

/** The generation options of a request; defaults as documented at DEFAULT_TEMPERATURE. */
function textOptions(ctx: EndpointContext, p: SamplingParams, prompt: TokenSegment, vision: boolean, param: string): TextGenerateOptions {
  const limit = ctx.model.config.maxSeqLen;
  if (prompt.tokens.length > limit) {
    throw badRequest(`the prompt has ${prompt.tokens.length} tokens but the model's context is ${limit}; shorten it`, param, 'context_length_exceeded');
  }
  validatePrompt(ctx.model, prompt.tokens, { visionMask: prompt.visionMask });
  const kind = vision ? 'vision' : 'text';
  const opts: TextGenerateOptions = {
    maxTokens: p.maxTokens ?? Math.min(ctx.defaultMaxTokens ?? Infinity, limit - prompt.tokens.length),
    temperature: p.temperature ?? DEFAULT_TEMPERATURE[kind],
    topK: p.topK ?? DEFAULT_TOP_K[kind],
    topP: p.topP,
    minP: p.minP,
    repeatPenalty: p.repeatPenalty,
    repeatLastN: p.repeatLastN,
    seed: p.seed,
    stop: p.stop,
    ...(p.ignoreEos ? { stopTokens: [] } : {}),
    ...(ctx.prefillChunk ? { prefillChunk: ctx.prefillChunk } : {}),
    promptVisionMask: prompt.visionMask,
  };
  validateSampling(opts);
  return opts;
}

/**
 * Runs one generation, handing each new piece of text (and the log-probabilities of the tokens
 * behind it) to `onPiece`, and lets the event loop run after each, so parallel requests
 * interleave and a client's disconnect is noticed.
 */
async function run(
  ctx: EndpointContext,
  prompt: TokenSegment,
  opts: TextGenerateOptions,
  recorder: LogprobRecorder | null,
  signal: AbortSignal,
  onPiece?: (text: string, logprobs: TokenLogprob[]) => void,
): Promise<TextResult & { cachedTokens: number }> {
  const { cache, reused } = ctx.kvPool.take(prompt);
  let ok = false;
  try {
    const it = streamText(ctx.model, ctx.tok, prompt.tokens.slice(reused), {
      ...opts,
      cache,
      promptVisionMask: prompt.visionMask.slice(reused),
      history: prompt.tokens.slice(0, reused),
      signal,
      ...(recorder ? { onLogits: recorder.onLogits, onStep: recorder.onStep } : {}),
    });
    for (;;) {
      const r = await it.next();
      if (r.done) {
        ok = true;
        const all = [...prompt.tokens, ...r.value.tokens];
        ctx.kvPool.give(cache, { tokens: all, visionMask: all.map((_, i) => prompt.visionMask[i] ?? false) });
        return { ...r.value, promptTokens: prompt.tokens.length, cachedTokens: reused };
      }
      onPiece?.(r.value, recorder?.take() ?? []);
      await tick();
    }
  } finally {
    // A failed forward may leave some layers a token ahead of the others: never reuse that cache.
    if (!ok) cache.dispose();
  }
}

/** True when the generation ended because of an abort; a shutdown still owes the client an answer. */
function stoppedEarly(ctx: EndpointContext, res: ServerResponse, result: TextResult, signal: AbortSignal): boolean {
  if (result.stoppedBy !== 'aborted') return false;
  if (signal.reason === ctx.shutdown) sendError(res, new HttpError(503, 'the server is shutting down', { code: 'shutting_down' }));
  return true;
}

export async function chatCompletions(ctx: EndpointContext, req: IncomingMessage, res: ServerResponse, stats: RequestStats, signal: AbortSignal): Promise<void> {
  const r = parseChatRequest(await readJson(req, ctx.maxBodyBytes));
  checkModel(ctx, r.model);
  const files = mediaFiles(ctx, r.turns);
  const vision = files.some((f) => f.length > 0);
  const release = await ctx.queue.acquire(signal);
  try {
    const codes: Int32Array[][] = [];
    for (const turn of files) {
      const list: Int32Array[] = [];
      for (const f of turn) list.push((await ctx.media!.encode(f)).codes);
      codes.push(list);
      if (signal.aborted) throw signal.reason;
    }
    const prompt = conversationTokens(
      ctx.tok,
      r.turns.map((t, i) => ({ user: { text: t.text, vision: codes[i] }, ...(t.answer !== undefined ? { answer: ctx.tok.encode(t.answer) } : {}) })),
      { system: r.system ?? ctx.system },
    );
    const opts = textOptions(ctx, r, prompt, vision, 'messages');
    stats.promptTokens = prompt.tokens.length;
    const recorder = r.logprobs ? new LogprobRecorder(r.topLogprobs) : null;
    const lp = (e: TokenLogprob[]): unknown => (recorder ? chatLogprobs(ctx.tok, e) : null);
    const meta = { id: completionId('chat'), created: Math.floor(Date.now() / 1000), model: ctx.modelId };
    if (r.stream) {
      const es = new EventStream(res);
      const chunk = (delta: object, finish: string | null, logprobs: unknown): object => ({
        ...meta,
        object: 'chat.completion.chunk',
        choices: [{ index: 0, delta, logprobs, finish_reason: finish }],
        ...(r.includeUsage ? { usage: null } : {}),
      });
      es.send(chunk({ role: 'assistant', content: '' }, null, null));
      const result = await run(ctx, prompt, opts, recorder, signal, (text, e) => es.send(chunk({ content: text }, null, lp(e))));
      stats.completionTokens = result.tokens.length;
      if (stoppedEarly(ctx, res, result, signal)) return;
      es.send(chunk({}, finishReason(result), recorder ? lp(recorder.take()) : null));
      if (r.includeUsage) es.send({ ...meta, object: 'chat.completion.chunk', choices: [], usage: usage(prompt.tokens.length, result.tokens.length, result.cachedTokens) });
      es.done();
      return;
    }
    const result = await run(ctx, prompt, opts, recorder, signal);
    stats.completionTokens = result.tokens.length;
    if (stoppedEarly(ctx, res, result, signal)) return;
    sendJson(res, 200, {
      ...meta,
      object: 'chat.completion',
      choices: [{ index: 0, message: { role: 'assistant', content: result.text }, logprobs: recorder ? lp(recorder.take()) : null, finish_reason: finishReason(result) }],
      usage: usage(prompt.tokens.length, result.tokens.length, result.cachedTokens),
      timings: timings(result),
    });
  } finally {
    release();
  }
}

export async function completions(ctx: EndpointContext, req: IncomingMessage, res: ServerResponse, stats: RequestStats, signal: AbortSignal): Promise<void> {
  const r = parseCompletionRequest(await readJson(req, ctx.maxBodyBytes));
  checkModel(ctx, r.model);
  // Text gets BOS as `lwm generate -p` does; token ids are taken as given, as --prompt-tokens.
  const ids = typeof r.prompt === 'string' ? ctx.tok.encode(r.prompt, { bos: true }) : r.prompt;
  const prompt: TokenSegment = { tokens: ids, visionMask: ids.map(() => false) };
  const opts = textOptions(ctx, r, prompt, false, 'prompt');
  const release = await ctx.queue.acquire(signal);
  try {
    stats.promptTokens = ids.length;
    const echo = r.echo ? (typeof r.prompt === 'string' ? r.prompt : ctx.tok.decode(r.prompt)) : '';
    const recorder = r.logprobs ? new LogprobRecorder(r.topLogprobs) : null;
    let offset = echo.length;
    const lp = (e: TokenLogprob[]): unknown => (recorder ? textLogprobs(ctx.tok, e, offset) : null);
    const meta = { id: completionId('text'), object: 'text_completion', created: Math.floor(Date.now() / 1000), model: ctx.modelId };
    const choice = (text: string, logprobs: unknown, finish: string | null): object => ({ text, index: 0, logprobs, finish_reason: finish });
    if (r.stream) {
      const es = new EventStream(res);
      const chunk = (c: object): object => ({ ...meta, choices: [c], ...(r.includeUsage ? { usage: null } : {}) });
      if (echo) es.send(chunk(choice(echo, null, null)));
      const result = await run(ctx, prompt, opts, recorder, signal, (text, e) => {
        es.send(chunk(choice(text, lp(e), null)));
        offset += text.length;
      });
      stats.completionTokens = result.tokens.length;
      if (stoppedEarly(ctx, res, result, signal)) return;
      es.send(chunk(choice('', recorder ? lp(recorder.take()) : null, finishReason(result))));
      if (r.includeUsage) es.send({ ...meta, choices: [], usage: usage(ids.length, result.tokens.length, result.cachedTokens) });
      es.done();
      return;
    }
    const result = await run(ctx, prompt, opts, recorder, signal);
    stats.completionTokens = result.tokens.length;
    if (stoppedEarly(ctx, res, result, signal)) return;
    sendJson(res, 200, {
      ...meta,
      choices: [choice(echo + result.text, recorder ? lp(recorder.take()) : null, finishReason(result))],
      usage: usage(ids.length, result.tokens.length, result.cachedTokens),
      timings: timings(result),
    });
  } finally {
    release();
  }
}
