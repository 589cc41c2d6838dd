import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Argv, CommandModule } from 'yargs';
import { parse as parseYaml } from 'yaml';
import {
  ConfigError,
  detectLaunch,
  initBackend,
  ProcessGroup,
  type BackendInfo,
} from '../../src/index.js';
import { launch } from '../../src/distributed/launch.js';
import { ensureDefaultDataset } from '../../src/train/defaultData.js';
import { passkeyAccuracy } from '../../src/train/passkeyEval.js';
import { checkTrainConfig, train, type Stage, type StepReport, type TrainConfig, type TrainHooks } from '../../src/train/run.js';
import { runRetrievalGrid, type RetrievalKind } from '../../src/eval/run.js';
import { loadTokenizer } from '../../data/tokenizer.js';
import { intList } from '../evalCommon.js';
import { clock, handle, note } from '../output.js';

/** Where `lwm train` writes by default, and where `lwm chat` / `lwm eval` look first. */
export const DEFAULT_OUT = 'lwm-out';
const RESOLVED_FILE = 'train-config.json';

interface TrainArgs {
  config?: string;
  resolved?: string;
  out: string;
  preset?: string;
  model?: string;
  data?: string;
  'eval-data'?: string;
  'seq-len'?: number;
  'batch-size'?: number;
  'grad-accum': number;
  steps?: number;
  schedule: string;
  lr?: number;
  'init-lr'?: number;
  'end-lr'?: number;
  'warmup-steps'?: number;
  'decay-steps'?: number;
  'weight-decay'?: number;
  clip: number;
  b1: number;
  b2: number;
  seed: number;
  'save-every': number;
  keep: number;
  'eval-every': number;
  'eval-fraction': number;
  'eval-rows': number;
  'eval-retrieval'?: string;
  'eval-contexts'?: string;
  'eval-depths'?: string;
  sp?: number;
  layout: string;
  weighting: string;
  'vision-weight'?: number;
  fields?: string;
  stages?: string;
  resume: boolean;
  remat: boolean;
  'log-every': number;
  debug?: boolean;
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    throw new ConfigError(`--config ${file}: cannot be read; check the path`);
  }
  let v: unknown;
  try {
    v = /\.ya?ml$/i.test(file) ? parseYaml(text) : JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`--config ${file}: not valid ${/\.ya?ml$/i.test(file) ? 'YAML' : 'JSON'} (${(e as Error).message.split('\n')[0]})`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`--config ${file}: expected an object of flag names and values`);
  return v as Record<string, unknown>;
}

