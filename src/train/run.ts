import * as fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import * as path from 'node:path';
import { ConfigError, InputError } from '../../ops/errors.js';
import { layoutUnit, type RingLayout } from '../../ops/ring/layout.js';
import { presetConfig, type LlamaConfig } from '../../models/config.js';
import { LlamaModel } from '../../models/llama.js';
import { initParams, ParamStore, paramSpecs, paramName } from '../../models/params.js';
import { BatchIterator, type Batch, type BatchState } from '../../data/batches.js';
import type { LossWeighting } from '../../data/packing.js';
import { loadTokenizer } from '../../data/tokenizer.js';
import { loadModel } from '../checkpoint/modelDir.js';
import { writeFileAtomic } from '../checkpoint/safetensors.js';
import type { ProcessGroup } from '../distributed/processGroup.js';
import { latestCheckpoint, loadCheckpoint, saveCheckpoint, type TrainerState } from './checkpoint.js';
import { openTrainRows, rowRange, type TrainRows } from './data.js';
import type { LossBatch } from './loss.js';
import { lossCurvePng } from './plot.js';
import { makeSchedule } from './schedule.js';
import { Trainer, type StepMetrics } from './trainer.js';

/** One stage of progressive context extension (the paper's 4K -> 32K -> ... -> 1M). */
export interface Stage {
  seqLen: number;
  ropeTheta: number;
  steps: number;
}

export interface TrainConfig {
  out: string;
  /** Random init from a preset, or fine-tune the model folder `model`. */
  preset?: string;
  model?: string;
  data: string;
  /** Held-out data (same kinds as data); default: the last evalFraction of the rows. */
  evalData?: string;
  seqLen: number;
  batchSize: number;
  gradAccum: number;
  steps: number;
  schedule: 'cosine' | 'linear' | 'constant';
  lr: number;
  initLr: number;
  endLr: number;
  warmupSteps: number;
  /** Default: steps. */
  decaySteps?: number;
  weightDecay: number;
  clip: number;
  b1: number;
  b2: number;
  seed: number;
  saveEvery: number;
  keep: number;
  evalEvery: number;
  evalFraction: number;
  /** Eval rows per evaluation (in a fixed order). */
  evalRows: number;
  layout: RingLayout;
  weighting?: LossWeighting;
  fields?: string;
  /** Run these instead of one stage of (seqLen, model theta, steps). */
  stages?: Stage[];
  /** Continue from the newest checkpoint in out. */
  resume: boolean;
  /** Recompute each layer in the backward pass to bound activation memory. */
  remat?: boolean;
}

export interface StepReport extends StepMetrics {
  stage: number;
  seqLen: number;
  tokensPerSecond: number;
  mfu: number | null;
  elapsedSeconds: number;
  etaSeconds: number;
  totalSteps: number;
}

export interface TrainHooks {
  group?: ProcessGroup;
  onStep?: (r: StepReport) => void;
  onEval?: (e: { step: number; loss: number; visionLoss: number; textLoss: number }) => void;
  onNote?: (text: string) => void;
  /** Checked after every step: true saves a checkpoint and stops (Ctrl-C). */
  shouldStop?: () => boolean;
  /** Start from this model (its weights are copied) instead of config.preset / config.model. */
  model?: LlamaModel;
  /** Measured fp32 peak of this machine in GFLOP/s (for MFU); null if unknown. */
  peakGflops?: number | null;
  /**
   * Runs at every evaluation with the model being trained (e.g. runRetrievalGrid, perplexityByPosition);
   * its numbers go into metrics.jsonl. Every rank calls it, so it must not use the ring.
   */
  evalModel?: (model: LlamaModel, step: number) => Promise<Record<string, number>>;
}

export interface TrainSummary {
  steps: number;
  finalLoss: number;
  evalLoss: number | null;
  checkpoint: string;
  seconds: number;
  tokens: number;
  tokensPerSecond: number;
  /** Model FLOPs utilisation over the run against peakGflops x ranks; null without a peak. */
  mfu: number | null;
  stopped: boolean;
  metricsFile: string;
  plotFile: string;
}

export const METRICS_FILE = 'metrics.jsonl';
export const PLOT_FILE = 'loss.png';

