/**
 * Video needle grid (V-NIAH style): clip length in seconds x needle depth x rounds. Each case is a
 * synthetic clip with a number shown for one second, asked about in a fresh chat, answered greedily,
 * scored by exact number match. The grid has the shape of runRetrievalGrid's, with seconds for context.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../../ops/errors.js';
import { mulberry32 } from '../../data/batches.js';
import { lwmFrameIndices } from '../../data/frames.js';
import type { Tokenizer } from '../../data/tokenizer.js';
import { TOKENS_PER_FRAME } from '../../data/visionTokens.js';
import { makeNeedleVideo, scoreVideoNeedle, VIDEO_NEEDLE_QUESTION, type NeedleSource } from '../../data/videoNeedle.js';
import type { LlamaModel } from '../../models/llama.js';
import type { Sampling } from '../prepare/codes.js';
import { MediaEncoder } from '../chat/media.js';
import { ChatSession } from '../chat/session.js';
import { userTurnTokens } from '../chat/template.js';
import type { TextResult } from '../textStream.js';

export interface VideoNeedleTarget {
  model: LlamaModel;
  tokenizer: Tokenizer;
  /** VQGAN folder (config.json + model.safetensors). */
  vqgan: string;
  /** Makes each round's fresh session around the grid's encoder; default `new ChatSession(model, tokenizer, { media, system })`. */
  session?: (media: MediaEncoder) => ChatSession;
}

export interface VideoNeedleGridOptions {
  /** Clip lengths in seconds. */
  lengths: readonly number[];
  /** Needle positions, percent of the clip (0: first second, 100: last). */
  depths: readonly number[];
  /** Cases per cell; default 1. */
  rounds?: number;
  /** Default 1234. */
  seed?: number;
  /** Clips go to workDir/clips (reused when the same parameters come again), VQ codes to workDir/codes. */
  workDir: string;
  /**
   * Unset: every frame goes to the model. Set: LWM's sampling (at most this many frames, spread
   * uniformly), and the needle moves to the sampled second nearest its depth so the model sees it.
   */
  maxFrames?: number;
  /** Frames per second of the clips; default 1. */
  fps?: number;
  /** Default 'testsrc2'. */
  source?: NeedleSource;
  /** Digits of the number; default 3. */
  digits?: number;
  /** Answer tokens at most; default 16. */
  maxTokens?: number;
  /** Replaces LWM's system text (default sessions and the context check). */
  system?: string;
  /** Default: workDir/codes. */
  codesCacheDir?: string;
  onProgress?: (done: number, total: number, etaS: number) => void;
  onRound?: (seconds: number, depth: number, round: VideoNeedleRound) => void;
  /** Stops before the next round and ends the current answer; the results so far are returned. */
  signal?: AbortSignal;
}

export interface VideoNeedleRound {
  round: number;
  correct: boolean;
  score: number;
  response: string;
  number: string;
  needleSecond: number;
  /** Frames the model was given. */
  frames: number;
  promptTokens: number;
  elapsedS: number;
  stoppedBy: TextResult['stoppedBy'];
}

export interface VideoNeedleCell {
  seconds: number;
  depth: number;
  rounds: VideoNeedleRound[];
  accuracy: number;
}

export interface VideoNeedleResults {
  cells: VideoNeedleCell[];
  accuracyBySeconds: { seconds: number; accuracy: number; n: number }[];
  accuracyByDepth: { depth: number; accuracy: number; n: number }[];
  overall: number;
  complete: boolean;
  question: string;
  config: { lengths: number[]; depths: number[]; rounds: number; seed: number; maxFrames: number | null; fps: number; source: NeedleSource; digits: number; maxTokens: number };
}

type Config = VideoNeedleResults['config'];