export const trainCommand: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'Train or fine-tune: packed batches, AdamW, checkpoints with exact resume, RingAttention over --sp processes',
  builder: (y: Argv) =>
    y
      .config('config', 'JSON or YAML file whose keys are these flags (flags given on the command line win)', readConfigFile)
      .option('resolved', { type: 'string', hidden: true })
      .option('out', { alias: 'o', type: 'string', default: DEFAULT_OUT, describe: 'Folder for checkpoints, metrics.jsonl and loss.png' })
      .option('preset', { type: 'string', describe: 'Start from random weights of a preset (default tiny, or tiny-vision for vision data)' })
      .option('model', { alias: 'm', type: 'string', describe: 'Fine-tune this model folder' })
      .option('data', { type: 'string', describe: 'An lwm prepare folder, an lwm data qa folder or a JSONL file (default: the built-in passkey + video set)' })
      .option('eval-data', { type: 'string', describe: 'Held-out data (default: the last --eval-fraction of the rows)' })
      .option('seq-len', { type: 'number', describe: 'Tokens per row (default 256 for the built-in set, else 4096)' })
      .option('batch-size', { type: 'number', describe: 'Rows per optimizer update' })
      .option('grad-accum', { type: 'number', default: 1, describe: 'Micro-batches per update (must divide --batch-size)' })
      .option('steps', { type: 'number', describe: 'Optimizer updates' })
      .option('schedule', { type: 'string', choices: ['cosine', 'linear', 'constant'], default: 'cosine', describe: 'Decay after warmup' })
      .option('lr', { type: 'number', describe: 'Peak learning rate (LWM fine-tuning: 8e-5)' })
      .option('init-lr', { type: 'number', describe: 'Learning rate at step 0 (warmup start; default 0)' })
      .option('end-lr', { type: 'number', describe: 'Learning rate after decay' })
      .option('warmup-steps', { type: 'number', describe: 'Linear warmup updates' })
      .option('decay-steps', { type: 'number', describe: 'Update at which decay ends (default --steps)' })
      .option('weight-decay', { type: 'number', describe: 'Decoupled AdamW weight decay, on every weight (LWM: 0.1 in its scripts)' })
      .option('clip', { type: 'number', default: 1, describe: 'Global-norm gradient clipping (0 = off)' })
      .option('b1', { type: 'number', default: 0.9, describe: 'AdamW beta1' })
      .option('b2', { type: 'number', default: 0.95, describe: 'AdamW beta2' })
      .option('seed', { type: 'number', default: 42, describe: 'Initialisation and data-order seed' })
      .option('save-every', { type: 'number', default: 100, describe: 'Checkpoint every N updates (and at the end; 0 = only at the end)' })
      .option('keep', { type: 'number', default: 3, describe: 'Checkpoints to keep' })
      .option('eval-every', { type: 'number', default: 50, describe: 'Eval loss every N updates (0 = never)' })
      .option('eval-fraction', { type: 'number', default: 0.05, describe: 'Rows held out for eval when there is no --eval-data' })
      .option('eval-rows', { type: 'number', default: 16, describe: 'Rows per evaluation' })
      .option('eval-retrieval', { type: 'string', choices: ['passkey', 'needle'], describe: 'At every evaluation also run a passkey or needle grid (greedy, one round a cell) and log its accuracy' })
      .option('eval-contexts', { type: 'string', describe: 'Prompt lengths of --eval-retrieval, comma list (default: the training sequence length)' })
      .option('eval-depths', { type: 'string', default: '0,50,100', describe: 'Depths in percent of --eval-retrieval' })
      .option('sp', { type: 'number', describe: 'Sequence-parallel ranks (RingAttention); started here unless under a launcher (default 2 for the built-in run, else 1)' })
      .option('layout', { type: 'string', choices: ['zigzag', 'contiguous', 'striped'], default: 'zigzag', describe: 'How rows are split over the ring' })
      .option('weighting', { type: 'string', choices: ['lwm', 'lwm-text', 'token', 'mask'], default: 'lwm', describe: 'Loss weights when packing JSONL (prepared folders carry their own)' })
      .option('fields', { type: 'string', describe: 'Fields spec for JSONL data' })
      .option('stages', { type: 'string', describe: 'Progressive context: "seqLen:ropeTheta:steps,..." e.g. "256:1e6:100,512:1e7:100"' })
      .option('resume', { type: 'boolean', default: false, describe: 'Continue from the newest checkpoint in --out (bit-identical losses)' })
      .option('remat', { type: 'boolean', default: false, describe: 'Recompute each layer in the backward pass: activation memory of one layer for ~1/3 more compute' })
      .option('log-every', { type: 'number', default: 10, describe: 'Progress line every N updates when stderr is not a terminal' })
      .example('$0 train', 'Built-in run: tiny vision model, passkey + video data, 2 ring ranks, a few minutes')
      .example('$0 train -m ./LWM-Text-1M --data books.jsonl --seq-len 32768 --sp 4 --lr 8e-5 --steps 200', 'Fine-tune on your JSONL')
      .example('$0 train --data data/clips --preset 100m-vision --steps 1000 --resume', 'Continue a run after a crash')
      .example('$0 train --config run.yaml --steps 50', 'Settings from a file, one overridden') as unknown as Argv<TrainArgs>,
  handler: handle<TrainArgs>('train', runTrain),
};

function parseStages(s: string): Stage[] {
  return s.split(',').map((part) => {
    const [a, b, c] = part.split(':');
    const st = { seqLen: Number(a), ropeTheta: Number(b), steps: Number(c) };
    if (part.split(':').length !== 3 || !Number.isFinite(st.ropeTheta) || st.ropeTheta <= 0) {
      throw new ConfigError(`--stages: "${part}" is not seqLen:ropeTheta:steps (e.g. 4096:1e6:100)`);
    }
    return st;
  });
}

/** Every setting decided once, in the parent, so all ranks run exactly the same configuration. */
interface Resolved {
  config: TrainConfig;
  sp: number;
  evalManifest: string | null;
  logEvery: number;
  /** --eval-retrieval, checked here so a bad list fails before any rank starts. */
  retrieval?: { kind: RetrievalKind; contexts?: number[]; depths: number[] };
}

