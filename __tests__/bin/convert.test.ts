import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from '@jest/globals';
import { cliPath, fixture, tmpDir } from '../helpers/paths.js';

function lwm(args: string[]) {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const jax = fixture('tiny-lwm-text-jax');
const ref = fixture('tiny-lwm-text');
const work = tmpDir('convert-cli');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('lwm convert', () => {
  it('turns Jax params into a model folder that generates exactly what the original does', () => {
    const out = path.join(work, 'model');
    const r = lwm(['convert', path.join(jax, 'params'), out, '--config', path.join(ref, 'config.json')]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(path.resolve(out));
    expect(r.stderr).toMatch(/21 tensors \(scanned layers\)/);
    const gen = (m: string) => JSON.parse(lwm(['generate', '-m', m, '--prompt-tokens', '1,450,4996,17354', '-n', '8', '--top-logprobs', '3', '--json']).stdout);
    expect(gen(out).tokens).toEqual(gen(ref).tokens);
  });

  it('turns a sharded PyTorch .bin folder into a model folder that generates what the original does', () => {
    const out = path.join(work, 'from-bin');
    const r = lwm(['convert', fixture('tiny-lwm-text-pt'), out]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/21 tensors from PyTorch \.bin/);
    const gen = (m: string) => JSON.parse(lwm(['generate', '-m', m, '--prompt-tokens', '1,450,4996,17354', '-n', '8', '--json']).stdout);
    expect(gen(out).tokens).toEqual(gen(ref).tokens);
  });

  it('turns the vqgan pickle into a VQGAN folder', () => {
    const out = path.join(work, 'vqgan');
    const r = lwm(['convert', path.join(fixture('tiny-vqgan-pickle'), 'vqgan-protocol5'), out, '--config', path.join(fixture('tiny-vqgan-pickle'), 'config.json')]);
    expect(r.code).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(['config.json', 'model.safetensors']);
    expect(r.stderr).not.toMatch(/Hi, looks like/);
  });

  it('refuses, in one line and without an output folder: no architecture, a foreign file, a non-empty output', () => {
    const noArch = lwm(['convert', path.join(jax, 'params'), path.join(work, 'a')]);
    expect(noArch.code).toBe(1);
    expect(noArch.stderr.trim()).toMatch(/^lwm convert: error: a Jax params file stores no architecture: give exactly one of --preset NAME or --config/);
    const foreign = lwm(['convert', path.join(jax, 'records.txt'), path.join(work, 'b')]);
    expect(foreign.stderr.trim()).toMatch(/neither a Jax params file nor a pickle/);
    const full = path.join(work, 'full');
    fs.mkdirSync(full);
    fs.writeFileSync(path.join(full, 'x'), 'keep me');
    expect(lwm(['convert', path.join(jax, 'params'), full, '--preset', 'tiny']).stderr).toMatch(/exists and is not empty/);
    expect(fs.readFileSync(path.join(full, 'x'), 'utf8')).toBe('keep me');
    expect(fs.existsSync(path.join(work, 'a')) || fs.existsSync(path.join(work, 'b'))).toBe(false);
  });
});
