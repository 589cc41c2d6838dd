import { describe, expect, it } from '@jest/globals';
import { addonStatus, loadAddon } from '../../../ops/native/index.js';

// The addon is built by `npm ci`; a machine without a C++ toolchain may set LWM_ALLOW_NO_NATIVE=1.
const required = process.env['LWM_NATIVE'] !== '0' && process.env['LWM_ALLOW_NO_NATIVE'] !== '1';

describe('native addon', () => {
  it('is built and loads (or says why not)', () => {
    const addon = loadAddon();
    if (required) expect({ loaded: addonStatus().loaded, reason: addonStatus().reason }).toEqual({ loaded: true, reason: expect.stringMatching(/^loaded from/) });
    else expect(addonStatus().reason.length).toBeGreaterThan(0);
    if (!addon) return;
    const info = addon.info();
    expect(['avx512', 'avx2', 'scalar']).toContain(info.isa);
    expect(info.threads).toBeGreaterThanOrEqual(1);
  });

  const addon = loadAddon();
  (addon ? it : it.skip)('resizes its thread pool and lowers its ISA on request', () => {
    const a = addon!;
    const before = a.info();
    expect(a.setThreads(1)).toBe(1);
    expect(a.info().threads).toBe(1);
    expect(a.setThreads(before.threads)).toBe(before.threads);
    expect(a.setIsa('scalar')).toBe('scalar');
    expect(a.info().isa).toBe('scalar');
    // Asking for more than the hardware has gives what it has.
    expect(a.setIsa('avx512')).toBe(before.isa);
  });

  (addon ? it : it.skip)('measures a vector FMA peak and allocates zeroed native buffers', () => {
    const a = addon!;
    if (a.info().isa !== 'scalar') expect(a.peakGflops(0.05)).toBeGreaterThan(1);
    const big = a.alloc(1 << 20);
    expect(big.length).toBe(1 << 20);
    expect(big[0]).toBe(0);
    expect(big[(1 << 20) - 1]).toBe(0);
    big[5] = 3;
    expect(big[5]).toBe(3);
    expect(a.alloc(3).length).toBe(3);
  });
});