export async function runVideoNeedleGrid(target: VideoNeedleTarget, opts: VideoNeedleGridOptions): Promise<VideoNeedleResults> {
  const cfg = resolveConfig(opts);
  if (!target.model.isVision) throw new InputError('the video needle test needs a vision-language model (LWM-Chat); this one is text-only');
  checkContext(target, cfg, opts.system);
  const sampling: Sampling = cfg.maxFrames === null ? { all: true } : { maxFrames: cfg.maxFrames };
  const clips = path.join(opts.workDir, 'clips');
  const media = new MediaEncoder({ vqgan: target.vqgan, cacheDir: opts.codesCacheDir ?? path.join(opts.workDir, 'codes'), sampling });
  const newSession = target.session ?? ((m: MediaEncoder) => new ChatSession(target.model, target.tokenizer, { media: m, system: opts.system }));
  const total = cfg.lengths.length * cfg.depths.length * cfg.rounds;
  const totalFrames = cfg.lengths.reduce((s, n) => s + fedFrames(n, cfg), 0) * cfg.depths.length * cfg.rounds;
  let done = 0;
  let doneFrames = 0;
  let complete = true;
  const t0 = performance.now();
  const cells: VideoNeedleCell[] = [];
  try {
    outer: for (const seconds of cfg.lengths) {
      for (const depth of cfg.depths) {
        const cell: VideoNeedleCell = { seconds, depth, rounds: [], accuracy: 0 };
        cells.push(cell);
        for (let round = 0; round < cfg.rounds; round++) {
          if (opts.signal?.aborted) {
            complete = false;
            break outer;
          }
          const t = performance.now();
          const rng = mulberry32(caseSeed(cfg.seed, seconds, depth, round));
          const number = randomNumber(rng, cfg.digits);
          const needleSecond = needleSecondFor(seconds, depth, cfg);
          const clip = path.join(clips, `needle-${cfg.source}-${cfg.fps}fps-${seconds}s-at${needleSecond}-${number}.mp4`);
          if (!fs.existsSync(clip)) await makeNeedleVideo({ out: clip, seconds, needleSecond, number, fps: cfg.fps, source: cfg.source });
          const session = newSession(media);
          let r;
          try {
            r = await session.reply({ text: VIDEO_NEEDLE_QUESTION, videos: [clip] }, { maxTokens: cfg.maxTokens, temperature: 0, signal: opts.signal });
          } finally {
            session.dispose();
          }
          if (r.stoppedBy === 'aborted') {
            complete = false;
            break outer;
          }
          const correct = scoreVideoNeedle(r.text, number);
          const frames = r.media[0]?.frames ?? 0;
          const result: VideoNeedleRound = {
            round, correct, score: correct ? 1 : 0, response: r.text, number, needleSecond, frames,
            promptTokens: r.promptTokens, elapsedS: (performance.now() - t) / 1000, stoppedBy: r.stoppedBy,
          };
          cell.rounds.push(result);
          opts.onRound?.(seconds, depth, result);
          done++;
          doneFrames += fedFrames(seconds, cfg);
          const elapsed = (performance.now() - t0) / 1000;
          opts.onProgress?.(done, total, (elapsed * (totalFrames - doneFrames)) / Math.max(doneFrames, 1));
        }
        cell.accuracy = mean(cell.rounds.map((x) => x.score));
      }
    }
  } finally {
    media.dispose();
  }
  return summarize(cells.filter((c) => c.rounds.length > 0 || complete), cfg, complete);
}

function resolveConfig(o: VideoNeedleGridOptions): Config {
  const whole = (name: string, v: number, min: number): number => {
    if (!Number.isInteger(v) || v < min) throw new InputError(`video needle ${name} must be a whole number >= ${min}, got ${v}`);
    return v;
  };
  if (!o.lengths?.length) throw new InputError('the video needle grid needs at least one clip length (seconds)');
  if (!o.depths?.length) throw new InputError('the video needle grid needs at least one depth (percent)');
  if (!o.workDir) throw new InputError('the video needle grid needs a workDir for its clips and codes');
  for (const s of o.lengths) whole('length (seconds)', s, 1);
  for (const d of o.depths) if (!(d >= 0 && d <= 100)) throw new InputError(`video needle depths are percentages in [0, 100], got ${d}`);
  const source = o.source ?? 'testsrc2';
  if (source !== 'testsrc2' && source !== 'color') throw new InputError(`video needle source must be 'testsrc2' or 'color', got ${JSON.stringify(source)}`);
  const digits = whole('digits', o.digits ?? 3, 1);
  if (digits > 10) throw new InputError(`video needle digits must be at most 10, got ${digits}`);
  return {
    lengths: [...o.lengths],
    depths: [...o.depths],
    rounds: whole('rounds', o.rounds ?? 1, 1),
    seed: whole('seed', o.seed ?? 1234, 0),
    maxFrames: o.maxFrames === undefined ? null : whole('maxFrames', o.maxFrames, 1),
    fps: whole('fps', o.fps ?? 1, 1),
    source,
    digits,
    maxTokens: whole('maxTokens', o.maxTokens ?? 16, 1),
  };
}

