import * as tf from '@tensorflow/tfjs';
import { expect } from '@jest/globals';

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function expectClose(actual: tf.Tensor | ArrayLike<number>, expected: tf.Tensor | ArrayLike<number>, tol: number): void {
  const a = actual instanceof tf.Tensor ? actual.dataSync() : actual;
  const e = expected instanceof tf.Tensor ? expected.dataSync() : expected;
  const d = maxAbsDiff(a, e);
  if (!(d <= tol)) throw new Error(`max abs difference ${d} exceeds ${tol}`);
}

/** Runs fn and checks it leaves no tensor behind. */
export async function expectNoLeaks(fn: () => unknown | Promise<unknown>): Promise<void> {
  const before = tf.memory().numTensors;
  await fn();
  expect(tf.memory().numTensors).toBe(before);
}

/** Deterministic pseudo-random floats in [-1, 1) for test inputs. */
export function randomArray(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = (s / 4294967296) * 2 - 1;
  }
  return out;
}

/** The one-line message fn throws, checked to be an instance of cls. */
export function oneLineError(fn: () => unknown, cls: abstract new (...a: never[]) => Error = Error): string {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(cls);
  const msg = (err as Error).message;
  expect(msg).not.toMatch(/\n/);
  return msg;
}