function positive(name: string, v: number, min = 1): void {
  if (!Number.isInteger(v) || v < min) throw new ConfigError(`--${name} must be an integer >= ${min}, got ${v}`);
}

/** Checks values a user can get wrong, with the flag names in the messages. */
export function validateTrainConfig(c: TrainConfig, ringSize: number): Stage[] {
  positive('batch-size', c.batchSize);
  positive('grad-accum', c.gradAccum);
  positive('steps', c.steps);
  positive('save-every', c.saveEvery, 0);
  positive('keep', c.keep);
  positive('eval-every', c.evalEvery, 0);
  positive('eval-rows', c.evalRows);
  if (c.batchSize % c.gradAccum !== 0) throw new ConfigError(`--batch-size ${c.batchSize} is not divisible by --grad-accum ${c.gradAccum}; each micro-batch needs the same number of rows`);
  if (!(c.evalFraction >= 0 && c.evalFraction < 1)) throw new ConfigError(`--eval-fraction must be in [0, 1), got ${c.evalFraction}`);
  for (const [k, v] of [['weight-decay', c.weightDecay], ['clip', c.clip]] as const) if (!(v >= 0) || !Number.isFinite(v)) throw new ConfigError(`--${k} must be a finite number >= 0, got ${v}`);
  for (const [k, v] of [['b1', c.b1], ['b2', c.b2]] as const) if (!(v >= 0 && v < 1)) throw new ConfigError(`--${k} must be in [0, 1), got ${v}`);
  if (c.preset && c.model) throw new ConfigError('give either --preset or --model, not both');
  const stages = c.stages ?? [{ seqLen: c.seqLen, ropeTheta: NaN, steps: c.steps }];
  if (stages.length === 0) throw new ConfigError('--stages is empty');
  stages.forEach((s, i) => {
    positive(`stages[${i}].seq-len`, s.seqLen, 2);
    positive(`stages[${i}].steps`, s.steps);
    const unit = ringSize > 1 ? layoutUnit(ringSize, c.layout) : 1;
    if (s.seqLen % unit !== 0) {
      throw new ConfigError(`--seq-len ${s.seqLen} must be divisible by ${unit} for --sp ${ringSize} with the ${c.layout} layout; use a multiple of ${unit}`);
    }
  });
  return stages;
}

/** Everything that can be checked before ranks are started (bad values fail once, in the parent). */
export function checkTrainConfig(c: TrainConfig, ringSize: number): void {
  const stages = validateTrainConfig(c, ringSize);
  for (const st of stages) makeSchedule({ kind: c.schedule, initLr: c.initLr, peakLr: c.lr, endLr: c.endLr, warmupSteps: c.warmupSteps, decaySteps: c.decaySteps ?? Math.max(st.steps, c.warmupSteps) });
  for (const [flag, p] of [['--data', c.data], ['--eval-data', c.evalData], ['--model', c.model]] as const) {
    if (p !== undefined && !fs.existsSync(p)) throw new InputError(`${p}: no such ${flag === '--model' ? 'model folder' : 'data'}; pass ${flag === '--model' ? 'a model folder' : 'an lwm prepare folder or a JSONL file'}`);
  }
  if (!c.resume && latestCheckpoint(path.resolve(c.out))) throw new ConfigError(`${path.resolve(c.out)} already holds checkpoints; pass --resume to continue that run, or choose another --out`);
}

function toLossBatch(b: Batch, start: number, rows: number): LossBatch {
  const L = b.length;
  const cut = <T extends Int32Array | Uint8Array | Float32Array>(a: T): T => a.subarray(start * L, (start + rows) * L) as T;
  return {
    rows,
    length: L,
    inputTokens: cut(b.inputTokens),
    targetTokens: cut(b.targetTokens),
    inputVisionMask: cut(b.inputVisionMask),
    targetVisionMask: cut(b.targetVisionMask),
    segmentIds: cut(b.segmentIds),
    positions: cut(b.positions),
    lossWeights: cut(b.lossWeights),
  };
}

/**
 * Training FLOPs (forward + backward = 3x forward) per token of the body: 6 per weight of every
 * layer matrix, plus causal attention; the heads are counted separately (headFlops), since lwm runs
 * them only at weighted positions.
 */
