/**
 * Where question-answer replies come from: any OpenAI-compatible server (lwm serve, llama.cpp's
 * server, ollama, vLLM…) or a model loaded in this process. Attempt 0 is greedy; a retry after a
 * rejected reply samples (temperature 0.7, seed = attempt), so it can say something else.
 */
import { LwmError } from '../../ops/errors.js';
import type { Tokenizer } from '../../data/tokenizer.js';
import type { LlamaModel } from '../../models/index.js';
import { userTurnTokens } from '../chat/template.js';
import { generateText } from '../textStream.js';

export interface QaGenerator {
  /** What produced the replies: part of the cache key, so another model never reuses them. */
  readonly id: string;
  /** Requests may run this many at once. */
  readonly maxParallel: number;
  reply(prompt: string, attempt: number): Promise<string>;
}

/** A server that kept failing: the run stops (its finished chunks stay cached). */
export class ServerError extends LwmError {}

export const MAX_REPLY_TOKENS = 256;
const RETRY_TEMPERATURE = 0.7;

export interface EndpointOptions {
  url: string;
  modelName: string;
  /** Per request. Default 120 s. */
  timeoutMs?: number;
  /** Further tries after a network error, timeout, 429 or 5xx. Default 4. */
  retries?: number;
  /** First backoff; doubles per try. Default 500 ms. */
  backoffMs?: number;
  apiKey?: string;
  /** Reply length limit. Default MAX_REPLY_TOKENS. */
  maxTokens?: number;
}

/** The chat-completions URL of a base URL given as http://host:port, …/v1 or the full path. */
export function chatCompletionsUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ServerError(`--endpoint ${JSON.stringify(url)} is not a URL; give e.g. http://127.0.0.1:8080/v1`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ServerError(`--endpoint ${url}: only http and https are supported`);
  const p = u.pathname.replace(/\/+$/, '');
  u.pathname = p.endsWith('/chat/completions') ? p : p.endsWith('/v1') ? `${p}/chat/completions` : `${p}/v1/chat/completions`;
  return u.toString();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function oneLine(s: string, n = 160): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > n ? `${t.slice(0, n)}…` : t;
}

export function endpointGenerator(o: EndpointOptions, parallel: number): QaGenerator {
  const url = chatCompletionsUrl(o.url);
  const timeoutMs = o.timeoutMs ?? 120_000;
  const retries = o.retries ?? 4;
  const backoff = o.backoffMs ?? 500;
  return {
    id: `endpoint:${o.modelName}`,
    maxParallel: parallel,
    async reply(prompt: string, attempt: number): Promise<string> {
      const body = JSON.stringify({
        model: o.modelName,
        messages: [{ role: 'user', content: prompt }],
        max_tokens: o.maxTokens ?? MAX_REPLY_TOKENS,
        temperature: attempt === 0 ? 0 : RETRY_TEMPERATURE,
        seed: attempt,
        stream: false,
      });
      let last = '';
      for (let tryNo = 0; tryNo <= retries; tryNo++) {
        if (tryNo > 0) await sleep(backoff * 2 ** (tryNo - 1));
        let res: Response;
        try {
          res = await fetch(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json', ...(o.apiKey ? { authorization: `Bearer ${o.apiKey}` } : {}) },
            body,
            signal: AbortSignal.timeout(timeoutMs),
          });
        } catch (e) {
          const err = e as Error & { cause?: { code?: string; message?: string } };
          last = err.name === 'TimeoutError' ? `no reply within ${timeoutMs / 1000} s` : `${err.cause?.code ?? err.cause?.message ?? err.message}`;
          continue;
        }
        const text = await res.text().catch((e: Error) => `(body unreadable: ${e.message})`);
        if (res.status === 429 || res.status >= 500) {
          last = `HTTP ${res.status}: ${oneLine(text)}`;
          continue;
        }
        if (!res.ok) throw new ServerError(`${url} refused the request (HTTP ${res.status}: ${oneLine(text)}); check --endpoint and --model-name`);
        let content: unknown;
        try {
          content = (JSON.parse(text) as { choices?: { message?: { content?: unknown } }[] }).choices?.[0]?.message?.content;
        } catch {
          content = undefined;
        }
        if (typeof content !== 'string') {
          last = `a reply without choices[0].message.content: ${oneLine(text)}`;
          continue;
        }
        return content;
      }
      throw new ServerError(`${url} failed ${retries + 1} times (last: ${last}); check that the server is up, or raise --timeout / --server-retries; finished chunks are cached, so rerun to resume`);
    },
  };
}

/** Replies from a model in this process, in LWM's chat template. */
export function localGenerator(model: LlamaModel, tok: Tokenizer, id: string, maxTokens = MAX_REPLY_TOKENS): QaGenerator {
  return {
    id: `local:${id}`,
    maxParallel: 1,
    async reply(prompt: string, attempt: number): Promise<string> {
      const ids = userTurnTokens(tok, { text: prompt }, true).tokens;
      const maxLen = model.config.maxSeqLen;
      if (ids.length + maxTokens > maxLen) {
        throw new LwmError(`a chunk's prompt is ${ids.length} tokens, over the model's context of ${maxLen} with ${maxTokens} to write; lower --chunk-tokens`);
      }
      const r = await generateText(model, tok, ids, { maxTokens, temperature: attempt === 0 ? 0 : RETRY_TEMPERATURE, seed: attempt });
      return r.text;
    },
  };
}
