import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from '@jest/globals';
import { cliPath, fixture, tmpDir } from '../helpers/paths.js';
import { expectOneLineError, lwm } from '../helpers/cli.js';

/** Failures are one line on stderr, exit code 1, no stack trace. */

const model = fixture('tiny-lwm-text');
const expected = JSON.parse(fs.readFileSync(path.join(model, 'expected.json'), 'utf8'));
const sentence = expected.cases[0];

describe('lwm CLI', () => {
  it('--help lists the commands', () => {
    const r = lwm(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/lwm generate/);
    expect(r.stdout).toMatch(/lwm doctor/);
    expect(r.stdout).toMatch(/lwm launch/);
  });

  it('every command has --help with examples', () => {
    for (const cmd of ['generate', 'doctor', 'launch']) {
      const r = lwm([cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/Examples:/);
    }
  });

  it('an unknown flag or command is a one-line error', () => {
    expectOneLineError(lwm(['generate', '--bogus', '1', '-p', 'x']), /^lwm generate: error: Unknown argument: bogus/);
    expectOneLineError(lwm(['xyzzy']), /^lwm xyzzy: error: Unknown argument: xyzzy/);
  });

  it('generate --json with --prompt-tokens reproduces the reference greedy tokens, with LWM_NATIVE=0 too', () => {
    for (const env of [{}, { LWM_NATIVE: '0' }] as Record<string, string>[]) {
      const r = lwm(['generate', '-m', model, '--prompt-tokens', sentence.prompt.join(','), '-n', '16', '--top-logprobs', '5', '--echo', '--json', '--ignore-eos'], env);
      expect(r.code).toBe(0);
      const out = JSON.parse(r.stdout);
      expect(out.prompt).toEqual(sentence.prompt);
      expect(out.tokens).toEqual(sentence.greedy);
      expect(out.steps[0].top.map((t: number[]) => t[0])).toEqual(sentence.steps[0].top.map((t: number[]) => t[0]));
      expect(Math.abs(out.steps[0].top[0][1] - sentence.steps[0].top[0][1])).toBeLessThan(1e-3);
      expect(out.prompt_top).toHaveLength(sentence.prompt.length);
    }
  });

  it('generate with text streams the continuation to stdout', () => {
    const r = lwm(['generate', '-m', model, '-p', 'The quick brown fox', '-n', '8', '--timings']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim().length).toBeGreaterThan(0);
    expect(r.stderr).toMatch(/prompt: 6 tokens/);
  });

  it('runs the built-in tiny preset with no model folder', () => {
    const r = lwm(['generate', '-p', 'Hello', '-n', '4', '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).tokens).toHaveLength(4);
    expect(r.stderr).toMatch(/built-in 'tiny' preset with random weights/);
  });

  it('bad input: token id outside the vocabulary, over-long prompt, missing config, bad values', () => {
    expectOneLineError(lwm(['generate', '-m', model, '--prompt-tokens', '1,32000']), /^lwm generate: error: prompt token 1 is 32000, outside the vocabulary \[0, 32000\)/);
    expectOneLineError(lwm(['generate', '-m', model, '--prompt-tokens', new Array(4097).fill(1).join(',')]), /the prompt has 4097 tokens, but the model's context is 4096/);
    expectOneLineError(lwm(['generate', '-m', model, '--prompt-tokens', '1,abc']), /'abc' is not a token id/);
    const empty = tmpDir('cli');
    expectOneLineError(lwm(['generate', '-m', empty, '-p', 'x']), /missing config.json/);
    expectOneLineError(lwm(['generate', '-m', model, '-p', 'x', '--temperature', '-1']), /temperature must be >= 0/);
    expectOneLineError(lwm(['generate', '-m', model]), /exactly one of -p\/--prompt TEXT or --prompt-tokens/);
    expectOneLineError(lwm(['generate', '--preset', '65b', '-p', 'x']), /lwm generate with preset 65b .* would run out of memory: .* the weights alone do not fit/);
  });

  it('--debug shows the stack trace', () => {
    const r = lwm(['generate', '-m', tmpDir('cli'), '-p', 'x', '--debug']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/\n\s+at /);
  });

  it('doctor reports backend, native kernels, threads, ffmpeg and node', () => {
    const r = lwm(['doctor']);
    expect(r.code).toBe(0);
    for (const key of ['backend', 'native', 'threads', 'ffmpeg', 'node', 'ring']) expect(r.stdout).toMatch(new RegExp(`^${key}\\s`, 'm'));
    expect(r.stdout).toMatch(/^ring\s+zeromq \d+\.\d+\.\d+; single process/m);
    expect(lwm(['doctor'], { env: { RANK: '2', WORLD_SIZE: '3' } }).stdout).toMatch(/^ring\s+zeromq .*; rank 2 of 3 \(torchrun\)/m);
    const j = JSON.parse(lwm(['doctor', '--json'], { env: { LWM_BACKEND: 'cpu' } }).stdout);
    expect(j.backend).toBe('cpu');
    expect(j.backend_reason).toBe('LWM_BACKEND=cpu');
    expectOneLineError(lwm(['doctor'], { env: { LWM_BACKEND: 'tpu' } }), /LWM_BACKEND='tpu' is not one of auto, node-gpu, node, cpu/);
  });
});
