import * as os from 'node:os';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '../ops/errors.js';
import { addonStatus, enableNativeKernels, loadAddon } from '../ops/native/index.js';

/**
 * Picks the TensorFlow.js backend: tfjs-node-gpu when it loads (one GPU per process; ring ranks
 * pin theirs with CUDA_VISIBLE_DEVICES), else tfjs-node, else the plain JS `cpu` backend, where
 * lwm's native kernels plug in. `LWM_BACKEND` = auto | node-gpu | node | cpu overrides.
 */

export interface BackendInfo {
  /** tfjs backend name: 'tensorflow' or 'cpu'. */
  name: string;
  /** Which package provides it. */
  provider: string;
  /** Why this one was chosen, for `lwm doctor`. */
  reason: string;
  /** Whether lwm's native CPU kernels are registered. */
  native: boolean;
  nativeReason: string;
  /** Kernel names served natively. */
  nativeKernels: string[];
  /** SIMD instruction set the native kernels use ('avx512', 'avx2', 'scalar'), if loaded. */
  isa: string | null;
  threads: number;
}

const require = createRequire(import.meta.url);
let current: Promise<BackendInfo> | null = null;

export function initBackend(): Promise<BackendInfo> {
  current ??= select();
  return current;
}

const CHOICES = ['auto', 'node-gpu', 'node', 'cpu'] as const;

async function select(): Promise<BackendInfo> {
  const wanted = (process.env['LWM_BACKEND'] ?? 'auto').toLowerCase();
  if (!(CHOICES as readonly string[]).includes(wanted)) {
    throw new ConfigError(`LWM_BACKEND='${wanted}' is not one of ${CHOICES.join(', ')}`);
  }
  const tried: string[] = [];
  for (const [choice, pkg] of [['node-gpu', '@tensorflow/tfjs-node-gpu'], ['node', '@tensorflow/tfjs-node']] as const) {
    if (wanted !== 'auto' && wanted !== choice) continue;
    const failure = tryLoad(pkg);
    if (!failure && (await tf.setBackend('tensorflow'))) {
      return finish('tensorflow', pkg, wanted === 'auto' ? `${pkg} is installed and loaded` : `LWM_BACKEND=${wanted}`);
    }
    if (wanted === choice) throw new ConfigError(`LWM_BACKEND=${wanted} but ${pkg} cannot be loaded (${failure ?? 'backend failed to start'}); install it or unset LWM_BACKEND`);
    tried.push(`${pkg}: ${failure ?? 'failed to start'}`);
  }
  // The JS cpu backend greets Node users with an install banner on first use; lwm doctor explains instead.
  tf.env().set('PROD', true);
  await tf.setBackend('cpu');
  return finish('cpu', '@tensorflow/tfjs', wanted === 'cpu' ? 'LWM_BACKEND=cpu' : `fallback (${tried.join('; ')})`);
}

function tryLoad(pkg: string): string | null {
  try {
    require(pkg);
    return null;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === 'MODULE_NOT_FOUND' ? 'not installed' : String((e as Error).message ?? e).split('\n')[0]!;
  }
}

function finish(name: string, provider: string, reason: string): BackendInfo {
  let threads = Number(process.env['LWM_THREADS']) || os.availableParallelism?.() || os.cpus().length;
  const base = { name, provider, reason, native: false, nativeKernels: [] as string[], isa: null as string | null, threads };
  // tfjs-node(-gpu) runs TensorFlow's own kernels; lwm's native kernels are for the JS cpu backend.
  if (name !== 'cpu') return { ...base, nativeReason: 'not used with the tensorflow backend' };
  const addon = loadAddon();
  if (!addon) return { ...base, nativeReason: addonStatus().reason };
  const kernels = enableNativeKernels();
  const info = addon.info();
  threads = info.threads;
  return {
    ...base,
    native: kernels.length > 0,
    nativeKernels: kernels,
    isa: info.isa,
    threads,
    nativeReason: kernels.length ? `${info.isa}, ${threads} threads: ${kernels.join(', ')}` : 'addon loaded but it provides no kernels',
  };
}
