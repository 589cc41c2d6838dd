import * as fs from 'node:fs';
import { describe, expect, it } from '@jest/globals';
import { expectOneLineError, lwm } from '../helpers/cli.js';
import { cliPath, fixture } from '../helpers/paths.js';
import { measure } from '../../bench/plan.js';

/** lwm plan, and the same plan refusing what does not fit in chat/generate/serve before anything loads. */

describe('lwm plan', () => {
  it('prints each part, the verdict and the longest context', () => {
    const r = lwm(['plan', '--preset', '100m', '--context', '2048', '--memory', '16']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('preset 100m: 100.4M parameters, 2,048 tokens of context, weights f32, KV cache f32');
    for (const part of ['weights', 'embeddings', 'KV cache', 'activations', 'runtime', 'total']) expect(r.stdout).toMatch(new RegExp(`^  ${part} +\\d`, 'm'));
    expect(r.stdout).toMatch(/^  KV cache +120 MiB  12 layers x 2 x 2,048 tokens x 640 x 4 B$/m);
    expect(r.stdout).toMatch(/^fits: 2,048 tokens of context need [\d.]+ (MiB|GiB), \d+% of the 16\.0 GiB of --memory$/m);
    expect(lines.at(-1)).toMatch(/^longest context in the 16\.0 GiB of --memory: [\d,]+ tokens \(the model's context is 4,096; the KV cache takes 60 MiB per 1K tokens\)$/);
    expect(r.stderr).toBe('');
  });

  it('--json gives bytes; bf16 weights and cache make 7B at 32K fit in 48 GiB where f32 does not', () => {
    const f32 = JSON.parse(lwm(['plan', '--preset', '7b', '--context', '32768', '--memory', '48', '--json']).stdout);
    expect(f32.bytes.kv_cache).toBe(32 * 2 * 32768 * 4096 * 4);
    expect(f32.bytes.weights + f32.bytes.embeddings).toBe(6_738_415_616 * 4);
    expect(f32.bytes.total).toBe(f32.bytes.weights + f32.bytes.embeddings + f32.bytes.kv_cache + f32.bytes.activations + f32.bytes.runtime);
    expect(f32.fits).toBe(false);
    expect(f32.verdict).toMatch(/^does not fit: 32,768 tokens .* more than the 48\.0 GiB of --memory; the longest context that fits is [\d,]+ tokens$/);
    expect(f32.longest_context).toBeGreaterThan(4096);
    expect(f32.longest_context).toBeLessThan(32768);
    expect(f32).toMatchObject({ model: 'preset 7b', parameters: 6_738_415_616, model_context: 4096, context: 32768, dtype: 'f32', kv_dtype: 'f32', sp: 1, memory: { bytes: 48 * 2 ** 30, source: '--memory' } });
    const bf16 = JSON.parse(lwm(['plan', '--preset', '7b', '--context', '32768', '--memory', '48', '--dtype', 'bf16', '--kv-dtype', 'bf16', '--json']).stdout);
    expect(bf16.fits).toBe(true);
    expect(bf16.bytes.kv_cache).toBe(f32.bytes.kv_cache / 2);
    expect(bf16.longest_context).toBeGreaterThan(32768);
  });

  it('reads only config.json of a model folder', () => {
    const r = lwm(['plan', '-m', fixture('tiny-lwm-text'), '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.model).toBe('tiny-lwm-text');
    expect(j.context).toBe(j.model_context);
  });

  it('bad flags are one-line errors', () => {
    expectOneLineError(lwm(['plan', '--preset', 'tiny', '--context', '0']), /^lwm plan: error: --context must be a positive integer, got 0$/);
    expectOneLineError(lwm(['plan', '--preset', 'tiny', '--memory', '-2']), /^lwm plan: error: --memory must be a positive number of GiB, got -2$/);
    expectOneLineError(lwm(['plan', '--preset', 'tiny', '--dtype', 'f16']), /^lwm plan: error: --dtype must be f32, bf16, int8, got 'f16'$/);
    expectOneLineError(lwm(['plan', '--preset', 'tiny', '--kv-dtype', 'int8']), /^lwm plan: error: --kv-dtype must be f32 or bf16, got 'int8'$/);
    expectOneLineError(lwm(['plan', '--preset', 'nope']), /^lwm plan: error: unknown preset 'nope'/);
    expectOneLineError(lwm(['plan', '-m', '/no/such/model']), /^lwm plan: error: \/no\/such\/model: no such model folder/);
  });

  it('--help has examples and lwm --help lists it', () => {
    expect(lwm(['plan', '--help']).stdout).toMatch(/Examples:/);
    expect(lwm(['--help']).stdout).toMatch(/lwm plan/);
  });
});

describe('chat, generate and serve plan first', () => {
  it('generate refuses a model whose weights do not fit, in one line, before loading anything', () => {
    const r = lwm(['generate', '--preset', '7b', '--dtype', 'f32', '-p', 'hello'], { env: { LWM_MEMORY_GIB: '16' } });
    expectOneLineError(
      r,
      /^lwm generate: error: lwm generate with preset 7b \(\d+ prompt \+ 64 new tokens\) would run out of memory: \d+ tokens of context need [\d.]+ GiB \(weights 25\.1 GiB \+ KV cache .*\), more than the 16\.0 GiB of LWM_MEMORY_GIB; the weights alone do not fit: use a smaller model or lower-precision weights/,
    );
  });

  it('generate refuses a request whose KV cache does not fit and says how long one may be', () => {
    const r = lwm(['generate', '--preset', '100m', '--prompt-tokens', '1,2,3', '-n', '4000'], { env: { LWM_MEMORY_GIB: '0.6' } });
    expectOneLineError(r, /^lwm generate: error: lwm generate with preset 100m \(3 prompt \+ 4,000 new tokens\) would run out of memory: 4,003 tokens of context need .* the longest context that fits is [\d,]+ tokens; shorten the prompt or -n$/);
  });

  it('chat refuses a --context that does not fit', () => {
    const r = lwm(['chat', '--preset', 'tiny', '--context', '100000000', '-p', 'hi'], { env: { LWM_MEMORY_GIB: '1' } });
    expectOneLineError(r, /^lwm chat: error: lwm chat with preset tiny would run out of memory: 100,000,000 tokens of context need .* the longest context that fits is [\d,]+ tokens; pass a lower --context$/);
  });

  it("chat runs at the longest context that fits when the model's own does not, and says so", () => {
    // Without the native kernels, attention scores make tiny's 4K context need ~0.5 GiB.
    const r = lwm(['chat', '--preset', 'tiny', '-p', 'hi', '-n', '2'], { env: { LWM_MEMORY_GIB: '0.25', LWM_NATIVE: '0' } });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^lwm chat: the model's 4,096-token context needs [\d.]+ MiB, more than the 256 MiB of LWM_MEMORY_GIB; running with a context of [\d,]+ tokens, the longest that fits; lwm plan shows why$/m);
  });

  it('serve refuses to start when not even the weights fit', () => {
    const r = lwm(['serve', '--preset', '100m', '--port', '0'], { env: { LWM_MEMORY_GIB: '0.3' }, timeoutMs: 30_000 });
    expectOneLineError(r, /^lwm serve: error: lwm serve with preset 100m would run out of memory: .*the weights alone do not fit/);
  });

  const time = fs.existsSync('/usr/bin/time');
  (time ? it : it.skip)('the plan is within 10% of the peak RSS of a real run (tiny, 1K-token prompt)', () => {
    const native = JSON.parse(lwm(['plan', '--preset', 'tiny', '--json']).stdout).native_attention as boolean;
    const r = measure({ preset: 'tiny', promptTokens: 1020, maxTokens: 4, native }, cliPath);
    expect(Math.abs(r.errorPct)).toBeLessThanOrEqual(10);
  });
});