async function resolveConfig(a: TrainArgs): Promise<Resolved> {
  const builtIn = a.data === undefined && a.model === undefined;
  const seqLen = a['seq-len'] ?? (builtIn ? 256 : 4096);
  let data = a.data;
  let evalData = a['eval-data'];
  let evalManifest: string | null = null;
  if (builtIn) {
    note(`lwm train: no --data or --model: the built-in run (passkey retrieval + short videos, ${path.join(a.out, 'data')})`);
    await initBackend();
    // Short passkey texts (several per row) are what a tiny model learns to retrieve from in minutes.
    const d = await ensureDefaultDataset(path.join(a.out, 'data'), { seqLen, seed: a.seed, passkeyTokens: 96, passkeyExamples: 4096 });
    data = d.prepared;
    evalData ??= d.evalManifest;
    evalManifest = d.evalManifest;
  }
  if (a['vision-weight'] !== undefined && a.weighting !== 'token') throw new ConfigError('--vision-weight goes with --weighting token');
  const weighting = a.weighting === 'token' ? { mode: 'token' as const, ...(a['vision-weight'] !== undefined ? { visionWeight: a['vision-weight'] } : {}) } : { mode: a.weighting as 'lwm' };
  const steps = a.steps ?? (builtIn ? 200 : 1000);
  const config: TrainConfig = {
    out: a.out,
    preset: a.preset ?? (builtIn ? 'tiny-vision' : undefined),
    model: a.model,
    data: data!,
    evalData,
    seqLen,
    batchSize: a['batch-size'] ?? (builtIn ? 8 : 4),
    gradAccum: a['grad-accum'],
    steps,
    schedule: a.schedule as TrainConfig['schedule'],
    // The built-in run trains a tiny model from scratch; fine-tuning uses LWM's script settings.
    lr: a.lr ?? (builtIn ? 3e-3 : 8e-5),
    initLr: a['init-lr'] ?? 0,
    endLr: a['end-lr'] ?? (builtIn ? 3e-4 : 8e-5),
    warmupSteps: a['warmup-steps'] ?? (builtIn ? 20 : 5),
    decaySteps: a['decay-steps'],
    weightDecay: a['weight-decay'] ?? (builtIn ? 0.01 : 0.1),
    clip: a.clip,
    b1: a.b1,
    b2: a.b2,
    seed: a.seed,
    saveEvery: a['save-every'],
    keep: a.keep,
    evalEvery: a['eval-every'],
    evalFraction: a['eval-fraction'],
    evalRows: a['eval-rows'],
    layout: a.layout as TrainConfig['layout'],
    weighting,
    fields: a.fields,
    stages: a.stages ? parseStages(a.stages) : undefined,
    resume: a.resume,
    remat: a.remat,
  };
  const retrieval = a['eval-retrieval']
    ? { kind: a['eval-retrieval'] as RetrievalKind, contexts: intList('eval-contexts', a['eval-contexts'], 16), depths: intList('eval-depths', a['eval-depths'], 0, 100)! }
    : undefined;
  return { config, sp: a.sp ?? (builtIn ? 2 : 1), evalManifest, logEvery: a['log-every'], ...(retrieval ? { retrieval } : {}) };
}

async function runTrain(a: TrainArgs): Promise<void> {
  const launched = detectLaunch();
  if (a.resolved) return runRank(JSON.parse(fs.readFileSync(a.resolved, 'utf8')), launched.size);
  const resolved = await resolveConfig(a);
  const { config, sp } = resolved;
  if (!Number.isInteger(sp) || sp < 1) throw new ConfigError(`--sp must be a positive integer, got ${sp}`);
  checkTrainConfig(config, sp);
  fs.mkdirSync(config.out, { recursive: true });
  const resolvedFile = path.join(config.out, RESOLVED_FILE);
  fs.writeFileSync(resolvedFile, JSON.stringify(resolved, null, 2) + '\n');
  if (sp > 1 && launched.size === 1) {
    const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'lwm.js');
    const r = await launch({ nprocs: sp, command: [process.execPath, cli, 'train', '--resolved', resolvedFile, ...(a.debug ? ['--debug'] : [])], forwardSignals: true });
    process.exitCode = r.code;
    return;
  }
  if (launched.size !== sp && launched.size > 1) throw new ConfigError(`--sp ${sp} but the launcher started ${launched.size} ranks; make them equal`);
  await runRank(resolved, launched.size);
}

