import { InputError } from './errors.js';

/** Small, fast, seedable PRNG (sfc32), so `--seed` reproduces a sampled generation exactly. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 15; i++) this.next();
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.a >>>= 0; this.b >>>= 0; this.c >>>= 0; this.d >>>= 0;
    let t = (this.a + this.b) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.d = (this.d + 1) | 0;
    t = (t + this.d) | 0;
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }
}

export interface SamplingOptions {
  /** 0 = greedy (argmax). */
  temperature?: number;
  /** Keep the k most likely tokens; 0 = all. */
  topK?: number;
  /** Keep the smallest set whose probability reaches p; 1 = all. */
  topP?: number;
  /** Drop tokens whose probability is below minP times the top token's; 0 = off. */
  minP?: number;
  /** > 1 discourages tokens seen in the last repeatLastN tokens (llama.cpp / CTRL rule); 1 = off. */
  repeatPenalty?: number;
  /** How far back the repeat penalty looks, prompt included. Default 64 (llama.cpp's). */
  repeatLastN?: number;
}

export function validateSampling(o: SamplingOptions): void {
  const t = o.temperature ?? 0;
  if (!(t >= 0) || !Number.isFinite(t)) throw new InputError(`temperature must be >= 0, got ${t}`);
  const k = o.topK ?? 0;
  if (!Number.isInteger(k) || k < 0) throw new InputError(`top-k must be a non-negative integer, got ${k}`);
  const p = o.topP ?? 1;
  if (!(p > 0 && p <= 1)) throw new InputError(`top-p must be in (0, 1], got ${p}`);
  const m = o.minP ?? 0;
  if (!(m >= 0 && m < 1)) throw new InputError(`min-p must be in [0, 1), got ${m}`);
  const r = o.repeatPenalty ?? 1;
  if (!(r > 0) || !Number.isFinite(r)) throw new InputError(`repeat-penalty must be > 0 (1 = off), got ${r}`);
  const n = o.repeatLastN ?? 64;
  if (!Number.isInteger(n) || n < 0) throw new InputError(`repeat-last-n must be a non-negative integer, got ${n}`);
}

/**
 * Returns logits with every token of `recent` penalised once: positive logits divided by the
 * penalty, negative ones multiplied, so the token always becomes less likely. Copies; the input is untouched.
 */
export function applyRepeatPenalty(logits: ArrayLike<number>, recent: Iterable<number>, penalty: number): Float32Array {
  const out = Float32Array.from(logits);
  if (penalty === 1) return out;
  for (const id of new Set(recent)) {
    if (id < 0 || id >= out.length) continue;
    const v = out[id]!;
    out[id] = v > 0 ? v / penalty : v * penalty;
  }
  return out;
}

export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** Natural-log softmax in float64 over one row of logits. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! - lse;
  return out;
}

/** The k largest entries as [index, value], largest first (ties: lower index first). */
export function topEntries(x: ArrayLike<number>, k: number): [number, number][] {
  const n = Math.min(k, x.length);
  const top: [number, number][] = [];
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (top.length === n && v <= top[n - 1]![1]) continue;
    let j = top.length < n ? top.length : n - 1;
    top[j] = [i, v];
    while (j > 0 && top[j - 1]![1] < v) {
      [top[j - 1], top[j]] = [top[j]!, top[j - 1]!];
      j--;
    }
  }
  return top;
}

/**
 * Picks the next token from one row of raw logits. Order as Hugging Face's warpers and LWM:
 * temperature, then top-k, then top-p, then min-p, then a draw.
 */
export function sampleToken(logits: ArrayLike<number>, o: SamplingOptions, rng: Rng): number {
  const t = o.temperature ?? 0;
  if (t === 0) return argmax(logits);
  const k = o.topK && o.topK > 0 ? Math.min(o.topK, logits.length) : logits.length;
  // Sorting only the candidates that survive top-k keeps a 32000-way draw cheap.
  const cand = k < logits.length ? topEntries(logits, k) : Array.from(logits, (v, i) => [i, v] as [number, number]).sort((a, b) => b[1] - a[1]);
  const maxScaled = cand[0]![1] / t;
  const probs = cand.map(([, v]) => Math.exp(v / t - maxScaled));
  const total = probs.reduce((s, p) => s + p, 0);
  let keep = cand.length;
  const topP = o.topP ?? 1;
  if (topP < 1) {
    let acc = 0;
    for (let i = 0; i < cand.length; i++) {
      acc += probs[i]! / total;
      if (acc >= topP) {
        keep = i + 1;
        break;
      }
    }
  }
  const minP = o.minP ?? 0;
  if (minP > 0) {
    let i = 1;
    while (i < keep && probs[i]! >= minP * probs[0]!) i++;
    keep = i;
  }
  let mass = 0;
  for (let i = 0; i < keep; i++) mass += probs[i]!;
  let r = rng.next() * mass;
  for (let i = 0; i < keep; i++) {
    r -= probs[i]!;
    if (r < 0) return cand[i]![0];
  }
  return cand[keep - 1]![0];
}
