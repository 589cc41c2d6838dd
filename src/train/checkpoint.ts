import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../../ops/errors.js';
import type { LlamaConfig } from '../../models/config.js';
import { paramSpecs } from '../../models/params.js';
import { isProcessAlive } from '../checkpoint/files.js';
import { readModelConfig, saveModel } from '../checkpoint/modelDir.js';
import { readSafetensorsHeader, readTensorF32, readWeightIndex, writeSafetensors } from '../checkpoint/safetensors.js';
import type { Trainer } from './trainer.js';

/**
 * A training checkpoint is a model folder (config.json + model.safetensors in F32, so `lwm chat -m`
 * and `loadModel` open it as is) plus:
 *   optimizer.safetensors   AdamW moments `m/<param>` and `v/<param>` (F32)
 *   trainer.json            update count, data position, stage and the run's settings
 * It is built in a temporary sibling and renamed to `step-<N>`: a crash mid-save leaves the
 * previous checkpoints untouched, and a folder named step-<N> is always complete.
 */

export const CHECKPOINTS_DIR = 'checkpoints';
const OPTIMIZER_FILE = 'optimizer.safetensors';
const STATE_FILE = 'trainer.json';

export interface TrainerState {
  version: 1;
  /** Optimizer updates done. */
  step: number;
  [key: string]: unknown;
}

export function checkpointName(step: number): string {
  return `step-${String(step).padStart(8, '0')}`;
}

/** Finished checkpoints under root, oldest first. */
export function listCheckpoints(root: string): { dir: string; step: number }[] {
  const dir = path.join(root, CHECKPOINTS_DIR);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((n) => ({ n, m: /^step-(\d{8})$/.exec(n) }))
    .filter((x) => x.m && fs.existsSync(path.join(dir, x.n, STATE_FILE)))
    .map((x) => ({ dir: path.join(dir, x.n), step: Number(x.m![1]) }))
    .sort((a, b) => a.step - b.step);
}

export function latestCheckpoint(root: string): { dir: string; step: number } | null {
  return listCheckpoints(root).at(-1) ?? null;
}

/** Writes checkpoint `step` and keeps the newest `keep` (>= 1). Returns its folder. */
export function saveCheckpoint(root: string, trainer: Trainer, state: TrainerState, keep: number): string {
  const parent = path.join(root, CHECKPOINTS_DIR);
  fs.mkdirSync(parent, { recursive: true });
  removeDeadTemporaries(parent);
  const final = path.join(parent, checkpointName(state.step));
  const tmp = path.join(parent, `.${checkpointName(state.step)}.tmp-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  try {
    saveModel(tmp, trainer.model);
    const opt = trainer.optimizer.state();
    const names = [...opt.m.keys()];
    writeSafetensors(
      path.join(tmp, OPTIMIZER_FILE),
      names.flatMap((n) => [
        { name: `m/${n}`, shape: [opt.m.get(n)!.length], data: () => opt.m.get(n)! },
        { name: `v/${n}`, shape: [opt.v.get(n)!.length], data: () => opt.v.get(n)! },
      ]),
      'F32',
      { step: String(opt.step) },
    );
    // Tests kill the process here (the model written, the checkpoint not yet complete).
    if (process.env['LWM_TEST_CRASH_IN_SAVE'] === String(state.step)) process.kill(process.pid, 'SIGKILL');
    const stateFile = path.join(tmp, STATE_FILE);
    fs.writeFileSync(stateFile, JSON.stringify(state, null, 2) + '\n');
    const fd = fs.openSync(stateFile, 'r');
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fs.rmSync(final, { recursive: true, force: true });
    fs.renameSync(tmp, final);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  for (const old of listCheckpoints(root).slice(0, -Math.max(1, keep))) fs.rmSync(old.dir, { recursive: true, force: true });
  return final;
}

/** Half-written checkpoints of processes that died mid-save (and this process's own, about to be redone). */
function removeDeadTemporaries(parent: string): void {
  for (const n of fs.readdirSync(parent)) {
    const m = /^\.step-\d{8}\.tmp-(\d+)$/.exec(n);
    const pid = m ? Number(m[1]) : NaN;
    if (m && (pid === process.pid || !isProcessAlive(pid))) fs.rmSync(path.join(parent, n), { recursive: true, force: true });
  }
}

export interface LoadedCheckpoint {
  config: Readonly<LlamaConfig>;
  weights: Map<string, Float32Array>;
  optimizer: { step: number; m: Map<string, Float32Array>; v: Map<string, Float32Array> };
  state: TrainerState;
}

/** Reads a checkpoint folder back exactly (F32 weights and moments). */
export function loadCheckpoint(dir: string): LoadedCheckpoint {
  const stateFile = path.join(dir, STATE_FILE);
  if (!fs.existsSync(stateFile)) throw new CheckpointError(`${dir}: no ${STATE_FILE}; not a training checkpoint (use --model to fine-tune from a plain model folder)`);
  const config = readModelConfig(dir);
  const weights = new Map<string, Float32Array>();
  const index = readWeightIndex(dir);
  for (const s of paramSpecs(config as LlamaConfig)) {
    const e = index.get(s.name);
    if (!e) throw new CheckpointError(`${dir}: weight ${s.name} is missing`);
    if (e.dtype !== 'F32') throw new CheckpointError(`${e.file}: ${s.name} is ${e.dtype}; a training checkpoint stores F32 so resuming is exact`);
    weights.set(s.name, readTensorF32(e, e.file));
  }
  const optFile = path.join(dir, OPTIMIZER_FILE);
  const h = readSafetensorsHeader(optFile);
  const m = new Map<string, Float32Array>();
  const v = new Map<string, Float32Array>();
  for (const [name, e] of h.tensors) {
    const target = name.startsWith('m/') ? m : name.startsWith('v/') ? v : null;
    if (!target) throw new CheckpointError(`${optFile}: unexpected tensor ${name}`);
    target.set(name.slice(2), readTensorF32(e, optFile));
  }
  let state: TrainerState;
  try {
    state = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as TrainerState;
  } catch (e) {
    throw new CheckpointError(`${stateFile}: not valid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  return { config, weights, optimizer: { step: Number(h.metadata['step'] ?? state.step), m, v }, state };
}
