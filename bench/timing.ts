import * as tf from '@tensorflow/tfjs';
import { enableNativeKernels, loadAddon, type NativeAddon } from '../ops/native/index.js';

/** Best (smallest) wall time in ms of `reps` runs of fn: the least disturbed run. */
export function best(reps: number, fn: () => void): number {
  let min = Infinity;
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    fn();
    min = Math.min(min, performance.now() - t);
  }
  return min;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The plain tfjs cpu backend with the native kernels on, for a timing script; throws unless
 * `kernel` is among them.
 */
export async function nativeCpu(kernel: string): Promise<NativeAddon> {
  tf.env().set('PROD', true);
  await tf.setBackend('cpu');
  const addon = loadAddon();
  if (!addon) throw new Error('native addon not loaded');
  // The pool's workers read their start generation only once running: resizing (or a first
  // job) right after the addon loads can wait forever on one that has not started yet.
  await sleep(100);
  if (!enableNativeKernels().includes(kernel)) throw new Error(`native ${kernel} not registered`);
  return addon;
}