async function runRank(r: Resolved, launchedSize: number): Promise<void> {
  const logEvery = r.logEvery;
  const info: BackendInfo = await initBackend();
  const group = launchedSize > 1 ? await ProcessGroup.init() : undefined;
  const writer = (group?.rank ?? 0) === 0;
  let interrupted = false;
  const onSignal = (): void => {
    interrupted = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const tty = Boolean(process.stderr.isTTY);
  let peak: number | null = null;
  if (info.native) {
    const { loadAddon } = await import('../../ops/native/index.js');
    peak = loadAddon()?.peakGflops?.(0.2) ?? null;
  }
  const show = (s: StepReport): void => {
    if (!writer) return;
    const mfu = s.mfu === null ? '' : ` | MFU ${(100 * s.mfu).toFixed(1)}%`;
    const line = `step ${s.step}/${s.totalSteps} | loss ${s.loss.toFixed(4)} | lr ${s.lr.toExponential(2)} | ${s.tokensPerSecond.toFixed(0)} tok/s${mfu} | ETA ${clock(s.etaSeconds)}`;
    if (tty) process.stderr.write(`\r${line}\x1b[K`);
    else if (s.step % logEvery === 0 || s.step === s.totalSteps) note(line);
  };
  try {
    const summary = await train(r.config, {
      group,
      peakGflops: peak,
      onStep: show,
      onEval: (e) => {
        if (!writer) return;
        if (tty) process.stderr.write('\n');
        note(`eval at step ${e.step}: loss ${e.loss.toFixed(4)}`);
      },
      onNote: (t) => note(`lwm train: ${t}`),
      ...(r.retrieval ? { evalModel: retrievalEval(r.retrieval, r.config, writer) } : {}),
      // Every rank must stop after the same update, so the flag is agreed on through the ring.
      shouldStop: () => (group ? group.allReduce(new Float32Array([interrupted ? 1 : 0]), 'max')[0]! > 0 : interrupted),
    });
    if (!writer) return;
    if (tty) process.stderr.write('\n');
    const lines = [
      `${summary.stopped ? 'stopped (interrupted) after' : 'trained'} ${summary.steps} updates in ${clock(summary.seconds)} (${summary.seconds.toFixed(1)} s)`,
      `final loss ${summary.finalLoss.toFixed(4)}${summary.evalLoss !== null ? `, eval loss ${summary.evalLoss.toFixed(4)}` : ''}`,
      `${summary.tokensPerSecond.toFixed(0)} tokens/s over ${r.sp} rank(s)${summary.mfu !== null ? `, MFU ${(100 * summary.mfu).toFixed(2)}% of ${(peak! * r.sp).toFixed(0)} GFLOP/s` : ''}`,
      `checkpoint: ${summary.checkpoint}`,
      `metrics: ${summary.metricsFile}, plot: ${summary.plotFile}`,
    ];
    if (r.evalManifest && !summary.stopped) {
      const acc = await passkeyAccuracy(summary.checkpoint, r.evalManifest, { limit: 32 });
      lines.push(`passkey accuracy: ${acc.correct}/${acc.total} (${(100 * acc.accuracy).toFixed(1)}%) on held-out examples`);
    }
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await group?.close();
  }
}

/** --eval-retrieval: a small passkey or needle grid on the model being trained, its accuracy logged. */
function retrievalEval(o: NonNullable<Resolved['retrieval']>, c: TrainConfig, writer: boolean): NonNullable<TrainHooks['evalModel']> {
  const tok = loadTokenizer(c.model);
  return async (model, step) => {
    const contexts = o.contexts ?? [c.stages?.[c.stages.length - 1]?.seqLen ?? c.seqLen];
    const r = await runRetrievalGrid(model, tok, { kind: o.kind, contexts, depths: o.depths, rounds: 1, maxTokens: 12 });
    if (writer) note(`${o.kind} at step ${step}: ${(100 * r.overall).toFixed(1)}% (${r.accuracyByContext.map((x) => `${x.context}: ${(100 * x.accuracy).toFixed(0)}%`).join(', ')})`);
    return { [`${o.kind}_accuracy`]: r.overall };
  };
}
