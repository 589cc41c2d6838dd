/**
 * Synthetic passkey retrieval (llama.cpp's passkey example; the long-context papers' test): a
 * repetitive filler with one sentence giving a random number at some depth, then a question whose
 * answer is that number. Copying it is an induction-head task, so even a tiny model can learn it
 * in minutes, and the filler is repetitive so it costs the model almost nothing to learn.
 *
 * Token counts are exact without encoding whole examples: every sentence starts a new word, and the
 * LLaMA vocabulary has no piece that crosses a space, so an example's tokens are the sum of its
 * sentences' (measured once per tokenizer).
 */
import { ConfigError, InputError } from '../ops/errors.js';
import { mulberry32 } from './batches.js';
import { defaultTokenizer, type Tokenizer } from './tokenizer.js';

export const FILLER_SENTENCES: readonly string[] = Object.freeze([
  'The grass is green.',
  'The sky is blue.',
  'The sun is yellow.',
  'Here we go.',
  'There and back again.',
]);

/** The question is not trained on, only the answer: the model must fetch the digits from the text. */
export const PASSKEY_FIELDS = '[text+question],answer';
export const PASSKEY_QUESTION = 'What is the pass key? The pass key is';

export interface PasskeyRecord {
  fields: typeof PASSKEY_FIELDS;
  text: string;
  question: string;
  /**
   * The digits and a period, without a leading space: the field is encoded on its own, so
   * SentencePiece's dummy prefix gives `▁ 7 1 4 3 2 .`, the same pieces as after "is" in the text.
   */
  answer: string;
  passkey: string;
  /** Filler sentences before the passkey / all filler sentences (0: at the start, 1: at the end). */
  depth: number;
  /** Tokens of the example as `lwm prepare` lays it out (BOS and EOS included). */
  tokens: number;
}

export interface PasskeyOptions {
  /** Filler sentences (cycling through FILLER_SENTENCES); give this or targetTokens. */
  fillerSentences?: number;
  /** Fill up to this many tokens (BOS and EOS included) without going over. */
  targetTokens?: number;
  /** Digits of the passkey (the first is never 0). Default 5. */
  digits?: number;
  /** Where the passkey goes, 0..1; default random. */
  depth?: number;
  tokenizer?: Tokenizer;
}

export function passkeySentence(passkey: string): string {
  return `The pass key is ${passkey}. Remember it. ${passkey} is the pass key.`;
}

/** The prompt a model answers: what processExample joins the unlossed fields into (subfield separator ' '). */
export function passkeyPrompt(r: Pick<PasskeyRecord, 'text' | 'question'>): string {
  return `${r.text} ${r.question}`;
}

const fillerCounts = new WeakMap<Tokenizer, number[]>();

function sentenceTokens(tok: Tokenizer): number[] {
  let c = fillerCounts.get(tok);
  if (!c) {
    c = FILLER_SENTENCES.map((s) => tok.encode(s).length);
    fillerCounts.set(tok, c);
  }
  return c;
}

function checkInt(name: string, v: number, min: number, max = Infinity): void {
  if (!Number.isInteger(v) || v < min || v > max) throw new ConfigError(`passkey ${name} must be an integer in [${min}, ${max}], got ${v}`);
}

/** One passkey example; `rng` (or a mulberry32 seed) draws the digits and, unless given, the depth. */
export function passkeyExample(rng: number | (() => number), opts: PasskeyOptions): PasskeyRecord {
  const rand = typeof rng === 'number' ? mulberry32(rng) : rng;
  const tok = opts.tokenizer ?? defaultTokenizer();
  const digits = opts.digits ?? 5;
  checkInt('digits', digits, 1, 64);
  let passkey = String(1 + Math.floor(rand() * 9));
  while (passkey.length < digits) passkey += String(Math.floor(rand() * 10));
  const depth = opts.depth ?? rand();
  if (!(depth >= 0 && depth <= 1)) throw new ConfigError(`passkey depth must be in [0, 1], got ${depth}`);

  const answer = `${passkey}.`;
  const key = passkeySentence(passkey);
  const fixed = 2 + tok.encode(key).length + tok.encode(PASSKEY_QUESTION).length + tok.encode(answer).length;
  const counts = sentenceTokens(tok);
  let n: number;
  let used = 0;
  if (opts.fillerSentences !== undefined) {
    checkInt('fillerSentences', opts.fillerSentences, 0);
    n = opts.fillerSentences;
    for (let i = 0; i < n; i++) used += counts[i % counts.length] as number;
  } else if (opts.targetTokens !== undefined) {
    checkInt('targetTokens', opts.targetTokens, fixed);
    const budget = opts.targetTokens - fixed;
    const cycle = counts.reduce((a, b) => a + b, 0);
    n = Math.floor(budget / cycle) * counts.length;
    used = (n / counts.length) * cycle;
    while (used + (counts[n % counts.length] as number) <= budget) used += counts[n++ % counts.length] as number;
  } else {
    throw new ConfigError('passkeyExample needs fillerSentences or targetTokens');
  }

  const at = Math.round(depth * n);
  const sentences: string[] = [];
  for (let i = 0; i < n; i++) {
    if (i === at) sentences.push(key);
    sentences.push(FILLER_SENTENCES[i % FILLER_SENTENCES.length] as string);
  }
  if (at === n) sentences.push(key);
  return { fields: PASSKEY_FIELDS, text: sentences.join(' '), question: PASSKEY_QUESTION, answer, passkey, depth: n === 0 ? 0 : at / n, tokens: fixed + used };
}

export interface PasskeyDatasetOptions {
  count: number;
  seed: number;
  /** Default 256. */
  targetTokens?: number;
  /** Default 5. */
  digits?: number;
  tokenizer?: Tokenizer;
}

/** `count` examples of the same length, passkeys and depths drawn from mulberry32(seed). */
export function passkeyDataset(o: PasskeyDatasetOptions): PasskeyRecord[] {
  checkInt('count', o.count, 0);
  checkInt('seed', o.seed, -(2 ** 31), 2 ** 32 - 1);
  const rand = mulberry32(o.seed);
  const opts: PasskeyOptions = { targetTokens: o.targetTokens ?? 256, digits: o.digits ?? 5, tokenizer: o.tokenizer };
  return Array.from({ length: o.count }, () => passkeyExample(rand, opts));
}

/**
 * Whether a generated answer starts with the passkey: leading whitespace and spaces between digits
 * are ignored (detokenizers differ on the dummy-prefix space), but extra leading digits are wrong.
 */
export function scorePasskey(generatedText: string, passkey: string): boolean {
  if (!/^\d+$/.test(passkey)) throw new InputError(`a passkey is a string of digits, got ${JSON.stringify(passkey)}`);
  const lead = /^[\s\d]*/.exec(generatedText)?.[0] ?? '';
  return lead.replace(/\s+/g, '') === passkey;
}
