import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

/** The compiled addon's interface; each kernel module adds its functions (see src/*_napi.cc). */
export interface NativeAddon {
  info(): { isa: string; threads: number };
  setThreads(n: number): number;
  setIsa(isa: 'avx512' | 'avx2' | 'scalar'): string;
  /** Measured fp32 FMA GFLOP/s over all pool threads. */
  peakGflops(seconds?: number): number;
  /** A zeroed Float32Array in native memory advised for huge pages (cheap first touch). */
  alloc(length: number): Float32Array;
  [fn: string]: unknown;
}

export interface AddonStatus {
  loaded: boolean;
  /** Why it is or is not loaded. */
  reason: string;
  path?: string;
}

const require = createRequire(import.meta.url);
let cached: { addon: NativeAddon | null; status: AddonStatus } | undefined;

/** Where `npm ci` builds the addon: <package>/ops/native/build/Release (this file is in dist/ops/native). */
function addonPath(): string {
  if (process.env['LWM_NATIVE_PATH']) return process.env['LWM_NATIVE_PATH'];
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.resolve(here, '..', '..', '..', 'ops', 'native', 'build', 'Release', 'lwm_native.node');
}

/** The addon, or null (with the reason in addonStatus()) when disabled, not built or not loadable. */
export function loadAddon(): NativeAddon | null {
  if (!cached) cached = load();
  return cached.addon;
}

export function addonStatus(): AddonStatus {
  loadAddon();
  return cached!.status;
}

function load(): { addon: NativeAddon | null; status: AddonStatus } {
  if (process.env['LWM_NATIVE'] === '0') return { addon: null, status: { loaded: false, reason: 'LWM_NATIVE=0' } };
  const p = addonPath();
  if (!fs.existsSync(p)) {
    return { addon: null, status: { loaded: false, reason: `not built (${p} is missing; run \`npm run build:native\`, which needs python3, make and g++)`, path: p } };
  }
  try {
    const addon = require(p) as NativeAddon;
    return { addon, status: { loaded: true, reason: `loaded from ${p}`, path: p } };
  } catch (e) {
    return { addon: null, status: { loaded: false, reason: `cannot load ${p}: ${String((e as Error).message).split('\n')[0]}`, path: p } };
  }
}
