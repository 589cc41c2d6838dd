import * as tf from '@tensorflow/tfjs';
import { ConfigError, InputError } from '../../ops/errors.js';
import type { RingLayout } from '../../ops/index.js';
import { LlamaModel } from '../../models/llama.js';
import { ParamStore, paramSpecs } from '../../models/params.js';
import type { ProcessGroup } from '../distributed/processGroup.js';
import { weightedLoss, type LossBatch } from './loss.js';
import { AdamW, paramNorm } from './optimizer.js';

export interface TrainerOptions {
  /** Learning rate for an update, given how many updates this optimizer did before it (optax's count). */
  lr: (updatesDone: number) => number;
  weightDecay?: number;
  b1?: number;
  b2?: number;
  eps?: number;
  /** Global-norm gradient clipping (LWM: 1.0); null turns it off. */
  clip?: number | null;
  /** Sequence parallel: ranks of one ring hold their layout share of each row. */
  group?: ProcessGroup;
  layout?: RingLayout;
  /** Rows each loss weight was normalised over when packed (lwm prepare's --batch-rows; default 1). */
  packedBatchRows?: number;
  /** Recompute layers in the backward pass (activation memory of one layer, ~1/3 more compute). */
  remat?: boolean;
  /** Updates done before this trainer's optimizer started (earlier stages); counts into `updates`. */
  baseStep?: number;
}

export interface StepMetrics {
  /** Updates done after this one. */
  step: number;
  loss: number;
  visionLoss: number;
  textLoss: number;
  /** The learning rate this update used. */
  lr: number;
  gradNorm: number;
  paramNorm: number;
  /** Real (non-padding) tokens in the step, all ranks together. */
  tokens: number;
  /** Weighted targets per head (the positions that went through the text / vision head). */
  textTargets: number;
  visionTargets: number;
}

/**
 * One optimizer update per call of step(): the mean over micro-batches of each one's weighted loss
 * (so k micro-batches of B/k rows equal one batch of B), gradients summed over the ring's ranks,
 * then global-norm clipping and AdamW. Owns a copy of the model's weights as variables.
 */
export class Trainer {
  readonly model: LlamaModel;
  readonly optimizer: AdamW;
  private readonly vars: Map<string, tf.Variable>;
  private readonly names: string[];
  private static instances = 0;

  constructor(
    model: LlamaModel,
    readonly opts: TrainerOptions,
  ) {
    const id = Trainer.instances++;
    this.vars = new Map();
    this.names = paramSpecs(model.config).map((s) => s.name);
    // Variable names are global in tfjs; a per-trainer prefix lets several trainers coexist.
    for (const n of this.names) this.vars.set(n, tf.variable(model.params.get(n), true, `trainer${id}/${n}`));
    this.model = new LlamaModel(model.config, new ParamStore(new Map(this.vars)));
    this.optimizer = new AdamW(this.vars, { b1: opts.b1, b2: opts.b2, eps: opts.eps, weightDecay: opts.weightDecay, clip: opts.clip === undefined ? 1 : opts.clip });
  }

  /** Updates done, earlier stages included. */
  get updates(): number {
    return (this.opts.baseStep ?? 0) + this.optimizer.step;
  }

  private ring() {
    const g = this.opts.group;
    return g && g.size > 1 ? { group: g, layout: this.opts.layout ?? 'zigzag' } : undefined;
  }

  /** Loss values of a batch without updating (eval); summed over ranks. */
  evaluate(b: LossBatch): { loss: number; visionLoss: number; textLoss: number } {
    const scale = (this.opts.packedBatchRows ?? 1) / b.rows;
    const r = weightedLoss(this.model, b, { ring: this.ring(), scale });
    const local = new Float32Array([r.loss.dataSync()[0]!, r.visionLoss.dataSync()[0]!, r.textLoss.dataSync()[0]!]);
    tf.dispose([r.loss, r.visionLoss, r.textLoss]);
    const [loss, visionLoss, textLoss] = this.sumOverRanks(local);
    return { loss: loss!, visionLoss: visionLoss!, textLoss: textLoss! };
  }

