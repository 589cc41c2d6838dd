import * as tf from '@tensorflow/tfjs';
import { loadAddon, type NativeAddon } from './addon.js';

/**
 * Native kernels replace (or add to) the tfjs `cpu` backend's kernels by name, so model code
 * stays plain tfjs. Replaced kernels are kept and restored by disableNativeKernels().
 */
export interface NativeKernelDef {
  kernelName: string;
  /**
   * Built when enabled, from the loaded addon and the cpu backend's own kernel of that name (null
   * for new kernels), to which unsupported cases (other dtypes, ...) can delegate. Returns null
   * when the addon lacks what it needs.
   */
  make(addon: NativeAddon, original: tf.KernelFunc | null): tf.KernelFunc | null;
  /** For new kernel names: how tfjs differentiates them. */
  gradient?: tf.GradConfig;
}

const defs: NativeKernelDef[] = [];
const replaced = new Map<string, tf.KernelConfig | null>();
const gradientsRegistered = new Set<string>();

export function defineNativeKernel(def: NativeKernelDef): void {
  defs.push(def);
}

/** Registers every native kernel on the cpu backend; returns the names now native. */
export function enableNativeKernels(): string[] {
  const addon = loadAddon();
  if (!addon) return [];
  for (const def of defs) {
    if (replaced.has(def.kernelName)) continue;
    const original = tf.getKernel(def.kernelName, 'cpu') ?? null;
    const kernelFunc = def.make(addon, original?.kernelFunc ?? null);
    if (!kernelFunc) continue;
    if (original) tf.unregisterKernel(def.kernelName, 'cpu');
    tf.registerKernel({ kernelName: def.kernelName, backendName: 'cpu', kernelFunc });
    replaced.set(def.kernelName, original);
    if (def.gradient && !gradientsRegistered.has(def.kernelName)) {
      tf.registerGradient(def.gradient);
      gradientsRegistered.add(def.kernelName);
    }
  }
  return activeNativeKernels();
}

/** Puts the plain tfjs kernels back (LWM_NATIVE=0 behaviour, and for comparing the two in tests). */
export function disableNativeKernels(): void {
  for (const [name, original] of replaced) {
    tf.unregisterKernel(name, 'cpu');
    if (original) tf.registerKernel(original);
  }
  replaced.clear();
}

export function activeNativeKernels(): string[] {
  return [...replaced.keys()];
}

/** Whether a kernel name is currently served natively on the active backend. */
export function isNativeKernelActive(name: string): boolean {
  if (!replaced.has(name)) return false;
  // Until the first op runs no backend is chosen yet; tf.backend() makes tfjs choose it.
  if (!tf.getBackend()) tf.backend();
  return tf.getBackend() === 'cpu';
}

/** The Float32Array/Int32Array behind a cpu-backend tensor (no copy: do not write to inputs). */
export function cpuValues(backend: unknown, t: tf.TensorInfo): Float32Array | Int32Array {
  return (backend as unknown as { data: { get(id: unknown): { values: Float32Array | Int32Array } } }).data.get(t.dataId).values;
}

/** Wraps a native-filled array as a cpu-backend tensor without copying it. */
export function cpuTensor(backend: unknown, shape: number[], values: Float32Array | Int32Array): tf.TensorInfo {
  return (backend as unknown as { makeTensorInfo(s: number[], d: string, v: unknown): tf.TensorInfo }).makeTensorInfo(
    shape,
    values instanceof Int32Array ? 'int32' : 'float32',
    values,
  );
}
