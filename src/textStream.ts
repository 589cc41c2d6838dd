import { InputError } from '../ops/index.js';
import { TokenStreamDecoder, type Tokenizer } from '../data/index.js';
import type { LlamaModel } from '../models/llama.js';
import { generateTokens, type GenerateOptions, type GenerateStep, type StopReason } from './generate.js';

/**
 * Holds back text that could be the start of a stop string, so a stop string split over several
 * tokens is still cut exactly and never shown in part.
 */
export class StopStringMatcher {
  private held = '';
  private readonly stops: string[];
  stopped = false;

  constructor(stops: readonly string[]) {
    for (const s of stops) if (typeof s !== 'string' || s.length === 0) throw new InputError(`stop strings must be non-empty, got ${JSON.stringify(s)}`);
    this.stops = [...stops];
  }

  /** Text that is safe to show now; sets `stopped` once a stop string appears (the text before it is returned). */
  push(text: string): string {
    if (this.stopped) return '';
    const buf = this.held + text;
    let cut = -1;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.held = '';
      return buf.slice(0, cut);
    }
    let keep = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > keep; n--) {
        if (buf.endsWith(s.slice(0, n))) {
          keep = n;
          break;
        }
      }
    }
    this.held = buf.slice(buf.length - keep);
    return buf.slice(0, buf.length - keep);
  }

  /** At the end of generation the held-back text was not a stop string after all. */
  flush(): string {
    const rest = this.stopped ? '' : this.held;
    this.held = '';
    return rest;
  }
}

export interface TextGenerateOptions extends GenerateOptions {
  /** Generation ends where any of these strings appears; the text ends just before it. */
  stop?: readonly string[];
}

export interface TextResult {
  text: string;
  /** Every token chosen, including those of a stop string. */
  tokens: number[];
  steps: GenerateStep[];
  stoppedBy: StopReason | 'stop-string';
  promptTokens: number;
  /** Prompt time is the time to the first token; generation time covers the rest. */
  timings: { promptMs: number; generateMs: number };
}

/**
 * Text as it is generated: the token stream decoded incrementally (no broken UTF-8) and cut at
 * stop strings. Returns the whole result when done.
 */
export async function* streamText(
  model: LlamaModel,
  tok: Tokenizer,
  prompt: readonly number[],
  opts: TextGenerateOptions = {},
): AsyncGenerator<string, TextResult> {
  const decoder = new TokenStreamDecoder(tok);
  const matcher = new StopStringMatcher(opts.stop ?? []);
  const steps: GenerateStep[] = [];
  let text = '';
  const t0 = performance.now();
  let tFirst = 0;
  const it = generateTokens(model, prompt, opts);
  let stoppedBy: TextResult['stoppedBy'];
  try {
    for (;;) {
      const r = await it.next();
      if (!tFirst) tFirst = performance.now();
      if (r.done) {
        stoppedBy = r.value;
        break;
      }
      steps.push(r.value);
      opts.onStep?.(r.value);
      const piece = matcher.push(decoder.push(r.value.token));
      if (piece) {
        text += piece;
        yield piece;
      }
      if (matcher.stopped) {
        stoppedBy = 'stop-string';
        break;
      }
    }
  } finally {
    // Ends the token generator early too (its finally frees its own cache).
    await it.return('aborted');
  }
  if (stoppedBy !== 'stop-string') {
    const rest = matcher.push(decoder.flush()) + matcher.flush();
    if (rest) {
      text += rest;
      yield rest;
    }
    if (matcher.stopped) stoppedBy = 'stop-string';
  }
  const t1 = performance.now();
  return { text, tokens: steps.map((s) => s.token), steps, stoppedBy, promptTokens: prompt.length, timings: { promptMs: tFirst - t0, generateMs: t1 - tFirst } };
}

/** The whole generated text at once. */
export async function generateText(model: LlamaModel, tok: Tokenizer, prompt: readonly number[], opts: TextGenerateOptions = {}): Promise<TextResult> {
  const it = streamText(model, tok, prompt, opts);
  for (;;) {
    const r = await it.next();
    if (r.done) return r.value;
  }
}
