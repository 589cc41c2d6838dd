import * as fs from 'node:fs';
import { InputError } from '../../ops/index.js';
import { concatSegments, type TokenSegment, type Tokenizer } from '../../data/index.js';
import { KVCache, type LlamaModel } from '../../models/index.js';
import { prefillCache } from '../generate.js';
import { streamText, type TextGenerateOptions, type TextResult } from '../textStream.js';
import type { EncodedMedia, MediaEncoder } from './media.js';
import { commonPrefix, loadPromptCache, savePromptCache } from './promptCache.js';
import { userTurnTokens, type TemplateOptions } from './template.js';

export interface ChatSessionOptions {
  /** Replaces LWM's "You are a helpful assistant." */
  system?: string;
  /** Images and videos before the question (see TemplateOptions.visionFirst). */
  visionFirst?: boolean;
  /** Needed for images and videos: turns files into VQ codes (with its on-disk cache). */
  media?: MediaEncoder;
  /** Prompt tokens per forward pass (bounds prefill memory). Default 512. */
  prefillChunk?: number;
  /**
   * A file holding the KV cache of an earlier prompt: the first turn reuses its longest common
   * start with the new prompt and then saves the new prompt's cache there, so a long document or
   * video is processed once for any number of questions.
   */
  promptCache?: string;
}

export interface ChatMessage {
  text: string;
  /** A long document placed before the question. */
  document?: string;
  images?: readonly string[];
  videos?: readonly string[];
}

export interface ChatTurnOptions extends TextGenerateOptions {
  /** Cut the document to fit the context (with room for maxTokens) instead of refusing. */
  truncate?: boolean;
  /** Progress of media encoding and prefill, for a CLI's progress line. */
  onProgress?: (e: { stage: 'encode'; file: string; frames: number } | { stage: 'prefill'; done: number; total: number }) => void;
}

export interface ChatReply extends TextResult {
  media: EncodedMedia[];
  /** Prompt tokens not run by this turn: from the prompt cache or an adopted (ring-prefilled) cache. */
  reusedTokens: number;
  /** Document tokens cut by truncate. */
  truncatedTokens: number;
}

/**
 * A multi-turn conversation whose whole history lives in one KV cache: each turn runs only its
 * own new tokens, never the earlier ones again.
 */
export class ChatSession {
  private cache: KVCache;
  /** Every token of the conversation; the cache holds the first cache.length of them. */
  private history: TokenSegment = { tokens: [], visionMask: [] };
  private promptCacheUsed = false;
  /** Tokens an adopted cache holds, checked against the first turn. */
  private adopted: TokenSegment | null = null;
  turns = 0;

  constructor(
    readonly model: LlamaModel,
    readonly tokenizer: Tokenizer,
    readonly opts: ChatSessionOptions = {},
  ) {
    this.cache = model.newCache();
  }

  /** Tokens of the conversation so far (copies), including any not yet run through the model. */
  get tokens(): TokenSegment {
    return { tokens: [...this.history.tokens], visionMask: [...this.history.visionMask] };
  }

  get cachedTokens(): number {
    return this.cache.length;
  }

  /** Streams the answer to one user message; returns the whole reply when done. */
  async *send(message: ChatMessage, opts: ChatTurnOptions = {}): AsyncGenerator<string, ChatReply> {
    const media: EncodedMedia[] = [];
    const files = [...(message.images ?? []), ...(message.videos ?? [])];
    if (files.length && !this.opts.media) throw new InputError('images and videos need a VQGAN: pass --vqgan DIR (or a model folder with a vqgan/ folder)');
    if (files.length && !this.model.isVision) throw new InputError('this is a text model; images and videos need a vision-language model (LWM-Chat)');
    for (const f of files) {
      media.push(await this.opts.media!.encode(f, (n) => opts.onProgress?.({ stage: 'encode', file: f, frames: n })));
    }
    const first = this.history.tokens.length === 0;
    const template: TemplateOptions = { system: this.opts.system, visionFirst: this.opts.visionFirst };
    const turn = { text: message.text, document: message.document, vision: media.map((m) => m.codes) };
    // A turn after an answer starts with the answer's EOS (conversationTokens' format).
    const sep: TokenSegment = first ? { tokens: [], visionMask: [] } : { tokens: [this.tokenizer.eosId], visionMask: [false] };
    let seg = concatSegments([sep, userTurnTokens(this.tokenizer, turn, first, template)]);
    const maxTokens = opts.maxTokens ?? 128;
    const limit = this.model.config.maxSeqLen;
    let truncatedTokens = 0;
    const total = this.history.tokens.length + seg.tokens.length;
    if (total > limit || (opts.truncate && total + maxTokens > limit)) {
      const over = total + (opts.truncate ? maxTokens : 0) - limit;
      const doc = userTurnTokens(this.tokenizer, turn, first, template).documentTokens;
      if (!opts.truncate || doc === 0 || over >= doc) {
        throw new InputError(
          `the conversation would need ${total} tokens (${seg.tokens.length} for this message) but the model's context is ${limit}` +
            (opts.truncate ? `; --truncate can only cut the document, which has ${doc} tokens` : doc ? '; pass --truncate to cut the document to fit' : '; shorten the message or start a new chat'),
        );
      }
      truncatedTokens = over;
      seg = concatSegments([sep, userTurnTokens(this.tokenizer, turn, first, { ...template, maxDocumentTokens: doc - over })]);
    }
    const before = this.history;
    this.history = concatSegments([this.history, seg]);
    let done = false;
    try {
      const reply = yield* this.run(seg, media, truncatedTokens, maxTokens, opts);
      done = true;
      return reply;
    } finally {
      // A failed or abandoned turn leaves the conversation as it was before it.
      if (!done) {
        this.history = before;
        if (this.cache.length > before.tokens.length) this.cache.truncate(before.tokens.length);
        if (this.cache.length === 0) this.adopted = null;
      }
    }
  }