export function trainFlopsPerToken(c: LlamaConfig, seqLen: number): number {
  let n = 0;
  for (const s of paramSpecs(c)) if (s.name.startsWith('model.layers.') && s.shape.length === 2) n += s.shape[0]! * s.shape[1]!;
  return 6 * n + 6 * c.numLayers * seqLen * c.numHeads * c.headDim;
}

/** Training FLOPs of one weighted target through the text or the vision head. */
export function headFlops(c: LlamaConfig, vision: boolean): number {
  return 6 * (vision ? c.visionVocabSize : c.vocabSize) * c.hiddenSize;
}

function baseModel(c: TrainConfig, hasVision: boolean): LlamaModel {
  if (c.model) return loadModel(c.model);
  const preset = c.preset ?? (hasVision ? 'tiny-vision' : 'tiny');
  const config = presetConfig(preset);
  return new LlamaModel(config, initParams(config, c.seed));
}

/** A model with the same weights and another RoPE theta / context length (a new stage). */
function withContext(m: LlamaModel, seqLen: number, theta: number): LlamaModel {
  const ropeTheta = Number.isFinite(theta) ? theta : m.config.ropeTheta;
  return new LlamaModel({ ...m.config, ropeTheta, maxSeqLen: Math.max(m.config.maxSeqLen, seqLen) }, m.params);
}

/**
 * Trains (or resumes) as configured, one stage after another. Every rank of a ring calls it with
 * the same config; rank 0 alone writes metrics, plots and checkpoints.
 */