  /**
   * Gradients of the mean micro-batch loss (all ranks summed) and the loss values, without updating.
   * The caller owns (and disposes) the returned tensors.
   */
  gradients(micro: readonly LossBatch[]): { grads: Map<string, tf.Tensor>; loss: number; visionLoss: number; textLoss: number; tokens: number; textTargets: number; visionTargets: number } {
    if (micro.length === 0) throw new InputError('Trainer.step needs at least one micro-batch');
    const k = micro.length;
    const acc = new Map<string, tf.Tensor>();
    const sums = new Float32Array(6);
    const varList = this.names.map((n) => this.vars.get(n)!);
    for (const b of micro) {
      const scale = (this.opts.packedBatchRows ?? 1) / (b.rows * k);
      let parts: tf.Tensor[] = [];
      const { value, grads } = tf.variableGrads(() => {
        const r = weightedLoss(this.model, b, { ring: this.ring(), scale, remat: this.opts.remat });
        parts = [tf.keep(r.visionLoss), tf.keep(r.textLoss)];
        return r.loss;
      }, varList);
      sums[0]! += value.dataSync()[0]!;
      sums[1]! += parts[0]!.dataSync()[0]!;
      sums[2]! += parts[1]!.dataSync()[0]!;
      let tokens = 0;
      for (const s of b.segmentIds) if (s >= 0) tokens++;
      sums[3]! += tokens;
      for (let i = 0; i < b.lossWeights.length; i++) if (b.lossWeights[i] !== 0) sums[b.targetVisionMask[i] ? 5 : 4]! += 1;
      tf.dispose([value, ...parts]);
      // Accumulate in a fixed order so a resumed run adds the same numbers in the same way.
      for (const n of this.names) {
        // A head with no weighted target in the batch (e.g. no vision tokens) gets a zero gradient.
        const v = this.vars.get(n)!;
        const g = grads[v.name] ?? tf.zerosLike(v);
        const prev = acc.get(n);
        acc.set(n, prev ? tf.tidy(() => tf.add(prev, g)) : g);
        if (prev) {
          prev.dispose();
          g.dispose();
        }
      }
    }
    const totals = this.sumOverRanks(sums);
    if (this.ring()) this.allReduceGrads(acc);
    return { grads: acc, loss: totals[0]!, visionLoss: totals[1]!, textLoss: totals[2]!, tokens: totals[3]!, textTargets: totals[4]!, visionTargets: totals[5]! };
  }

  /** One update from `micro` (gradient accumulation over its entries). */
  step(micro: readonly LossBatch[]): StepMetrics {
    const r = this.gradients(micro);
    const lr = this.opts.lr(this.optimizer.step);
    try {
      if (!(lr >= 0) || !Number.isFinite(lr)) throw new ConfigError(`learning rate ${lr} at update ${this.updates} is not a finite number >= 0; check the schedule`);
      if (!Number.isFinite(r.loss)) throw new InputError(`loss is ${r.loss} at update ${this.updates}; lower --lr or check the data`);
      const { gradNorm } = this.optimizer.apply(r.grads, lr);
      return { step: this.updates, loss: r.loss, visionLoss: r.visionLoss, textLoss: r.textLoss, lr, gradNorm, paramNorm: paramNorm(this.vars), tokens: r.tokens, textTargets: r.textTargets, visionTargets: r.visionTargets };
    } finally {
      for (const g of r.grads.values()) g.dispose();
    }
  }

  private sumOverRanks(x: Float32Array): Float32Array {
    const g = this.ring()?.group as ProcessGroup | undefined;
    return g ? g.allReduce(x, 'sum') : x;
  }

  /** One all-reduce of every gradient packed in one buffer (fewer, larger messages). */
  private allReduceGrads(acc: Map<string, tf.Tensor>): void {
    const total = this.names.reduce((s, n) => s + acc.get(n)!.size, 0);
    const flat = new Float32Array(total);
    let o = 0;
    for (const n of this.names) {
      const d = acc.get(n)!.dataSync() as Float32Array;
      flat.set(d, o);
      o += d.length;
    }
    const sum = (this.opts.group as ProcessGroup).allReduce(flat, 'sum');
    o = 0;
    for (const n of this.names) {
      const t = acc.get(n)!;
      acc.set(n, tf.tensor(sum.subarray(o, o + t.size), t.shape, 'float32'));
      o += t.size;
      t.dispose();
    }
  }

  /** Weights as plain arrays by name (checkpoints). */
  weights(): Map<string, Float32Array> {
    return new Map(this.names.map((n) => [n, this.vars.get(n)!.dataSync() as Float32Array]));
  }

  /** Restores weights saved by weights() (exactly). */
  loadWeights(w: ReadonlyMap<string, Float32Array>): void {
    for (const n of this.names) {
      const v = this.vars.get(n)!;
      const d = w.get(n);
      if (!d || d.length !== v.size) throw new InputError(`checkpoint weight ${n}: ${d ? `${d.length} values, expected ${v.size}` : 'missing'}`);
      tf.tidy(() => v.assign(tf.tensor(d, v.shape, 'float32')));
    }
  }

  dispose(): void {
    this.optimizer.dispose();
    for (const v of this.vars.values()) v.dispose();
  }
}
