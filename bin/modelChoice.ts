import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { initParams, InputError, latestCheckpoint, LlamaModel, loadModel, lowerParams, paramCount, presetConfig, readModelConfig, type KvDtype, type LlamaConfig, type WeightDtype } from '../src/index.js';
import { withOverrides, type ContextOverrides } from '../src/checkpoint/source.js';
import { note } from './output.js';

/** Where `lwm train` writes by default; chat, serve and eval look there for a model first. */
export const DEFAULT_TRAIN_OUT = 'lwm-out';

export interface ModelChoice {
  model: LlamaModel;
  /** The folder it came from (for the tokenizer and a vqgan/ subfolder); undefined for a preset. */
  dir?: string;
  /** For messages and the API's model id. */
  name: string;
}

/** float32 when those weights take at most half of this machine's memory, else bf16. */
export function autoDtype(config: Readonly<LlamaConfig>): WeightDtype {
  return paramCount(config) * 4 <= os.totalmem() / 2 ? 'f32' : 'bf16';
}

/**
 * How linear weights are held: as asked, or with 'auto' float32 when that takes at most half of
 * this machine's memory and bf16 otherwise (a 7B model: 13.5 GB instead of 27 GB).
 */
export function weightDtype(command: string, asked: string | undefined, config: Readonly<LlamaConfig>): WeightDtype {
  if (asked !== undefined && asked !== 'auto') {
    if (!['f32', 'bf16', 'int8'].includes(asked)) throw new InputError(`--dtype must be auto, f32, bf16 or int8, got '${asked}'`);
    return asked as WeightDtype;
  }
  if (autoDtype(config) === 'f32') return 'f32';
  const f32 = paramCount(config) * 4;
  note(`lwm ${command}: float32 weights would take ${(f32 / 2 ** 30).toFixed(1)} GiB of this machine's ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB; holding linear weights in bf16 (--dtype f32 to insist)`);
  return 'bf16';
}

/**
 * The model a command runs: --model DIR, else --preset, else the newest checkpoint of the
 * default training run (./lwm-out/checkpoints/step-N), else the built-in tiny preset with random
 * weights (so every command works on a fresh machine), with a note on stderr saying which.
 */
export function chooseModel(command: string, a: { model?: string; preset?: string; ropeTheta?: number; context?: number; fallbackPreset?: string; dtype?: string; kvDtype?: string }): ModelChoice {
  const choice = chooseModelWeights(command, a);
  choice.model.kvDtype = kvDtype(a.kvDtype);
  return choice;
}

/** --kv-dtype checked (yargs choices cover the CLI; this covers library callers of chooseModel). */
export function kvDtype(v: string | undefined): KvDtype {
  if (v === undefined || v === 'f32' || v === 'bf16') return v ?? 'f32';
  throw new InputError(`--kv-dtype must be f32 or bf16, got '${v}'`);
}

function chooseModelWeights(command: string, a: { model?: string; preset?: string; ropeTheta?: number; context?: number; fallbackPreset?: string; dtype?: string }): ModelChoice {
  if (a.model && a.preset) throw new InputError('give either --model or --preset, not both');
  if (a.context !== undefined && !(Number.isInteger(a.context) && a.context > 0)) throw new InputError(`--context must be a positive integer, got ${a.context}`);
  const overrides = { ...(a.ropeTheta !== undefined ? { ropeTheta: a.ropeTheta } : {}), ...(a.context !== undefined ? { maxSeqLen: a.context } : {}) };
  if (a.model) return { model: loadFolder(command, a.model, overrides, a.dtype), dir: a.model, name: path.basename(path.resolve(a.model)) };
  if (!a.preset) {
    const latest = latestCheckpoint(DEFAULT_TRAIN_OUT);
    if (latest && fs.existsSync(path.join(latest.dir, 'config.json'))) {
      note(`lwm ${command}: no --model given, using the newest training checkpoint ${latest.dir}`);
      return { model: loadFolder(command, latest.dir, overrides, a.dtype), dir: latest.dir, name: path.basename(latest.dir) };
    }
  }
  const preset = a.preset ?? a.fallbackPreset ?? 'tiny';
  if (!a.preset) note(`lwm ${command}: no --model given, using the built-in '${preset}' preset with random weights (its output is noise); pass --model DIR for a real model`);
  return { model: randomModel(command, preset, presetConfig(preset, overrides), a.dtype), name: preset };
}

/** A model folder with its linear weights held as --dtype asks (auto: by the folder's config). */
export function loadFolder(command: string, dir: string, overrides: ContextOverrides, dtype: string | undefined): LlamaModel {
  return loadModel(dir, { ...overrides, dtype: weightDtype(command, dtype, withOverrides(readModelConfig(dir), overrides)) });
}

/**
 * Random weights of a preset (made in float32, so refused where that would not fit), then held as
 * --dtype asks.
 */
export function randomModel(command: string, preset: string, config: Readonly<LlamaConfig>, dtype: string | undefined): LlamaModel {
  const bytes = paramCount(config) * 4;
  if (bytes > os.totalmem() * 0.7) {
    throw new InputError(`random '${preset}' weights need ${(bytes / 2 ** 30).toFixed(1)} GiB in float32, more than this machine's ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB allows; use a smaller preset`);
  }
  const model = new LlamaModel(config, initParams(config, 0));
  const held = weightDtype(command, dtype, config);
  return held === 'f32' ? model : new LlamaModel(model.config, lowerParams(model.params, held));
}

/** The VQGAN for images and videos: --vqgan, else the model folder's vqgan/ subfolder (LWM-Chat's Jax release layout). */
export function chooseVqgan(vqgan: string | undefined, modelDir: string | undefined): string | undefined {
  if (vqgan) return vqgan;
  if (modelDir && fs.existsSync(path.join(modelDir, 'vqgan', 'config.json'))) return path.join(modelDir, 'vqgan');
  return undefined;
}
