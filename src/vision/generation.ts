import { InputError } from '../../ops/errors.js';
import { Rng } from '../../ops/sample.js';
import type { LlamaModel } from '../../models/llama.js';
import { EOF_TOKEN, TOKENS_PER_FRAME } from '../../data/visionTokens.js';
import { defaultTokenizer, type Tokenizer } from '../../data/tokenizer.js';
import { LlamaVisionStepper, type VisionStepper } from './llamaStepper.js';
import { leftPadBatch, visionPromptIds, type PromptRow } from './prompts.js';
import {
  classifierFreeGuidance,
  LWM_IMAGE_SAMPLING,
  LWM_VIDEO_SAMPLING,
  sampleVisionToken,
  validateVisionSampling,
  type VisionSampling,
} from './sampling.js';

/** 256 codes then the frame marker: what the loop generates per frame. */
export const TOKENS_PER_GENERATED_FRAME = TOKENS_PER_FRAME + 1;

export interface SampleVisionOptions extends VisionSampling {
  /** Tokens to generate; every 257th is the forced `<eof>`. */
  count: number;
  rng: Rng;
  /** Called after each token with the number done so far. */
  onToken?: (done: number) => void;
}

/**
 * LWM's `_sample_vision`: guided logits of the last position, temperature, top-k, a draw; every
 * 257th token forced to `<eof>` 8192 (`<eov>` is never generated); the same token appended to
 * the cond and uncond rows. Exactly `count` tokens: no EOS check (pitfall 7: LWM stops when a
 * sampled *code* equals the text EOS id 2).
 *
 * With cfgScale 1 the guided logits equal the conditional ones, so the unconditional row is not
 * run at all (half the work; LWM runs it and discards its effect).
 */
export async function sampleVisionTokens(stepper: VisionStepper, cond: PromptRow, uncond: PromptRow, o: SampleVisionOptions): Promise<number[]> {
  validateVisionSampling(o, 'vision');
  if (!Number.isInteger(o.count) || o.count < 0) throw new InputError(`token count must be a non-negative integer, got ${o.count}`);
  if (o.count === 0) return [];
  const guided = o.cfgScale !== 1;
  const rows = guided ? [cond, uncond] : [cond];
  const v = stepper.vocabSize;
  if (v <= EOF_TOKEN) throw new InputError(`the vision vocabulary has ${v} ids, too few for the <eof> marker ${EOF_TOKEN}`);
  const tokens: number[] = [];
  let logits = await stepper.prefill(leftPadBatch(rows));
  for (let i = 0; i < o.count; i++) {
    if (logits.length !== rows.length * v) throw new InputError(`the model returned ${logits.length} logits, expected ${rows.length} x ${v}`);
    const g = guided ? classifierFreeGuidance(logits.subarray(0, v), logits.subarray(v, 2 * v), o.cfgScale) : logits;
    // LWM draws before overriding the marker; drawing here too keeps one draw per token.
    const drawn = sampleVisionToken(g, o, o.rng);
    const token = (i + 1) % TOKENS_PER_GENERATED_FRAME === 0 ? EOF_TOKEN : drawn;
    tokens.push(token);
    o.onToken?.(i + 1);
    if (i + 1 < o.count) logits = await stepper.step(rows.map(() => token));
  }
  return tokens;
}

export interface GenerateVisionOptions {
  /** What to generate, e.g. "Fireworks over the city". */
  prompt: string;
  /** 1 = an image (default); more = a video whose first frame is generated as an image. */
  frames?: number;
  /** Settings of the image / first frame (default LWM_IMAGE_SAMPLING). */
  image?: Partial<VisionSampling>;
  /** Settings of video frames 2..n (default LWM_VIDEO_SAMPLING). */
  video?: Partial<VisionSampling>;
  /** Sampling seed (default 0); one random stream runs through both stages. */
  seed?: number;
  tokenizer?: Tokenizer;
  /** Tokens done and the total (257 per frame). */
  onProgress?: (done: number, total: number) => void;
}

