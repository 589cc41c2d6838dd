import { randomBytes } from 'node:crypto';
import { logSoftmax, topEntries } from '../../ops/index.js';
import type { Tokenizer } from '../../data/index.js';
import type { GenerateStep } from '../generate.js';
import type { TextResult } from '../textStream.js';

/** OpenAI's response objects, built from the library's results. */

export function completionId(kind: 'chat' | 'text'): string {
  return `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
}

export type FinishReason = 'stop' | 'length';

/** End of generation or a stop string is 'stop'; max_tokens or the model's context is 'length'. */
export function finishReason(r: TextResult): FinishReason {
  return r.stoppedBy === 'stop-token' || r.stoppedBy === 'stop-string' ? 'stop' : 'length';
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  prompt_tokens_details: { cached_tokens: number };
}

/** OpenAI's usage, with cached_tokens: prompt tokens reused from an earlier request's cache. */
export function usage(promptTokens: number, completionTokens: number, cachedTokens = 0): Usage {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens, prompt_tokens_details: { cached_tokens: cachedTokens } };
}

/** llama.cpp's `timings` object, which its users' tools read for speed. */
export function timings(r: TextResult): Record<string, number> {
  const { promptMs, generateMs } = r.timings;
  const n = r.tokens.length;
  return {
    prompt_n: r.promptTokens,
    prompt_ms: promptMs,
    prompt_per_second: promptMs > 0 ? (r.promptTokens * 1000) / promptMs : 0,
    predicted_n: n,
    predicted_ms: generateMs,
    predicted_per_second: generateMs > 0 && n > 1 ? ((n - 1) * 1000) / generateMs : 0,
  };
}

/** A token's raw bytes: byte-fallback pieces are one byte, others their UTF-8 with the SentencePiece space restored. */
export function tokenBytes(tok: Tokenizer, id: number): number[] {
  const piece = tok.idToPiece(id);
  const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
  if (byte) return [parseInt(byte[1]!, 16)];
  return [...Buffer.from(piece.replace(/\u2581/g, ' '), 'utf8')];
}

function tokenText(tok: Tokenizer, id: number): { token: string; bytes: number[] } {
  const bytes = tokenBytes(tok, id);
  return { token: Buffer.from(bytes).toString('utf8'), bytes };
}

export interface TokenLogprob {
  id: number;
  logprob: number;
  top: [number, number][];
}

/**
 * Log-probabilities of each chosen token and its top alternatives, from the model's raw
 * distribution (before temperature and penalties), so they do not depend on sampling settings.
 */
export class LogprobRecorder {
  private row: Float64Array | null = null;
  private readonly entries: TokenLogprob[] = [];
  private taken = 0;

  constructor(private readonly k: number) {}

  readonly onLogits = (logits: Float32Array): void => {
    this.row = logSoftmax(logits);
  };

  readonly onStep = (step: GenerateStep): void => {
    const row = this.row;
    if (!row) return;
    this.entries.push({ id: step.token, logprob: row[step.token]!, top: this.k > 0 ? topEntries(row, this.k) : [] });
  };

  /** Entries not taken before (for a stream's next chunk). */
  take(): TokenLogprob[] {
    const out = this.entries.slice(this.taken);
    this.taken = this.entries.length;
    return out;
  }
}

/** Chat's `logprobs.content` entries. */
export function chatLogprobs(tok: Tokenizer, entries: readonly TokenLogprob[]): { content: unknown[] } {
  return {
    content: entries.map((e) => ({
      ...tokenText(tok, e.id),
      logprob: e.logprob,
      top_logprobs: e.top.map(([id, lp]) => ({ ...tokenText(tok, id), logprob: lp })),
    })),
  };
}

/** The legacy completions `logprobs` object; offsets count from `start` characters into the returned text. */
export function textLogprobs(tok: Tokenizer, entries: readonly TokenLogprob[], start: number): Record<string, unknown[]> {
  const out = { tokens: [] as string[], token_logprobs: [] as number[], top_logprobs: [] as Record<string, number>[], text_offset: [] as number[] };
  let offset = start;
  for (const e of entries) {
    const t = tokenText(tok, e.id).token;
    out.tokens.push(t);
    out.token_logprobs.push(e.logprob);
    out.top_logprobs.push(Object.fromEntries(e.top.map(([id, lp]) => [tokenText(tok, id).token, lp])));
    out.text_offset.push(offset);
    offset += t.length;
  }
  return out;
}
