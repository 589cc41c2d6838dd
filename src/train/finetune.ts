import type { LlamaModel } from '../../models/llama.js';
import type { LossWeighting } from '../../data/packing.js';
import type { ProcessGroup } from '../distributed/processGroup.js';
import { checkTrainConfig, train, type Stage, type StepReport, type TrainConfig, type TrainHooks, type TrainSummary } from './run.js';

export interface FinetuneOptions {
  /** A model folder, a model in memory, or a preset name (`preset:tiny`) to start from random weights. */
  model: string | LlamaModel;
  /** An `lwm prepare` folder or a JSONL file ({"text": ...} or question/answer lines). */
  data: string;
  /** Checkpoints, metrics.jsonl and loss.png go here. */
  out: string;
  evalData?: string;
  seqLen?: number;
  batchSize?: number;
  gradAccum?: number;
  steps?: number;
  /** Peak learning rate; default LWM's fine-tuning 8e-5 (constant after 5 warmup steps). */
  lr?: number;
  endLr?: number;
  warmupSteps?: number;
  schedule?: TrainConfig['schedule'];
  weightDecay?: number;
  clip?: number;
  seed?: number;
  saveEvery?: number;
  keep?: number;
  evalEvery?: number;
  stages?: Stage[];
  weighting?: LossWeighting;
  fields?: string;
  resume?: boolean;
  remat?: boolean;
  /** Sequence parallel: this process's ring (all ranks call finetune with the same options). */
  group?: ProcessGroup;
  onStep?: (s: StepReport) => void;
  onEval?: (e: { step: number; loss: number }) => void;
  /** At every evaluation: numbers about the model being trained (e.g. a passkey or needle grid's accuracy) for metrics.jsonl. */
  evalModel?: TrainHooks['evalModel'];
  shouldStop?: () => boolean;
}

/**
 * Fine-tunes a model on a dataset with LWM's recipe (AdamW b1 0.9, b2 0.95, weight decay 0.1,
 * clipping 1.0, lr 8e-5 after 5 warmup steps) unless told otherwise; resumable with `resume`.
 */
export async function finetune(o: FinetuneOptions): Promise<TrainSummary> {
  const inMemory = typeof o.model === 'string' ? null : o.model;
  const name = typeof o.model === 'string' ? o.model : null;
  const config: TrainConfig = {
    out: o.out,
    preset: name?.startsWith('preset:') ? name.slice('preset:'.length) : undefined,
    model: name && !name.startsWith('preset:') ? name : undefined,
    data: o.data,
    evalData: o.evalData,
    seqLen: o.seqLen ?? 4096,
    batchSize: o.batchSize ?? 1,
    gradAccum: o.gradAccum ?? 1,
    steps: o.steps ?? 100,
    schedule: o.schedule ?? 'cosine',
    lr: o.lr ?? 8e-5,
    initLr: 0,
    endLr: o.endLr ?? o.lr ?? 8e-5,
    warmupSteps: o.warmupSteps ?? 5,
    weightDecay: o.weightDecay ?? 0.1,
    clip: o.clip ?? 1,
    b1: 0.9,
    b2: 0.95,
    seed: o.seed ?? 42,
    saveEvery: o.saveEvery ?? 0,
    keep: o.keep ?? 2,
    evalEvery: o.evalEvery ?? 0,
    evalFraction: 0.05,
    evalRows: 16,
    layout: 'zigzag',
    weighting: o.weighting,
    fields: o.fields,
    stages: o.stages,
    resume: o.resume ?? false,
    remat: o.remat ?? false,
  };
  checkTrainConfig(config, o.group?.size ?? 1);
  return train(config, { group: o.group, onStep: o.onStep, onEval: o.onEval, evalModel: o.evalModel, shouldStop: o.shouldStop, model: inMemory ?? undefined });
}