/** Frames the model is given for a clip of `seconds`: all of them, or LWM's sample of at most maxFrames. */
function fedFrames(seconds: number, cfg: Config): number {
  const n = seconds * cfg.fps;
  return cfg.maxFrames === null ? n : Math.min(n, cfg.maxFrames);
}

/** Refuses, before any work, a length whose prompt (257 tokens per frame plus the template) and answer overflow the context. */
function checkContext(target: VideoNeedleTarget, cfg: Config, system: string | undefined): void {
  const limit = target.model.config.maxSeqLen;
  const withFrames = (f: number): number =>
    userTurnTokens(target.tokenizer, { text: VIDEO_NEEDLE_QUESTION, vision: [new Int32Array(f * TOKENS_PER_FRAME)] }, true, { system }).tokens.length;
  const perFrame = TOKENS_PER_FRAME + 1;
  const base = withFrames(1) - perFrame;
  const fit = Math.floor((limit - cfg.maxTokens - base) / perFrame);
  for (const seconds of cfg.lengths) {
    const frames = fedFrames(seconds, cfg);
    const need = base + frames * perFrame + cfg.maxTokens;
    if (need > limit) {
      throw new InputError(
        `a ${seconds}-second clip gives the model ${frames} frames: ${need} tokens with the question and a ${cfg.maxTokens}-token answer, over the model's context of ${limit}; ` +
          `use clips of at most ${Math.floor(Math.max(fit, 0) / cfg.fps)} seconds, or set maxFrames to ${Math.max(fit, 1)} or less`,
      );
    }
  }
}

/** The needle's second for a depth; with maxFrames, the nearest second that has a sampled frame. */
function needleSecondFor(seconds: number, depth: number, cfg: Config): number {
  const target = Math.round((depth / 100) * (seconds - 1));
  if (cfg.maxFrames === null) return target;
  const sampled = [...new Set(lwmFrameIndices(seconds * cfg.fps, cfg.maxFrames).map((i) => Math.floor(i / cfg.fps)))];
  return sampled.reduce((best, s) => (Math.abs(s - target) < Math.abs(best - target) ? s : best), sampled[0]!);
}

function randomNumber(rng: () => number, digits: number): string {
  let s = String(1 + Math.floor(rng() * 9));
  while (s.length < digits) s += String(Math.floor(rng() * 10));
  return s;
}

function caseSeed(seed: number, seconds: number, depth: number, round: number): number {
  let h = seed >>> 0;
  for (const v of [seconds, Math.round(depth * 1000), round]) h = Math.imul(h ^ (v >>> 0), 0x9e3779b1) ^ (h >>> 15);
  return h >>> 0;
}

function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

function summarize(cells: VideoNeedleCell[], config: Config, complete: boolean): VideoNeedleResults {
  const by = (key: (c: VideoNeedleCell) => number): { key: number; accuracy: number; n: number }[] => {
    const m = new Map<number, number[]>();
    for (const c of cells) for (const r of c.rounds) (m.get(key(c)) ?? m.set(key(c), []).get(key(c))!).push(r.score);
    return [...m].sort((a, b) => a[0] - b[0]).map(([k, v]) => ({ key: k, accuracy: mean(v), n: v.length }));
  };
  return {
    cells,
    accuracyBySeconds: by((c) => c.seconds).map(({ key, ...r }) => ({ seconds: key, ...r })),
    accuracyByDepth: by((c) => c.depth).map(({ key, ...r }) => ({ depth: key, ...r })),
    overall: mean(cells.flatMap((c) => c.rounds.map((r) => r.score))),
    complete,
    question: VIDEO_NEEDLE_QUESTION,
    config,
  };
}
