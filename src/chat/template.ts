import { InputError } from '../../ops/index.js';
import { concatSegments, visionSegment, type TokenSegment, type Tokenizer, type VisionCodes } from '../../data/index.js';

/** LWM's system text (scripts/sample_pyt.py, lwm/vision_chat.py). */
export const LWM_SYSTEM = 'You are a helpful assistant.';

/** One user turn: the question, optionally a long document and images/videos (as VQ codes). */
export interface UserTurn {
  text: string;
  /** Placed before the question, as LWM's long-context template does ("USER: {context} {question}"). */
  document?: string;
  /** Each image or video as codes ([frames*256] row-major); they follow the question, as in vision_chat.py. */
  vision?: readonly VisionCodes[];
}

export interface TemplateOptions {
  /** Replaces LWM's "You are a helpful assistant." */
  system?: string;
  /** Keep only the first N tokens of the document piece (explicit truncation of an over-long document). */
  maxDocumentTokens?: number;
  /**
   * Images/videos before the question: `{system} USER:` + vision + `{question} ASSISTANT:`. Not
   * vision_chat.py's order, but the layout of `[vision+question]` training data, and the video's
   * tokens then do not depend on the question, so a prompt cache of them serves any question.
   */
  visionFirst?: boolean;
}

/** A turn's tokens, and how many of them are the document piece (system, "USER:" and document text). */
export interface TurnTokens extends TokenSegment {
  documentTokens: number;
}

function text(tok: Tokenizer, s: string): TokenSegment {
  const tokens = s === '' ? [] : tok.encode(s);
  return { tokens, visionMask: tokens.map(() => false) };
}

/**
 * Tokens of a user turn in LWM's format, the assistant's answer to follow. The first turn starts
 * with BOS and the system text; a later turn follows the previous answer's EOS ("</s>USER: ...",
 * Vicuna v1.1, LWM's base format; the LWM repository defines no multi-turn format of its own).
 *
 * - Text (spec 7.1): `<s>{system} USER: {question} ASSISTANT:`, encoded as one string.
 * - Document: `<s>{system} USER: {document}` then `{question} ASSISTANT:` encoded apart, so the
 *   document's tokens do not depend on the question and a prompt cache of it can be reused.
 * - Vision (spec 3.6): `<s>{system} USER: {question}\n` + `<vision>`codes`</vision>` + ` ASSISTANT:`,
 *   each piece encoded apart as vision_chat.py does.
 */
export function userTurnTokens(tok: Tokenizer, turn: UserTurn, first: boolean, opts: TemplateOptions = {}): TurnTokens {
  if (typeof turn.text !== 'string') throw new InputError('a chat message needs text (the question)');
  const system = opts.system ?? LWM_SYSTEM;
  const head = first ? (system === '' ? 'USER: ' : `${system} USER: `) : 'USER: ';
  const bos: TokenSegment = first ? { tokens: [tok.bosId], visionMask: [false] } : { tokens: [], visionMask: [] };
  const vision = turn.vision ?? [];
  const parts: TokenSegment[] = [bos];
  let documentTokens = 0;
  if (turn.document !== undefined) {
    const doc = text(tok, head + turn.document);
    const n = Math.min(doc.tokens.length, opts.maxDocumentTokens ?? Infinity);
    documentTokens = doc.tokens.length;
    parts.push({ tokens: doc.tokens.slice(0, n), visionMask: doc.visionMask.slice(0, n) });
    if (vision.length) {
      parts.push(text(tok, `${turn.text}\n`));
      for (const v of vision) parts.push(visionSegment(v, { tokenizer: tok }));
      parts.push(text(tok, ' ASSISTANT:'));
    } else {
      parts.push(text(tok, `${turn.text} ASSISTANT:`));
    }
  } else if (vision.length && opts.visionFirst) {
    parts.push(text(tok, head.trimEnd()));
    for (const v of vision) parts.push(visionSegment(v, { tokenizer: tok }));
    parts.push(text(tok, `${turn.text} ASSISTANT:`));
  } else if (vision.length) {
    parts.push(text(tok, `${head}${turn.text}\n`));
    for (const v of vision) parts.push(visionSegment(v, { tokenizer: tok }));
    parts.push(text(tok, ' ASSISTANT:'));
  } else {
    parts.push(text(tok, `${head}${turn.text} ASSISTANT:`));
  }
  return { ...concatSegments(parts), documentTokens };
}

/** Prompt of a whole conversation: user turns with the assistant's answers (their token ids) between them. */
export function conversationTokens(tok: Tokenizer, turns: readonly { user: UserTurn; answer?: readonly number[] }[], opts: TemplateOptions = {}): TokenSegment {
  const parts: TokenSegment[] = [];
  turns.forEach((t, i) => {
    parts.push(userTurnTokens(tok, t.user, i === 0, opts));
    if (t.answer) {
      const ids = [...t.answer, tok.eosId];
      parts.push({ tokens: ids, visionMask: ids.map(() => false) });
    }
  });
  return concatSegments(parts);
}

/**
 * The first turn's tokens up to and including the document (BOS, system, "USER:", document): the
 * same whatever the question, so they can be prefilled (or cached) before the question is known.
 */
export function documentPrefix(tok: Tokenizer, document: string, opts: TemplateOptions = {}): TokenSegment {
  const t = userTurnTokens(tok, { text: '', document }, true, opts);
  const n = 1 + Math.min(t.documentTokens, opts.maxDocumentTokens ?? Infinity);
  return { tokens: t.tokens.slice(0, n), visionMask: t.visionMask.slice(0, n) };
}
