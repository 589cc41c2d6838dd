import { randomInt } from 'node:crypto';
import { badRequest } from './errors.js';

/**
 * Request bodies of /v1/chat/completions and /v1/completions checked into plain options. Every
 * problem is a 400 naming the field (OpenAI's `param`); nothing here touches the model or disk.
 */

export type Body = Record<string, unknown>;

/** Sampling and output options shared by both endpoints. */
export interface SamplingParams {
  /** Undefined: the server's default (the rest of the context unless --max-tokens). */
  maxTokens?: number;
  /** Undefined: greedy for text, LWM's vision-chat 0.2 with images or videos (see DEFAULT_TEMPERATURE). */
  temperature?: number;
  topP: number;
  /** Undefined: all tokens for text, LWM's vision-chat 50 with images or videos. */
  topK?: number;
  minP: number;
  repeatPenalty: number;
  repeatLastN: number;
  seed: number;
  stop: string[];
  ignoreEos: boolean;
  stream: boolean;
  includeUsage: boolean;
  /** Top alternatives per token when log-probabilities are asked for (0 = just the chosen token's). */
  topLogprobs: number;
  logprobs: boolean;
}

/** An image or video as the request named it (resolved against --allowed-media-dir later). */
export interface MediaRef {
  url: string;
  param: string;
}

export interface ChatMessageIn {
  role: 'system' | 'user' | 'assistant';
  text: string;
  media: MediaRef[];
}

export interface ChatTurnIn {
  text: string;
  media: MediaRef[];
  /** The assistant's reply to this turn; absent on the turn to answer (the last). */
  answer?: string;
}

export interface ChatRequest extends SamplingParams {
  model?: string;
  /** From leading system (or developer) messages; undefined when there are none. */
  system?: string;
  turns: ChatTurnIn[];
}

export interface CompletionRequest extends SamplingParams {
  model?: string;
  /** Text (BOS is added, as `lwm generate -p` does) or token ids (used as given). */
  prompt: string | number[];
  echo: boolean;
}

/**
 * With no temperature given, text is decoded greedily (LWM's reference text chat, `lwm generate`
 * and `lwm chat` all are) and images or videos are sampled as LWM's vision chat does (0.2, top-k
 * 50). OpenAI's default would be 1; a client that wants it sends temperature 1.
 */
export const DEFAULT_TEMPERATURE = { text: 0, vision: 0.2 } as const;
export const DEFAULT_TOP_K = { text: 0, vision: 50 } as const;
export const MAX_TOP_LOGPROBS = 20;
const MAX_STOP_STRINGS = 16;

export function requireObject(body: unknown): Body {
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw badRequest('the request body must be a JSON object');
  return body as Body;
}

function given(b: Body, name: string): boolean {
  return b[name] !== undefined && b[name] !== null;
}

function num(b: Body, name: string, rule: { min?: number; max?: number; int?: boolean; minExclusive?: boolean; maxExclusive?: boolean }): number | undefined {
  if (!given(b, name)) return undefined;
  const v = b[name];
  const kind = rule.int ? 'an integer' : 'a number';
  if (typeof v !== 'number' || !Number.isFinite(v) || (rule.int && !Number.isSafeInteger(v))) throw badRequest(`${name} must be ${kind}, got ${JSON.stringify(v)}`, name, 'invalid_type');
  const lo = rule.min === undefined || (rule.minExclusive ? v > rule.min : v >= rule.min);
  const hi = rule.max === undefined || (rule.maxExclusive ? v < rule.max : v <= rule.max);
  if (!lo || !hi) {
    const range = `${rule.min === undefined ? '(-inf' : (rule.minExclusive ? '(' : '[') + rule.min}, ${rule.max === undefined ? 'inf)' : rule.max + (rule.maxExclusive ? ')' : ']')}`;
    throw badRequest(`${name} must be in ${range}, got ${v}`, name, 'invalid_value');
  }
  return v;
}

function bool(b: Body, name: string): boolean | undefined {
  if (!given(b, name)) return undefined;
  if (typeof b[name] !== 'boolean') throw badRequest(`${name} must be true or false, got ${JSON.stringify(b[name])}`, name, 'invalid_type');
  return b[name] as boolean;
}

function stopStrings(b: Body): string[] {
  const v = b['stop'];
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string')) throw badRequest('stop must be a string or an array of strings', 'stop', 'invalid_type');
  if (list.length > MAX_STOP_STRINGS) throw badRequest(`stop takes at most ${MAX_STOP_STRINGS} strings, got ${list.length}`, 'stop', 'invalid_value');
  if (list.some((s) => s === '')) throw badRequest('stop strings must not be empty', 'stop', 'invalid_value');
  return list as string[];
}

