import { CheckpointError, InputError } from '../../ops/errors.js';
import { defaultTokenizer, type Tokenizer } from '../../data/tokenizer.js';

/**
 * Prompts of LWM's image and video generation (lwm/vision_generation.py, spec 3.7) and the
 * left-padded batch the sampling loop feeds the model.
 */

export type VisionKind = 'image' | 'video';

/** Prompt of the unconditional row that classifier-free guidance subtracts. */
export const UNCONDITIONAL_PROMPT = '<s><vision>';

/** Id of the left padding (LWM's original pad id); pads are masked, so the value never matters. */
export const PAD_ID = 0;

/** LWM's chat-framed request; the text ends in `<vision>` so the next token is the first code. */
export function conditionalPrompt(kind: VisionKind, caption: string): string {
  const what = kind === 'image' ? 'an image' : 'a video';
  return `<s>You are a helpful assistant. USER: Generate ${what} of ${caption} ASSISTANT: <vision>`;
}

/**
 * Token ids of a generation prompt. No automatic BOS: the literal "<s>" the prompts start with is
 * the one BOS (pitfall 5: LWM's later AutoTokenizer added a second one, which it was not trained with).
 */
export function encodeVisionPrompt(text: string, tokenizer: Tokenizer = defaultTokenizer()): number[] {
  const ids = tokenizer.encode(text);
  if (text.startsWith('<s>') && ids[0] !== tokenizer.bosId) {
    throw new CheckpointError(`tokenizer ${tokenizer.source} does not read the literal "<s>" as its BOS token ${tokenizer.bosId}; use LWM's LLaMA-2 tokenizer`);
  }
  return ids;
}

/** The cond/uncond prompt ids for a caption (what LWM tokenises before padding). */
export function visionPromptIds(kind: VisionKind, caption: string, tokenizer: Tokenizer = defaultTokenizer()): { conditional: number[]; unconditional: number[] } {
  if (caption.trim() === '') throw new InputError(`the ${kind} description is empty; say what to generate, e.g. "Fireworks over the city"`);
  return {
    conditional: encodeVisionPrompt(conditionalPrompt(kind, caption), tokenizer),
    unconditional: encodeVisionPrompt(UNCONDITIONAL_PROMPT, tokenizer),
  };
}

/** One prompt row: token ids and, per token, whether it is a vision-vocabulary id (default: none). */
export interface PromptRow {
  tokens: readonly number[];
  visionMask?: readonly boolean[];
}

/** Rows of equal length, row-major, as the model takes them. */
export interface PromptBatch {
  rows: number;
  length: number;
  tokens: Int32Array;
  /** 1 = real token, 0 = left padding. */
  attentionMask: Uint8Array;
  /** 1 = vision-vocabulary id. */
  visionMask: Uint8Array;
  /** RoPE positions `cumsum(mask) − 1` (pitfall 17); pads get 0 (they are masked as keys and their outputs unused). */
  positions: Int32Array;
  /** Whether any row has padding. */
  padded: boolean;
}

/**
 * Left-pads rows with PAD_ID to the longest one. LWM pads to a fixed 128; with the pads masked as
 * keys and positions counted over real tokens only, the extra pads change nothing, so this pads
 * only as far as needed (and never truncates, where LWM would cut a >128-token prompt from the left).
 */
export function leftPadBatch(rows: readonly PromptRow[]): PromptBatch {
  if (rows.length === 0) throw new InputError('leftPadBatch: no rows');
  const length = Math.max(...rows.map((r) => r.tokens.length));
  if (length === 0) throw new InputError('leftPadBatch: every row is empty');
  const n = rows.length * length;
  const b: PromptBatch = {
    rows: rows.length,
    length,
    tokens: new Int32Array(n).fill(PAD_ID),
    attentionMask: new Uint8Array(n),
    visionMask: new Uint8Array(n),
    positions: new Int32Array(n),
    padded: false,
  };
  rows.forEach((row, r) => {
    const t = row.tokens.length;
    if (row.visionMask && row.visionMask.length !== t) {
      throw new InputError(`leftPadBatch: row ${r} has ${t} tokens but ${row.visionMask.length} vision-mask entries`);
    }
    if (t < length) b.padded = true;
    const start = r * length + (length - t);
    for (let i = 0; i < t; i++) {
      b.tokens[start + i] = row.tokens[i]!;
      b.attentionMask[start + i] = 1;
      b.visionMask[start + i] = row.visionMask?.[i] ? 1 : 0;
      b.positions[start + i] = i;
    }
  });
  return b;
}