export interface GenerateVisionResult {
  frames: number;
  /** Every generated vision token, 257 per frame, frame markers included. */
  tokens: number[];
  /** frames × 256 VQGAN codes (row-major 16×16 per frame), markers dropped. */
  codes: Int32Array;
  /** Prompt ids of the conditional rows and of the unconditional row. */
  prompts: { image: number[]; video?: number[]; unconditional: number[] };
  seconds: number;
}

/** Makes a fresh stepper per stage (a stepper's sequence state is one prompt's). */
export type VisionStepperFactory = () => VisionStepper;

/**
 * LWM's vision_generation.py. Image: the "Generate an image of …" prompt, 257 tokens with the
 * image settings. Video: that same image run makes the first frame; then the "Generate a video
 * of …" prompt followed by the first frame's 257 tokens (vision ids) is sampled for
 * (frames − 1) × 257 more tokens with the video settings.
 */
export async function generateVision(source: LlamaModel | VisionStepperFactory, opts: GenerateVisionOptions): Promise<GenerateVisionResult> {
  const t0 = performance.now();
  const frames = opts.frames ?? 1;
  if (!Number.isInteger(frames) || frames < 1) throw new InputError(`frames must be a positive integer, got ${frames}`);
  const image = { ...LWM_IMAGE_SAMPLING, ...opts.image };
  const video = { ...LWM_VIDEO_SAMPLING, ...opts.video };
  validateVisionSampling(image, 'image');
  validateVisionSampling(video, 'video');
  const tok = opts.tokenizer ?? defaultTokenizer();
  const imagePrompt = visionPromptIds('image', opts.prompt, tok);
  const videoPrompt = frames > 1 ? visionPromptIds('video', opts.prompt, tok) : null;
  const newStepper: VisionStepperFactory = typeof source === 'function' ? source : () => new LlamaVisionStepper(source);
  const total = frames * TOKENS_PER_GENERATED_FRAME;
  const rng = new Rng(opts.seed ?? 0);
  const run = async (cond: PromptRow, uncond: PromptRow, s: VisionSampling, count: number, before: number): Promise<number[]> => {
    const stepper = newStepper();
    try {
      const need = cond.tokens.length + count;
      if (stepper.contextLength !== undefined && need > stepper.contextLength) {
        throw new InputError(`generating ${frames} frame(s) needs ${need} positions but the model's context is ${stepper.contextLength}; generate fewer frames`);
      }
      return await sampleVisionTokens(stepper, cond, uncond, { ...s, count, rng, onToken: (d) => opts.onProgress?.(before + d, total) });
    } finally {
      stepper.dispose();
    }
  };
  const first = await run({ tokens: imagePrompt.conditional }, { tokens: imagePrompt.unconditional }, image, TOKENS_PER_GENERATED_FRAME, 0);
  let tokens = first;
  if (videoPrompt) {
    const withFrame = (ids: number[]): PromptRow => ({
      tokens: [...ids, ...first],
      visionMask: [...ids.map(() => false), ...first.map(() => true)],
    });
    const rest = await run(withFrame(videoPrompt.conditional), withFrame(videoPrompt.unconditional), video, (frames - 1) * TOKENS_PER_GENERATED_FRAME, first.length);
    tokens = [...first, ...rest];
  }
  return {
    frames,
    tokens,
    codes: frameCodes(tokens),
    prompts: { image: imagePrompt.conditional, ...(videoPrompt ? { video: videoPrompt.conditional } : {}), unconditional: imagePrompt.unconditional },
    seconds: (performance.now() - t0) / 1000,
  };
}

/** Drops the 257th token (the frame marker) of each group: frames × 256 codes. */
export function frameCodes(tokens: readonly number[]): Int32Array {
  if (tokens.length % TOKENS_PER_GENERATED_FRAME !== 0) {
    throw new InputError(`${tokens.length} vision tokens is not a whole number of ${TOKENS_PER_GENERATED_FRAME}-token frames`);
  }
  const n = tokens.length / TOKENS_PER_GENERATED_FRAME;
  const out = new Int32Array(n * TOKENS_PER_FRAME);
  for (let f = 0; f < n; f++) {
    for (let i = 0; i < TOKENS_PER_FRAME; i++) out[f * TOKENS_PER_FRAME + i] = tokens[f * TOKENS_PER_GENERATED_FRAME + i]!;
  }
  return out;
}