/** Options LWM cannot honour are refused rather than silently ignored, so a client never gets output it did not ask for. */
function refuseUnsupported(b: Body): void {
  for (const name of ['presence_penalty', 'frequency_penalty']) {
    const v = num(b, name, { min: -2, max: 2 });
    if (v !== undefined && v !== 0) throw badRequest(`${name} is not supported; use repeat_penalty (llama.cpp's, e.g. 1.1)`, name, 'unsupported_parameter');
  }
  const bias = b['logit_bias'];
  if (bias && typeof bias === 'object' && Object.keys(bias).length > 0) throw badRequest('logit_bias is not supported', 'logit_bias', 'unsupported_parameter');
  if (Array.isArray(b['tools']) && b['tools'].length > 0) throw badRequest('tools (function calling) are not supported', 'tools', 'unsupported_parameter');
  const format = b['response_format'];
  if (format && typeof format === 'object' && (format as Body)['type'] !== 'text') throw badRequest('only response_format {"type":"text"} is supported', 'response_format', 'unsupported_parameter');
  for (const name of ['n', 'best_of']) {
    const v = num(b, name, { int: true, min: 1 });
    if (v !== undefined && v !== 1) throw badRequest(`${name} must be 1: one choice per request`, name, 'unsupported_parameter');
  }
}

function sampling(b: Body): SamplingParams {
  refuseUnsupported(b);
  const model = b['model'];
  if (model !== undefined && model !== null && typeof model !== 'string') throw badRequest('model must be a string', 'model', 'invalid_type');
  const stream = bool(b, 'stream') ?? false;
  const so = b['stream_options'];
  if (so !== undefined && so !== null && (typeof so !== 'object' || Array.isArray(so))) throw badRequest('stream_options must be an object', 'stream_options', 'invalid_type');
  const includeUsage = so ? bool(so as Body, 'include_usage') : undefined;
  const maxTokens = num(b, 'max_completion_tokens', { int: true, min: 0 }) ?? num(b, 'max_tokens', { int: true, min: 0 });
  const seed = num(b, 'seed', { int: true });
  // top_p 0 keeps only the most likely token, which the smallest positive mass does too.
  const topP = num(b, 'top_p', { min: 0, max: 1 });
  return {
    maxTokens,
    temperature: num(b, 'temperature', { min: 0, max: 2 }),
    topP: topP === 0 ? Number.MIN_VALUE : (topP ?? 1),
    topK: num(b, 'top_k', { int: true, min: 0 }),
    minP: num(b, 'min_p', { min: 0, max: 1, maxExclusive: true }) ?? 0,
    repeatPenalty: num(b, 'repeat_penalty', { min: 0, minExclusive: true }) ?? 1,
    repeatLastN: num(b, 'repeat_last_n', { int: true, min: 0 }) ?? 64,
    // OpenAI's semantics: no seed, a fresh draw each time.
    seed: seed === undefined ? randomInt(2 ** 32) : seed >>> 0,
    stop: stopStrings(b),
    ignoreEos: bool(b, 'ignore_eos') ?? false,
    stream,
    includeUsage: stream && (includeUsage ?? false),
    topLogprobs: 0,
    logprobs: false,
  };
}

function modelField(b: Body): { model?: string } {
  return typeof b['model'] === 'string' && b['model'] !== '' ? { model: b['model'] } : {};
}

export function parseChatRequest(body: unknown): ChatRequest {
  const b = requireObject(body);
  const s = sampling(b);
  s.logprobs = bool(b, 'logprobs') ?? false;
  const top = num(b, 'top_logprobs', { int: true, min: 0, max: MAX_TOP_LOGPROBS });
  if (top !== undefined && !s.logprobs) throw badRequest('top_logprobs needs logprobs: true', 'top_logprobs', 'invalid_value');
  s.topLogprobs = top ?? 0;
  const messages = parseMessages(b['messages']);
  return { ...s, ...modelField(b), ...toConversation(messages) };
}

export function parseCompletionRequest(body: unknown): CompletionRequest {
  const b = requireObject(body);
  const s = sampling(b);
  // The legacy endpoint's logprobs is a count of alternatives, not a flag.
  const n = num(b, 'logprobs', { int: true, min: 0, max: MAX_TOP_LOGPROBS });
  s.logprobs = n !== undefined;
  s.topLogprobs = n ?? 0;
  const echo = bool(b, 'echo') ?? false;
  if (echo && s.logprobs) throw badRequest('echo with logprobs (scoring the prompt) is not supported', 'echo', 'unsupported_parameter');
  if (typeof b['suffix'] === 'string' && b['suffix'] !== '') throw badRequest('suffix (insertion) is not supported', 'suffix', 'unsupported_parameter');
  return { ...s, ...modelField(b), prompt: parsePrompt(b['prompt']), echo };
}

function parsePrompt(p: unknown): string | number[] {
  const isIds = (v: unknown): v is number[] => Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x) && x >= 0);
  if (typeof p === 'string') return p;
  if (isIds(p)) return p;
  if (Array.isArray(p) && p.length === 1 && (typeof p[0] === 'string' || isIds(p[0]))) return p[0] as string | number[];
  if (Array.isArray(p) && p.length > 1 && p.every((x) => typeof x === 'string' || Array.isArray(x))) {
    throw badRequest(`prompt holds ${p.length} prompts; give one per request`, 'prompt', 'unsupported_parameter');
  }
  throw badRequest('prompt must be a string or an array of token ids', 'prompt', p === undefined ? 'missing' : 'invalid_type');
}