  private async *run(seg: TokenSegment, media: EncodedMedia[], truncatedTokens: number, maxTokens: number, opts: ChatTurnOptions): AsyncGenerator<string, ChatReply> {
    const t0 = performance.now();
    let adoptedTokens = 0;
    if (this.adopted) {
      const held = this.adopted.tokens.length;
      // At least the last token must run, to give the first logits.
      if (commonPrefix(this.adopted, this.history) !== held || held >= this.history.tokens.length) {
        throw new InputError('the prefilled document is not the start of this message; give the same --file (and --system) as the prefill');
      }
      adoptedTokens = held;
      this.adopted = null;
    }
    const reusedTokens = this.reusePromptCache() + adoptedTokens;
    // The model runs what the cache lacks: the tail of the previous answer, then this turn.
    const pending = {
      tokens: this.history.tokens.slice(this.cache.length),
      visionMask: this.history.visionMask.slice(this.cache.length),
    };
    const chunk = this.opts.prefillChunk ?? 512;
    // Everything but the last token goes into the cache first, so the cache can be saved as the
    // prompt's and the last token (re-run after a load) produces the first logits.
    const head = pending.tokens.length - 1;
    for (let s = 0; s < head; s += chunk) {
      const e = Math.min(head, s + chunk);
      const ok = await prefillCache(this.model, pending.tokens.slice(s, e), this.cache, { visionMask: pending.visionMask.slice(s, e), chunk, signal: opts.signal });
      if (!ok) throw new InputError('the request was cancelled');
      opts.onProgress?.({ stage: 'prefill', done: e, total: pending.tokens.length });
    }
    if (this.opts.promptCache && !this.promptCacheUsed) {
      this.promptCacheUsed = true;
      if (reusedTokens < this.cache.length) {
        savePromptCache(this.opts.promptCache, this.model, this.cache, this.history.tokens.slice(0, this.cache.length), this.history.visionMask.slice(0, this.cache.length));
      }
    }
    const tStream = performance.now();
    const it = streamText(this.model, this.tokenizer, pending.tokens.slice(head), {
      ...opts,
      maxTokens,
      cache: this.cache,
      promptVisionMask: pending.visionMask.slice(head),
      history: this.history.tokens.slice(0, this.cache.length),
      prefillChunk: chunk,
    });
    let r = await it.next();
    while (!r.done) {
      yield r.value;
      r = await it.next();
    }
    const reply = r.value;
    // Generated tokens join the history; the cache already holds all but (usually) the last one.
    this.history = concatSegments([this.history, { tokens: reply.tokens, visionMask: reply.tokens.map(() => false) }]);
    this.turns++;
    // The prompt time covers the whole prefill (and loading a prompt cache), up to the first token.
    const promptMs = reply.timings.promptMs + (tStream - t0);
    return { ...reply, timings: { ...reply.timings, promptMs }, promptTokens: seg.tokens.length, media, reusedTokens, truncatedTokens };
  }

  /** The whole answer at once. */
  async reply(message: ChatMessage, opts: ChatTurnOptions = {}): Promise<ChatReply> {
    const it = this.send(message, opts);
    for (;;) {
      const r = await it.next();
      if (r.done) return r.value;
    }
  }

  /**
   * Starts the conversation from a cache computed elsewhere (ringPrefill over several processes)
   * holding `tokens`, which must be the start of the first turn's tokens (see documentPrefix).
   */
  adoptCache(cache: KVCache, tokens: TokenSegment): void {
    if (this.history.tokens.length || this.cache.length) throw new InputError('adoptCache: the conversation has already started');
    if (cache.length !== tokens.tokens.length) throw new InputError(`adoptCache: the cache holds ${cache.length} tokens, not ${tokens.tokens.length}`);
    this.cache.dispose();
    this.cache = cache;
    this.adopted = tokens;
  }

  /** Forgets the conversation (and frees its cache). */
  reset(): void {
    this.adopted = null;
    this.cache.dispose();
    this.cache = this.model.newCache();
    this.history = { tokens: [], visionMask: [] };
    this.turns = 0;
  }

  dispose(): void {
    this.cache.dispose();
  }

  /** On the first turn: loads the prompt cache file and keeps its longest common start with the history. */
  private reusePromptCache(): number {
    const file = this.opts.promptCache;
    if (!file || this.promptCacheUsed || this.cache.length > 0 || !fs.existsSync(file)) return 0;
    const saved = loadPromptCache(file, this.model);
    // At least the last prompt token must run to give the first logits.
    const keep = Math.min(commonPrefix(saved, this.history), this.history.tokens.length - 1);
    if (keep === 0) {
      saved.cache.dispose();
      return 0;
    }
    saved.cache.truncate(keep);
    this.cache.dispose();
    this.cache = saved.cache;
    return keep;
  }
}
