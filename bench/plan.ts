/**
 * lwm plan against reality: runs `lwm generate` for the tiny and ~100M presets at a few prompt
 * lengths under /usr/bin/time (peak RSS) and compares each with planMemory's total.
 * Standalone: node dist/bench/plan.js [--quick] [--plain] prints JSON; exits 1 when a case is off by more than 10%.
 * --plain adds tiny runs without the native kernels (LWM_NATIVE=0).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { presetConfig } from '../models/config.js';
import { planMemory } from '../src/plan.js';

export interface PlanCase {
  preset: string;
  promptTokens: number;
  maxTokens: number;
  native: boolean;
}

export interface PlanRun extends PlanCase {
  context: number;
  measuredMiB: number;
  planMiB: number;
  /** (plan - measured) / measured, in percent. */
  errorPct: number;
  parts: { weights: number; embeddings: number; kvCache: number; activations: number; runtime: number };
  seconds: number;
}

const TIME = '/usr/bin/time';
const MiB = 2 ** 20;

/** A deterministic prompt of n ids spread over the vocabulary. */
function promptIds(n: number): string {
  return Array.from({ length: n }, (_, i) => ((i * 7919) % 31000) + 100).join(',');
}

export function measure(c: PlanCase, cli: string): PlanRun {
  const t0 = performance.now();
  const args = ['-f', 'LWM_PEAK_RSS_KB=%M', process.execPath, cli, 'generate', '--preset', c.preset, '--prompt-tokens', promptIds(c.promptTokens), '-n', String(c.maxTokens), '--ignore-eos', '--json'];
  const r = spawnSync(TIME, args, { encoding: 'utf8', env: { ...process.env, ...(c.native ? {} : { LWM_NATIVE: '0' }) }, maxBuffer: 64 * MiB });
  const m = /LWM_PEAK_RSS_KB=(\d+)/.exec(r.stderr ?? '');
  if (r.status !== 0 || !m) throw new Error(`plan bench: ${c.preset} ${c.promptTokens} tokens failed (${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`);
  const measured = (Number(m[1]) * 1024) / MiB;
  const context = c.promptTokens + c.maxTokens;
  const p = planMemory({ config: presetConfig(c.preset), context, native: c.native });
  const plan = p.total / MiB;
  const mib = (x: number) => Math.round(x / MiB);
  return {
    ...c,
    context,
    measuredMiB: Math.round(measured),
    planMiB: Math.round(plan),
    errorPct: Math.round((1000 * (plan - measured)) / measured) / 10,
    parts: { weights: mib(p.weights), embeddings: mib(p.embeddings), kvCache: mib(p.kvCache), activations: mib(p.activations), runtime: mib(p.runtime) },
    seconds: Math.round((performance.now() - t0) / 100) / 10,
  };
}

export function planCases(quick: boolean, plain: boolean): PlanCase[] {
  const lengths = quick ? [512, 4092] : [1, 512, 2048, 4092];
  const cases: PlanCase[] = [];
  for (const preset of ['tiny', '100m']) for (const n of lengths) cases.push({ preset, promptTokens: n, maxTokens: 4, native: true });
  if (plain) for (const n of [512, 2048]) cases.push({ preset: 'tiny', promptTokens: n, maxTokens: 4, native: false });
  return cases;
}

export function planBench(quick: boolean, plain: boolean): PlanRun[] {
  if (!fs.existsSync(TIME)) throw new Error(`plan bench: ${TIME} is needed to measure peak RSS (GNU time; apt-get install time)`);
  const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'lwm.js');
  const runs: PlanRun[] = [];
  for (const c of planCases(quick, plain)) {
    runs.push(measure(c, cli));
    process.stderr.write(`plan bench: ${JSON.stringify(runs.at(-1))}\n`);
  }
  return runs;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const runs = planBench(process.argv.includes('--quick'), process.argv.includes('--plain'));
  process.stdout.write(JSON.stringify(runs, null, 2) + '\n');
  const off = runs.filter((r) => Math.abs(r.errorPct) > 10);
  if (off.length) {
    process.stderr.write(`plan bench: ${off.length} case(s) off by more than 10%\n`);
    process.exitCode = 1;
  }
}
