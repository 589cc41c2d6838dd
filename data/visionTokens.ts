/**
 * LWM's token layout of images and videos (spec 3.2, 3.5, 5.4).
 *
 * Text ids index the text vocabulary (`wte`, 32000) and vision ids the vision vocabulary (`vte`,
 * 8448); the same integer means different things, so every token carries a vision-mask bit.
 * A visual segment is
 *
 *   encode('<vision>')  +  frame_0 (256 codes) + 8192  + … +  frame_{n−1} (256 codes) + 8193  +  encode('</vision>')
 *
 * where `<vision>` / `</vision>` are ordinary text (3 SentencePiece tokens each, no BOS), the 256 codes of a
 * frame are its 16×16 VQGAN grid in row-major order, `<eof>` = 8192 follows every frame but the last and
 * `<eov>` = 8193 follows the last one. The markers are vision-vocabulary tokens (vision mask true); the
 * `<vision>` / `</vision>` tokens are text (mask false). An image is a 1-frame video: 3 + 257 + 3 = 263 tokens.
 */
import { InputError } from '../ops/errors.js';
import { defaultTokenizer, type Tokenizer } from './tokenizer.js';

/** VQGAN codebook size: codes are vision ids 0 … 8191. */
export const VQ_CODEBOOK_SIZE = 8192;
/** `<eof>`: vision id after every frame except the last (`VisionTextProcessor.eof_token`). */
export const EOF_TOKEN = 8192;
/** `<eov>`: vision id after the last frame of an image or video (`eov_token`). */
export const EOV_TOKEN = 8193;
/** Frames are 16×16 code grids. */
export const FRAME_SIDE = 16;
export const TOKENS_PER_FRAME = FRAME_SIDE * FRAME_SIDE;
/** `encode('<vision>')` / `encode('</vision>')` with the LLaMA-2 vocabulary and no BOS (spec 3.2). */
export const VISION_OPEN_TEXT_IDS: readonly number[] = Object.freeze([529, 4924, 29958]);
export const VISION_CLOSE_TEXT_IDS: readonly number[] = Object.freeze([1533, 4924, 29958]);

/** Token ids plus, per token, whether the id is a vision-vocabulary id. Always the same length. */
export interface TokenSegment {
  tokens: number[];
  visionMask: boolean[];
}

/**
 * VQ codes of an image or video: a flat row-major list (length a multiple of 256, LWM's JSONL form),
 * a [T,16,16] nested array, a [16,16] nested array (one image), or a typed array (flat).
 */
export type VisionCodes = ArrayLike<number> | readonly (readonly (readonly number[])[])[] | readonly (readonly number[])[];

export interface VisionLayoutOptions {
  /** Used to encode `<vision>` / `</vision>`; defaults to the built-in LLaMA-2 vocabulary. */
  tokenizer?: Tokenizer;
  /** If > 0 and the clip has more frames, keep `selectFrames(n, maxFrames)` (LWM `max_n_frames`, scripts: 4). */
  maxFrames?: number;
  eofToken?: number;
  eovToken?: number;
}

/**
 * Flatten and validate codes into frames × 256 (row-major). Every code must be an integer in [0, 8192);
 * a flat list whose length is not a positive multiple of 256 is refused (LWM would silently drop the
 * remainder via `len // 256`). `what` names the input in error messages.
 */
export function flattenVisionCodes(codes: VisionCodes, what = 'vision codes'): Int32Array {
  const flat: number[] = [];
  const first = (codes as ArrayLike<unknown>)[0];
  if (Array.isArray(first)) {
    const outer = codes as readonly unknown[];
    const is3d = Array.isArray((first as unknown[])[0]);
    const frames = is3d ? (outer as readonly (readonly (readonly number[])[])[]) : [outer as readonly (readonly number[])[]];
    frames.forEach((frame, f) => {
      if (!Array.isArray(frame) || frame.length !== FRAME_SIDE) {
        throw new InputError(`${what}: frame ${f} must be a ${FRAME_SIDE}x${FRAME_SIDE} grid of codes, got ${Array.isArray(frame) ? frame.length : typeof frame} rows`);
      }
      frame.forEach((row, r) => {
        if (!Array.isArray(row) || row.length !== FRAME_SIDE) {
          throw new InputError(`${what}: frame ${f} row ${r} must hold ${FRAME_SIDE} codes, got ${Array.isArray(row) ? row.length : typeof row}`);
        }
        for (const c of row) flat.push(c as number);
      });
    });
  } else {
    for (let i = 0; i < codes.length; i++) flat.push((codes as ArrayLike<number>)[i] as number);
    if (flat.length === 0 || flat.length % TOKENS_PER_FRAME !== 0) {
      throw new InputError(`${what}: ${flat.length} codes is not a positive multiple of ${TOKENS_PER_FRAME} (one 16x16 frame)`);
    }
  }
  if (flat.length === 0) throw new InputError(`${what}: no frames`);
  const out = new Int32Array(flat.length);
  for (let i = 0; i < flat.length; i++) {
    const c = flat[i];
    if (typeof c !== 'number' || !Number.isInteger(c) || c < 0 || c >= VQ_CODEBOOK_SIZE) {
      throw new InputError(`${what}: code ${i} is ${String(c)}, not an integer in [0, ${VQ_CODEBOOK_SIZE})`);
    }
    out[i] = c;
  }
  return out;
}

