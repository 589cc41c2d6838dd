import type { PromptBatch } from '../../../src/vision/prompts.js';
import type { VisionStepper } from '../../../src/vision/llamaStepper.js';

/** Vision vocabulary of the stubs: LWM's 8192 codes + 256. */
export const V = 8448;

/**
 * A model that returns given logits (per row kind and step) and records what the loop fed it:
 * the prompt batch and the tokens of every decode step.
 */
export class StubStepper implements VisionStepper {
  readonly vocabSize = V;
  batch: PromptBatch | null = null;
  steps: number[][] = [];
  disposed = false;

  constructor(private readonly logits: (row: 'cond' | 'uncond', step: number) => Float32Array) {}

  async prefill(b: PromptBatch): Promise<Float32Array> {
    this.batch = b;
    return this.out();
  }

  async step(tokens: readonly number[]): Promise<Float32Array> {
    this.steps.push([...tokens]);
    return this.out();
  }

  dispose(): void {
    this.disposed = true;
  }

  private out(): Float32Array {
    const rows = this.batch!.rows;
    const out = new Float32Array(rows * V);
    out.set(this.logits('cond', this.steps.length), 0);
    if (rows === 2) out.set(this.logits('uncond', this.steps.length), V);
    return out;
  }
}

/** Logits that are `low` everywhere except the given ids. */
export function peaks(values: Record<number, number>, low = 0): Float32Array {
  const x = new Float32Array(V).fill(low);
  for (const [id, v] of Object.entries(values)) x[Number(id)] = v;
  return x;
}

/** Deterministic pseudo-random logits in [-4, 4) for (row, step). */
export function noisyLogits(row: 'cond' | 'uncond', step: number): Float32Array {
  let s = (step * 2 + (row === 'cond' ? 1 : 2)) * 0x9e3779b1;
  const x = new Float32Array(V);
  for (let i = 0; i < V; i++) {
    s = (s ^ (s << 13)) >>> 0;
    s = (s ^ (s >>> 17)) >>> 0;
    s = (s ^ (s << 5)) >>> 0;
    x[i] = (s / 2 ** 32) * 8 - 4;
  }
  return x;
}
