/**
 * Passkey retrieval at a chosen context length and depth: the synthetic task the passkey training
 * data teaches (data/passkey.ts), prompted exactly as that data lays it out, so a model fine-tuned
 * on it is tested on the same format at longer contexts.
 */
import { InputError } from '../../ops/errors.js';
import { PASSKEY_QUESTION, passkeyExample, passkeyPrompt, passkeySentence } from '../../data/passkey.js';
import type { Tokenizer } from '../../data/tokenizer.js';

export interface PasskeyCaseOptions {
  tok: Tokenizer;
  /** Tokens of the prompt at most (BOS, filler, passkey sentence, question). */
  contextLength: number;
  /** 0..100: where the passkey sentence goes among the filler sentences. */
  depthPercent: number;
  rng: () => number;
  /** Default 5, as the training data. */
  digits?: number;
}

export interface PasskeyCase {
  prompt: string;
  promptTokens: number[];
  passkey: string;
  depthPercent: number;
  /** Filler sentences before the passkey / all filler sentences: the depth achieved. */
  depth: number;
}

export function passkeyCase(o: PasskeyCaseOptions): PasskeyCase {
  const digits = o.digits ?? 5;
  if (!Number.isInteger(digits) || digits < 1 || digits > 64) throw new InputError(`passkey digits must be a whole number in [1, 64], got ${digits}`);
  if (!(o.depthPercent >= 0 && o.depthPercent <= 100)) throw new InputError(`passkey depths are percentages in [0, 100], got ${o.depthPercent}`);
  if (!Number.isInteger(o.contextLength) || o.contextLength < 1) throw new InputError(`--context must be a positive whole number of tokens, got ${o.contextLength}`);
  const { tok } = o;
  // Digits are one token each, so any passkey of this length costs the same.
  const sample = '1'.repeat(digits);
  const answerAndEos = tok.encode(`${sample}.`).length + 1;
  const least = 1 + tok.encode(passkeySentence(sample)).length + tok.encode(PASSKEY_QUESTION).length;
  if (o.contextLength < least) throw new InputError(`a context of ${o.contextLength} tokens cannot hold the passkey prompt (${least} tokens without filler); use --context ${least} or more`);
  // passkeyExample sizes a whole training example (prompt, answer, EOS); the prompt alone gets contextLength.
  const r = passkeyExample(o.rng, { targetTokens: o.contextLength + answerAndEos, depth: o.depthPercent / 100, digits, tokenizer: tok });
  const promptTokens = [tok.bosId, ...tok.encode(passkeyPrompt(r))];
  if (promptTokens.length > o.contextLength) throw new Error(`passkey prompt has ${promptTokens.length} tokens, over the ${o.contextLength} asked (a bug)`);
  return { prompt: tok.decode(promptTokens), promptTokens, passkey: r.passkey, depthPercent: o.depthPercent, depth: r.depth };
}