/**
 * Frames LWM keeps when a clip has more than `maxFrames`: `np.linspace(0, n−1, maxFrames).astype(int)`
 * (float64, truncation). `maxFrames <= 0` or `n <= maxFrames` keeps all frames.
 */
export function selectFrames(nFrames: number, maxFrames: number): number[] {
  if (maxFrames <= 0 || nFrames <= maxFrames) return Array.from({ length: nFrames }, (_, i) => i);
  if (maxFrames === 1) return [0];
  const step = (nFrames - 1) / (maxFrames - 1);
  const out: number[] = [];
  for (let i = 0; i < maxFrames; i++) out.push(i === maxFrames - 1 ? nFrames - 1 : Math.trunc(i * step));
  return out;
}

/** `<vision>` + frames with `<eof>`/`<eov>` markers + `</vision>` (spec 3.5). */
export function visionSegment(codes: VisionCodes, opts: VisionLayoutOptions = {}): TokenSegment {
  const tok = opts.tokenizer ?? defaultTokenizer();
  const eof = opts.eofToken ?? EOF_TOKEN;
  const eov = opts.eovToken ?? EOV_TOKEN;
  const flat = flattenVisionCodes(codes);
  const n = flat.length / TOKENS_PER_FRAME;
  const frames = selectFrames(n, opts.maxFrames ?? -1);
  const open = tok.encode('<vision>');
  const close = tok.encode('</vision>');
  const tokens: number[] = [...open];
  const visionMask: boolean[] = open.map(() => false);
  frames.forEach((f, k) => {
    for (let i = 0; i < TOKENS_PER_FRAME; i++) tokens.push(flat[f * TOKENS_PER_FRAME + i] as number);
    tokens.push(k === frames.length - 1 ? eov : eof);
    for (let i = 0; i <= TOKENS_PER_FRAME; i++) visionMask.push(true);
  });
  tokens.push(...close);
  for (const _ of close) visionMask.push(false);
  return { tokens, visionMask };
}

/** One piece of an interleaved sequence: text (encoded without BOS/EOS) or an image/video. */
export type LayoutPart = string | { text: string } | { vision: VisionCodes };

/** Concatenate segments (tokens and masks). */
export function concatSegments(parts: readonly TokenSegment[]): TokenSegment {
  const tokens: number[] = [];
  const visionMask: boolean[] = [];
  for (const p of parts) {
    for (const t of p.tokens) tokens.push(t);
    for (const m of p.visionMask) visionMask.push(m);
  }
  return { tokens, visionMask };
}

/**
 * Interleaved text and vision, each text piece encoded separately (so each gets SentencePiece's
 * dummy-prefix `▁`, as in LWM) and empty text skipped. E.g. `layoutTokens(['Describe:', {vision: codes}])`.
 */
export function layoutTokens(parts: readonly LayoutPart[], opts: VisionLayoutOptions = {}): TokenSegment {
  const tok = opts.tokenizer ?? defaultTokenizer();
  return concatSegments(
    parts.map((p) => {
      if (typeof p === 'string' || 'text' in p) {
        const text = typeof p === 'string' ? p : p.text;
        const ids = text === '' ? [] : tok.encode(text);
        return { tokens: ids, visionMask: ids.map(() => false) };
      }
      return visionSegment(p.vision, { ...opts, tokenizer: tok });
    }),
  );
}

/** Text (may be empty) followed by one image: 3 + 257 + 3 = 263 vision-segment tokens. */
export function imageTokens(text: string, codes: VisionCodes, opts: VisionLayoutOptions = {}): TokenSegment {
  return layoutTokens([text, { vision: codes }], opts);
}

/** Text (may be empty) followed by a T-frame video: 3 + 257·T + 3 vision-segment tokens. */
export function videoTokens(text: string, codes: VisionCodes, opts: VisionLayoutOptions = {}): TokenSegment {
  return layoutTokens([text, { vision: codes }], opts);
}

/** Number of tokens of a visual segment of `nFrames` frames: 257·n + 6. */
export function visionSegmentLength(nFrames: number): number {
  return (TOKENS_PER_FRAME + 1) * nFrames + VISION_OPEN_TEXT_IDS.length + VISION_CLOSE_TEXT_IDS.length;
}