function parseMessages(raw: unknown): ChatMessageIn[] {
  if (raw === undefined || raw === null) throw badRequest('messages is required: an array of {role, content}', 'messages', 'missing');
  if (!Array.isArray(raw)) throw badRequest('messages must be an array of {role, content}', 'messages', 'invalid_type');
  if (raw.length === 0) throw badRequest('messages is empty; give at least one user message', 'messages', 'invalid_value');
  return raw.map((m: unknown, i) => parseMessage(m, `messages[${i}]`));
}

function parseMessage(m: unknown, where: string): ChatMessageIn {
  if (!m || typeof m !== 'object' || Array.isArray(m)) throw badRequest(`${where} must be an object {role, content}`, where, 'invalid_type');
  const msg = m as Body;
  const role = msg['role'];
  if (role !== 'system' && role !== 'developer' && role !== 'user' && role !== 'assistant') {
    const what = role === 'tool' || role === 'function' ? 'tool results are not supported (no function calling)' : 'role must be system, user or assistant';
    throw badRequest(`${where}: ${what}, got ${JSON.stringify(role)}`, `${where}.role`, 'invalid_value');
  }
  const content = msg['content'];
  const param = `${where}.content`;
  const r = role === 'developer' ? 'system' : role;
  if (typeof content === 'string') return { role: r, text: content, media: [] };
  if ((content === null || content === undefined) && r === 'assistant') return { role: r, text: '', media: [] };
  if (!Array.isArray(content)) throw badRequest(`${param} must be a string or an array of content parts`, param, content === undefined ? 'missing' : 'invalid_type');
  const texts: string[] = [];
  const media: MediaRef[] = [];
  content.forEach((part: unknown, j) => {
    const p = `${param}[${j}]`;
    const got = part && typeof part === 'object' ? (part as Body) : {};
    const type = got['type'];
    if (type === 'text') {
      if (typeof got['text'] !== 'string') throw badRequest(`${p}.text must be a string`, `${p}.text`, 'invalid_type');
      texts.push(got['text']);
      return;
    }
    const url = mediaUrl(got, type);
    if (url === null) throw badRequest(`${p}: unsupported content part type ${JSON.stringify(type)}; use text, image_url, video or video_url`, `${p}.type`, 'invalid_value');
    if (typeof url.value !== 'string' || url.value === '') throw badRequest(`${p}.${url.field} must be a non-empty string`, `${p}.${url.field}`, 'invalid_type');
    if (r !== 'user') throw badRequest(`${p}: images and videos go in user messages`, p, 'invalid_value');
    media.push({ url: url.value, param: `${p}.${url.field}` });
  });
  // Text parts read as one question; LWM's template puts the images and videos after it.
  return { role: r, text: texts.join('\n'), media };
}

function mediaUrl(part: Body, type: unknown): { field: string; value: unknown } | null {
  const inner = (key: string, field: string): { field: string; value: unknown } => {
    const v = part[key];
    // Some clients send image_url as a bare string.
    return typeof v === 'string' ? { field: key, value: v } : { field: `${key}.${field}`, value: v && typeof v === 'object' ? (v as Body)[field] : undefined };
  };
  if (type === 'image_url') return inner('image_url', 'url');
  if (type === 'video_url') return inner('video_url', 'url');
  if (type === 'video') return inner('video', 'path');
  return null;
}

/**
 * LWM's prompt is a system text, then user turns each followed by the assistant's answer: leading
 * system messages become the system text, consecutive messages of one role read as one, and the
 * last message must be the user's (the turn to answer).
 */
function toConversation(messages: ChatMessageIn[]): { system?: string; turns: ChatTurnIn[] } {
  let i = 0;
  const system: string[] = [];
  for (; i < messages.length && messages[i]!.role === 'system'; i++) system.push(messages[i]!.text);
  const turns: ChatTurnIn[] = [];
  for (; i < messages.length; i++) {
    const m = messages[i]!;
    const last = turns.at(-1);
    if (m.role === 'system') throw badRequest(`messages[${i}]: system messages must come before the conversation`, `messages[${i}].role`, 'invalid_value');
    if (m.role === 'assistant') {
      if (!last) throw badRequest(`messages[${i}]: the conversation must start with a user message`, `messages[${i}].role`, 'invalid_value');
      last.answer = last.answer === undefined ? m.text : `${last.answer}\n${m.text}`;
    } else if (last && last.answer === undefined) {
      last.text = `${last.text}\n${m.text}`;
      last.media.push(...m.media);
    } else {
      turns.push({ text: m.text, media: [...m.media] });
    }
  }
  const final = turns.at(-1);
  if (!final || final.answer !== undefined) throw badRequest('the last message must be from the user (the turn to answer)', 'messages', 'invalid_value');
  return { ...(system.length ? { system: system.join('\n') } : {}), turns };
}
