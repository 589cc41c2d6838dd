import { InputError } from '../../ops/errors.js';
import { argmax, type Rng } from '../../ops/sample.js';

/** One stage's sampling settings (LWM's temperature_*, top_k_*, cfg_scale_* flags). */
export interface VisionSampling {
  /** Logits are divided by it after guidance; 0 = greedy (LWM itself refuses 0). */
  temperature: number;
  /** Keep exactly the k largest guided logits; 0 = all. */
  topK: number;
  /** Classifier-free guidance scale s in `uncond + s * (cond − uncond)`; 1 = no guidance. */
  cfgScale: number;
}

/** LWM's image (and first video frame) settings from scripts/run_sample_{image,video}.sh. */
export const LWM_IMAGE_SAMPLING: Readonly<VisionSampling> = Object.freeze({ temperature: 1, topK: 8192, cfgScale: 5 });
/** LWM's settings for video frames after the first, from scripts/run_sample_video.sh. */
export const LWM_VIDEO_SAMPLING: Readonly<VisionSampling> = Object.freeze({ temperature: 1, topK: 1000, cfgScale: 1 });

export function validateVisionSampling(s: VisionSampling, what: string): void {
  if (!(s.temperature >= 0) || !Number.isFinite(s.temperature)) throw new InputError(`${what} temperature must be >= 0, got ${s.temperature}`);
  if (!Number.isInteger(s.topK) || s.topK < 0) throw new InputError(`${what} top-k must be a non-negative integer, got ${s.topK}`);
  if (!(s.cfgScale >= 0) || !Number.isFinite(s.cfgScale)) throw new InputError(`${what} cfg-scale must be a finite number >= 0, got ${s.cfgScale}`);
}

/** `uncond + s * (cond − uncond)` on raw logits, rounded to float32 at each step as LWM's fp32 JAX does. */
export function classifierFreeGuidance(cond: ArrayLike<number>, uncond: ArrayLike<number>, scale: number): Float32Array {
  if (cond.length !== uncond.length) throw new InputError(`classifierFreeGuidance: ${cond.length} cond logits vs ${uncond.length} uncond`);
  const f = Math.fround;
  const s = f(scale);
  const out = new Float32Array(cond.length);
  for (let i = 0; i < cond.length; i++) out[i] = f(uncond[i]! + f(s * f(cond[i]! - uncond[i]!)));
  return out;
}

/**
 * Indices (ascending) of exactly k largest values; among equal values at the cut the lower index
 * wins, as jax.lax.top_k orders ties. O(V log V) with a native sort, since LWM keeps 8192 of 8448.
 */
export function topKIndices(x: ArrayLike<number>, k: number): Int32Array {
  const v = x.length;
  if (k <= 0 || k >= v) {
    const all = new Int32Array(v);
    for (let i = 0; i < v; i++) all[i] = i;
    return all;
  }
  const cut = Float32Array.from(x).sort()[v - k]!;
  let above = 0;
  for (let i = 0; i < v; i++) if (x[i]! > cut) above++;
  let ties = k - above;
  const out = new Int32Array(k);
  let j = 0;
  for (let i = 0; i < v && j < k; i++) {
    const xi = x[i]!;
    if (xi > cut) out[j++] = i;
    else if (xi === cut && ties > 0) {
      out[j++] = i;
      ties--;
    }
  }
  return out;
}

/** Temperature, then top-k, then one draw from the softmax of what is left (HF's warper order). */
export function sampleVisionToken(logits: ArrayLike<number>, o: Pick<VisionSampling, 'temperature' | 'topK'>, rng: Rng): number {
  const n = logits.length;
  for (let i = 0; i < n; i++) {
    const x = logits[i]!;
    if (x !== x) throw new InputError(`vision logit ${i} is NaN; the model weights or inputs are broken`);
  }
  if (o.temperature === 0) return argmax(logits);
  const keep = topKIndices(logits, o.topK);
  const t = o.temperature;
  let max = -Infinity;
  for (let j = 0; j < keep.length; j++) {
    const x = logits[keep[j]!]! / t;
    if (x > max) max = x;
  }
  // A local exp: global lookups (Math.*) are slow in sandboxes such as jest's, and this runs V times a token.
  const exp = Math.exp;
  const p = new Float64Array(keep.length);
  let mass = 0;
  for (let j = 0; j < keep.length; j++) {
    const e = exp(logits[keep[j]!]! / t - max);
    p[j] = e;
    mass += e;
  }
  let r = rng.next() * mass;
  for (let j = 0; j < keep.length; j++) {
    r -= p[j]!;
    if (r < 0) return keep[j]!;
  }
  return keep[keep.length - 1]!;
}
