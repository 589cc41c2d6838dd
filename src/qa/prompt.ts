/**
 * The fixed prompt that asks a model for one question-answer pair about a chunk, and the checks a
 * reply must pass to be kept. Changing the prompt changes QA_PROMPT_VERSION, so cached replies of
 * an older prompt are not reused.
 */
import type { QaPair } from '../../data/qaAssembly.js';

export const QA_PROMPT_VERSION = 1;

/** The user message for one chunk (no system message is sent). */
export function qaPrompt(chunk: string): string {
  return [
    'Read the following passage from a longer document.',
    '',
    '<passage>',
    chunk,
    '</passage>',
    '',
    'Write one question that can be answered only by someone who has read this passage (not from general knowledge), and its answer.',
    'The answer must be short (one sentence or less) and use words from the passage.',
    'Reply in exactly this format and nothing else:',
    'Question: <the question>',
    'Answer: <the answer>',
  ].join('\n');
}

export type DropReason = 'unparseable' | 'empty' | 'too-long' | 'ungrounded';

export type QaVerdict = { ok: true; pair: QaPair } | { ok: false; reason: DropReason; detail: string };

/** Answers longer than this many words are not the short answer the prompt asks for. */
export const MAX_ANSWER_WORDS = 60;
/** Share of the answer's content words that must occur in the chunk. */
export const GROUNDED_SHARE = 0.5;

// Function words carry no evidence that an answer comes from the chunk.
const STOP = new Set(
  ('a an the and or but if of to in on at by for with from as is are was were be been being it its this that these those ' +
    'he she they them his her their we you i me my our your not no yes do does did has have had will would can could ' +
    'should may might must shall so than then there here what which who whom whose when where why how all any some')
    .split(' '),
);

/** Lower-case runs of letters and digits. */
export function words(text: string): string[] {
  return text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
}

/** Distinct words of the answer that are not function words. */
export function contentWords(text: string): string[] {
  return [...new Set(words(text).filter((w) => !STOP.has(w)))];
}

/**
 * The overlap check: at least one content word of the answer, and at least GROUNDED_SHARE of
 * them, occur as words of the chunk.
 */
export function groundedShare(answer: string, chunk: string): number {
  const cw = contentWords(answer);
  if (cw.length === 0) return 0;
  const inChunk = new Set(words(chunk));
  return cw.filter((w) => inChunk.has(w)).length / cw.length;
}

function clean(s: string): string {
  return s.replace(/\s+/g, ' ').replace(/^[*"'\s]+|[*"'\s]+$/g, '').trim();
}

/**
 * A reply parsed and checked: "Question: …" then "Answer: …" (case-insensitive, markdown bold
 * allowed), both non-empty, the answer at most MAX_ANSWER_WORDS words and grounded in the chunk.
 */
export function parseQaReply(reply: string, chunk: string): QaVerdict {
  const m = /(?:^|\n)\W*question\W*:\s*([\s\S]*?)\n\W*answer\W*:\s*([\s\S]*)$/i.exec(reply.trim());
  if (!m) return { ok: false, reason: 'unparseable', detail: 'no "Question: … / Answer: …" lines' };
  const question = clean(m[1]!);
  const answer = clean(m[2]!.split(/\n\s*\n|\n\W*question\W*:/i)[0]!);
  if (question === '' || answer === '') return { ok: false, reason: 'empty', detail: question === '' ? 'empty question' : 'empty answer' };
  if (words(answer).length > MAX_ANSWER_WORDS) return { ok: false, reason: 'too-long', detail: `answer of ${words(answer).length} words` };
  const share = groundedShare(answer, chunk);
  if (share < GROUNDED_SHARE) return { ok: false, reason: 'ungrounded', detail: `${Math.round(share * 100)}% of the answer's content words are in the chunk` };
  return { ok: true, pair: { question, answer } };
}