export async function train(c: TrainConfig, hooks: TrainHooks = {}): Promise<TrainSummary> {
  const group = hooks.group;
  const size = group?.size ?? 1;
  const rank = group?.rank ?? 0;
  const writer = rank === 0;
  const stages = validateTrainConfig(c, size);
  const note = (t: string): void => (writer ? hooks.onNote?.(t) : undefined);
  const out = path.resolve(c.out);
  const metricsFile = path.join(out, METRICS_FILE);
  const plotFile = path.join(out, PLOT_FILE);
  const tokenizer = loadTokenizer(c.model);
  const resumeFrom = c.resume ? latestCheckpoint(out) : null;
  if (!c.resume && latestCheckpoint(out)) throw new ConfigError(`${out} already holds checkpoints; pass --resume to continue that run, or choose another --out`);
  if (writer) fs.mkdirSync(out, { recursive: true });

  const saved = resumeFrom ? loadCheckpoint(resumeFrom.dir) : null;
  let stageIndex = (saved?.state['stage'] as number | undefined) ?? 0;
  let stageStart = (saved?.state['stageStart'] as number | undefined) ?? 0;
  let dataState = (saved?.state['data'] as BatchState | undefined) ?? null;
  const totalSteps = stages.reduce((s, x) => s + x.steps, 0);
  if (writer) truncateMetrics(metricsFile, saved?.state.step ?? 0);
  const history = writer ? readHistory(metricsFile) : { train: [], eval: [] };

  let trainer: Trainer | null = null;
  let lastLoss = NaN;
  let lastEval: number | null = null;
  let tokensSeen = 0;
  let flopsSeen = 0;
  let checkpoint = resumeFrom?.dir ?? '';
  let stopped = false;
  let lastMfu: number | null = null;
  const t0 = performance.now();
  const stepsAtStart = saved?.state.step ?? 0;
  try {
    for (; stageIndex < stages.length; stageIndex++) {
      const st = stages[stageIndex]!;
      const rows = openTrainRows(c.data, { seqLen: st.seqLen, weighting: c.weighting, tokenizer, fields: c.fields });
      const { trainRows, evalRows } = split(rows, c);
      let base: LlamaModel;
      if (trainer) base = trainer.model;
      else if (saved) base = new LlamaModel(saved.config, paramStoreOf(saved.config, saved.weights));
      else if (hooks.model) base = new LlamaModel(hooks.model.config, paramStoreOf(hooks.model.config, new Map(paramSpecs(hooks.model.config).map((s) => [s.name, hooks.model!.params.get(s.name).dataSync() as Float32Array]))));
      else base = baseModel(c, rows.hasVision);
      const model = withContext(base, st.seqLen, st.ropeTheta);
      if (rows.hasVision && !model.isVision) throw new ConfigError(`${c.data} has vision tokens but the model is text-only; use a vision preset such as tiny-vision`);
      const schedule = makeSchedule({ kind: c.schedule, initLr: c.initLr, peakLr: c.lr, endLr: c.endLr, warmupSteps: c.warmupSteps, decaySteps: c.decaySteps ?? Math.max(st.steps, c.warmupSteps) });
      // Each stage starts from the previous weights with a fresh optimizer, as the paper's stages do.
      const next: Trainer = new Trainer(model, {
        lr: schedule,
        weightDecay: c.weightDecay,
        b1: c.b1,
        b2: c.b2,
        clip: c.clip,
        group,
        layout: c.layout,
        packedBatchRows: rows.packedBatchRows,
        baseStep: stageStart,
        remat: c.remat,
      });
      // The trainer holds its own references to the weights; the originals can go.
      if (trainer) trainer.dispose();
      else base.dispose();
      if (saved && saved.state.step > stageStart && !trainer) next.optimizer.loadState(saved.optimizer);
      trainer = next;
      const ring = size > 1 ? { size, rank, layout: c.layout } : undefined;
      const opts = { batchSize: c.batchSize, seed: c.seed + stageIndex, shuffle: true, dropLast: true, ring };
      if (trainRows.rows < c.batchSize) throw new ConfigError(`${c.data} has ${trainRows.rows} training rows at --seq-len ${st.seqLen}, fewer than --batch-size ${c.batchSize}; add data or lower --batch-size`);
      const it = dataState ? BatchIterator.resume(trainRows, opts, dataState) : new BatchIterator(trainRows, opts);
      dataState = null;
      const flopsPerToken = trainFlopsPerToken(trainer.model.config, st.seqLen);
      note(`stage ${stageIndex + 1}/${stages.length}: seq ${st.seqLen}, rope theta ${trainer.model.config.ropeTheta}, ${st.steps} steps, ${trainRows.rows} training rows${evalRows ? `, ${evalRows.rows} eval rows` : ''} (${rows.origin})`);
      const stateOf = (): TrainerState => ({ version: 1, step: trainer!.updates, stage: stageIndex, stageStart, data: it.state(), seed: c.seed, stages, data_path: c.data });
      const save = (): void => {
        if (writer) checkpoint = saveCheckpoint(out, trainer!, stateOf(), c.keep);
        group?.barrier();
      };
      const evaluate = (): void => {
        if (!evalRows) return;
        const n = Math.min(c.evalRows, evalRows.rows);
        const eit = new BatchIterator(evalRows, { batchSize: 1, shuffle: false, ring });
        let sum = { loss: 0, visionLoss: 0, textLoss: 0 };
        for (let i = 0; i < n; i++) {
          const e = trainer!.evaluate(toLossBatch(eit.next(), 0, 1));
          sum = { loss: sum.loss + e.loss / n, visionLoss: sum.visionLoss + e.visionLoss / n, textLoss: sum.textLoss + e.textLoss / n };
        }
        lastEval = sum.loss;
        if (writer) {
          appendMetrics(metricsFile, { step: trainer!.updates, eval_loss: sum.loss, eval_vision_loss: sum.visionLoss, eval_text_loss: sum.textLoss });
          history.eval.push([trainer!.updates, sum.loss]);
        }
        hooks.onEval?.({ step: trainer!.updates, ...sum });
      };
      while (trainer.updates < stageStart + st.steps) {
        const b = it.next();
        const per = c.batchSize / c.gradAccum;
        const micro = Array.from({ length: c.gradAccum }, (_, i) => toLossBatch(b, i * per, per));
        const m = trainer.step(micro);
        lastLoss = m.loss;
        tokensSeen += m.tokens;
        flopsSeen += m.tokens * flopsPerToken + m.textTargets * headFlops(trainer.model.config, false) + m.visionTargets * headFlops(trainer.model.config, true);
        const elapsed = (performance.now() - t0) / 1000;
        const done = m.step - stepsAtStart;
        const tps = tokensSeen / Math.max(elapsed, 1e-9);
        const mfu = hooks.peakGflops ? flopsSeen / elapsed / (hooks.peakGflops * 1e9 * size) : null;
        lastMfu = mfu;
        const report: StepReport = { ...m, stage: stageIndex, seqLen: st.seqLen, tokensPerSecond: tps, mfu, elapsedSeconds: elapsed, etaSeconds: (elapsed / done) * (totalSteps - m.step), totalSteps };
        if (writer) {
          appendMetrics(metricsFile, { step: m.step, loss: m.loss, vision_loss: m.visionLoss, text_loss: m.textLoss, lr: m.lr, grad_norm: m.gradNorm, param_norm: m.paramNorm, tokens: m.tokens, stage: stageIndex, seq_len: st.seqLen });
          history.train.push([m.step, m.loss]);
        }
        hooks.onStep?.(report);
        const last = trainer.updates === stageStart + st.steps;
        if (c.evalEvery > 0 && (trainer.updates % c.evalEvery === 0 || last)) {
          evaluate();
          const extra = await hooks.evalModel?.(trainer.model, trainer.updates);
          if (extra && writer) appendMetrics(metricsFile, { step: trainer.updates, ...extra });
          if (writer) await lossCurvePng(plotFile, [{ name: 'train', points: history.train }, { name: 'eval', points: history.eval }], { title: 'lwm train: loss' });
        }
        // A step never yields to the event loop; without this a Ctrl-C handler would never run.
        await new Promise((r) => setImmediate(r));
        const stop = hooks.shouldStop?.() ?? false;
        if (last || stop || (c.saveEvery > 0 && trainer.updates % c.saveEvery === 0)) save();
        if (stop) {
          stopped = true;
          break;
        }
      }
      if (stopped) break;
      stageStart += st.steps;
    }
    if (writer && history.train.length > 0) await lossCurvePng(plotFile, [{ name: 'train', points: history.train }, { name: 'eval', points: history.eval }], { title: 'lwm train: loss' });
  } finally {
    trainer?.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;
  return { steps: trainer ? (trainer as Trainer).updates : 0, finalLoss: lastLoss, evalLoss: lastEval, checkpoint, seconds, tokens: tokensSeen, tokensPerSecond: tokensSeen / Math.max(seconds, 1e-9), mfu: lastMfu, stopped, metricsFile, plotFile };
}

function paramStoreOf(config: LlamaConfig, weights: ReadonlyMap<string, Float32Array>): ParamStore {
  return new ParamStore(new Map(paramSpecs(config).map((s) => [s.name, tf.tensor(weights.get(s.name)!, s.shape, 'float32')])));
}

function split(rows: TrainRows, c: TrainConfig): { trainRows: TrainRows['source']; evalRows: TrainRows['source'] | null } {
  if (c.evalData) {
    const ev = openTrainRows(c.evalData, { seqLen: rows.source.seqLen, weighting: c.weighting, fields: c.fields });
    return { trainRows: rows.source, evalRows: ev.source };
  }
  if (c.evalEvery === 0 || c.evalFraction === 0 || rows.source.rows < 2) return { trainRows: rows.source, evalRows: null };
  const n = rows.source.rows;
  const held = Math.max(1, Math.floor(n * c.evalFraction));
  return { trainRows: rowRange(rows.source, 0, n - held), evalRows: rowRange(rows.source, n - held, n) };
}

function appendMetrics(file: string, obj: Record<string, unknown>): void {
  fs.appendFileSync(file, JSON.stringify(obj) + '\n');
}

/** Drops metric lines after the checkpoint a run resumes from, so the file is one consistent trajectory. */
function truncateMetrics(file: string, step: number): void {
  if (!fs.existsSync(file)) return;
  const keep = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => {
      if (!l.trim()) return false;
      try {
        return (JSON.parse(l) as { step: number }).step <= step;
      } catch {
        return false; // a line cut by a kill
      }
    });
  writeFileAtomic(file, keep.map((l) => l + '\n').join(''));
}

function readHistory(file: string): { train: [number, number][]; eval: [number, number][] } {
  const h = { train: [] as [number, number][], eval: [] as [number, number][] };
  if (!fs.existsSync(file)) return h;
  for (const l of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!l.trim()) continue;
    const o = JSON.parse(l) as { step: number; loss?: number; eval_loss?: number };
    if (o.loss !== undefined) h.train.push([o.step, o.loss]);
    if (o.eval_loss !== undefined) h.eval.push([o.step, o.eval_loss]);
  }
  return h;
}

