import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../src/index.js';
import { writeFileAtomic } from '../src/checkpoint/safetensors.js';
import { heatmapPng, lineChartPng, type HeatmapOptions, type LineChartOptions } from '../src/eval/plot.js';
import type { Argv } from 'yargs';
import { chooseModel, type ModelChoice } from './modelChoice.js';
import { bar, ProgressLine } from './progress.js';
import { clock } from './output.js';

export interface CommonEvalArgs {
  model?: string;
  preset?: string;
  'rope-theta'?: number;
  'max-len'?: number;
  dtype?: string;
  'kv-dtype'?: string;
  out: string;
  json?: boolean;
  progress: boolean;
  seed: number;
  debug?: boolean;
}

/** Flags every `lwm eval` test takes. */
export function commonOptions<T>(y: Argv<T>, kind: string): Argv<T> {
  return y
    .option('model', { alias: 'm', type: 'string', describe: 'Model folder (default: the newest checkpoint of ./lwm-out, else the tiny preset with random weights)' })
    .option('preset', { type: 'string', describe: 'Random weights of a preset instead of a model folder' })
    .option('rope-theta', { type: 'number', describe: "Override the model's RoPE theta" })
    .option('max-len', { type: 'number', describe: "Override the model's context length (max_position_embeddings)" })
    .option('dtype', { type: 'string', default: 'auto', choices: ['auto', 'f32', 'bf16', 'int8'], describe: 'Linear weights in float32, bf16 or int8 (auto: f32 unless that takes over half the memory)' })
    .option('kv-dtype', { type: 'string', default: 'f32', choices: ['f32', 'bf16'], describe: 'KV cache in float32 or bf16 (half the memory per token of context)' })
    .option('out', { type: 'string', default: path.join('lwm-eval', kind), describe: `Folder for ${kind}.json and ${kind}.png` })
    .option('json', { type: 'boolean', describe: 'Also print the results JSON on stdout' })
    .option('progress', { type: 'boolean', default: true, describe: 'Progress bar with ETA on stderr (--no-progress hides it)' })
    .option('seed', { type: 'number', default: 1234, describe: "Seed of the needles, numbers and passkeys (LWM's eval_needle.py uses 1234)" }) as unknown as Argv<T>;
}

export function openModel(command: string, a: CommonEvalArgs): ModelChoice {
  return chooseModel(command, { model: a.model, preset: a.preset, ropeTheta: a['rope-theta'], context: a['max-len'], dtype: a.dtype, kvDtype: a['kv-dtype'] });
}

export function checkCommon(a: CommonEvalArgs): void {
  if (a['max-len'] !== undefined && !(Number.isInteger(a['max-len']) && a['max-len'] > 1)) throw new InputError(`--max-len must be an integer above 1, got ${a['max-len']}`);
  if (!Number.isInteger(a.seed)) throw new InputError(`--seed must be an integer, got ${a.seed}`);
}

/** A comma list of integers within [min, max], for grid flags. */
export function intList(flag: string, value: string | number | undefined, min: number, max = Infinity): number[] | undefined {
  if (value === undefined) return undefined;
  const parts = String(value).split(',').map((s) => s.trim()).filter((s) => s !== '');
  const out = parts.map(Number);
  if (out.length === 0 || out.some((v) => !Number.isInteger(v) || v < min || v > max)) {
    throw new InputError(`--${flag} takes a comma list of integers in [${min}, ${max === Infinity ? '...' : max}], got '${value}'`);
  }
  return [...new Set(out)];
}

/** Rounds done of all, with the runner's ETA. */
export class RoundProgress {
  private readonly line: ProgressLine;
  private readonly t0 = performance.now();

  constructor(
    private readonly label: string,
    enabled: boolean,
  ) {
    this.line = new ProgressLine(process.stderr, enabled);
  }

  update(done: number, total: number, etaS: number): void {
    this.line.update(done / Math.max(1, total), this.text(done, total, etaS));
  }

  finish(done: number, total: number, summary: string): void {
    this.line.finish(`${this.text(done, total, 0)} ${summary}`);
  }

  private text(done: number, total: number, etaS: number): string {
    return `${this.label} [${bar(done / Math.max(1, total))}] ${done}/${total} ${clock((performance.now() - this.t0) / 1000)} eta ${clock(etaS)}`;
  }
}

/** Writes NAME.json and NAME.png into `out` (created if needed), each atomically; returns their paths. */
export async function writeResults(out: string, name: string, json: unknown, chart: { heatmap: HeatmapOptions } | { line: LineChartOptions }): Promise<{ json: string; png: string }> {
  if (fs.existsSync(out) && !fs.statSync(out).isDirectory()) throw new InputError(`--out ${out} is a file; give a folder for the results`);
  fs.mkdirSync(out, { recursive: true });
  const jsonFile = path.join(out, `${name}.json`);
  const pngFile = path.join(out, `${name}.png`);
  writeFileAtomic(jsonFile, JSON.stringify(json, null, 2) + '\n');
  writeFileAtomic(pngFile, 'heatmap' in chart ? await heatmapPng(chart.heatmap) : await lineChartPng(chart.line));
  return { json: jsonFile, png: pngFile };
}

/** Accuracy grid [depth][length] from cells, NaN where a cell did not run (stopped early). */
export function accuracyGrid<C extends { depth: number | null; accuracy: number; rounds: unknown[] }>(cells: readonly C[], xs: readonly number[], ys: readonly (number | null)[], x: (c: C) => number): number[][] {
  return ys.map((d) => xs.map((v) => {
    const c = cells.find((k) => x(k) === v && k.depth === d);
    return c && c.rounds.length ? c.accuracy : NaN;
  }));
}

export const pct = (v: number) => `${(100 * v).toFixed(1)}%`;
