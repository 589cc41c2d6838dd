import { autoDtype } from '../modelChoice.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Argv, CommandModule } from 'yargs';
import {
  detectLaunch,
  FUSED_ATTENTION,
  initBackend,
  InputError,
  isNativeKernelActive,
  latestCheckpoint,
  presetConfig,
  readModelConfig,
  type LlamaConfig,
} from '../../src/index.js';
import {
  DEFAULT_PREFILL_CHUNK,
  fitsVerdict,
  fmt,
  gib,
  KV_DTYPES,
  memoryBudget,
  planMemory,
  refuseIfTooLarge,
  WEIGHT_DTYPES,
  type KvDtype,
  type PlanOptions,
  type WeightDtype,
} from '../../src/plan.js';
import { DEFAULT_TRAIN_OUT } from '../modelChoice.js';
import { handle, note } from '../output.js';

interface PlanArgs {
  model?: string;
  preset?: string;
  context?: number;
  dtype: WeightDtype;
  'kv-dtype': KvDtype;
  sp: number;
  memory?: number;
  'prefill-chunk': number;
  json: boolean;
  debug?: boolean;
}

/** Budget for chat/generate/serve in GiB, instead of this machine's (e.g. to leave room for other programs). */
const MEMORY_ENV = 'LWM_MEMORY_GIB';

export const planCommand: CommandModule<object, PlanArgs> = {
  command: 'plan',
  describe: 'Memory a model needs at a context length (weights, KV cache, activations), whether it fits, and the longest context that does',
  builder: (y: Argv) =>
    y
      .option('model', { alias: 'm', type: 'string', describe: 'Model folder (only config.json is read)' })
      .option('preset', { type: 'string', describe: "A preset's architecture (7b, 100m, tiny, LWM-Text-Chat-1M, ...)" })
      .option('context', { type: 'number', describe: "Tokens of context to plan for [default: the model's context]" })
      .option('dtype', { type: 'string', default: 'f32' as WeightDtype, describe: 'Linear-layer weights: f32, bf16 (half) or int8 (a quarter); embeddings and norms stay f32' })
      .option('kv-dtype', { type: 'string', default: 'f32' as KvDtype, describe: 'KV cache element type: f32 or bf16 (half the memory per token)' })
      .option('sp', { type: 'number', default: 1, describe: 'Prefill over N processes on this machine (lwm chat --sp N)' })
      .option('memory', { type: 'number', describe: `Memory to fit in, GiB [default: this machine's RAM less a reserve; chat/generate/serve read $${MEMORY_ENV}]` })
      .option('prefill-chunk', { type: 'number', default: DEFAULT_PREFILL_CHUNK, describe: 'Prompt tokens per forward pass' })
      .option('json', { type: 'boolean', default: false, describe: 'Print one JSON object (bytes) instead of the table' })
      .epilogue(
        'The numbers are the peak resident memory of one lwm process on the CPU: weights + KV cache at the full context + one prefill chunk\'s activations + the Node.js/TensorFlow.js runtime. ' +
          `lwm chat, generate and serve make the same plan before loading a model and refuse what does not fit (budget: $${MEMORY_ENV}, else this machine's RAM less 10%, 1-4 GiB).`,
      )
      .example('$0 plan --preset LWM-Text-Chat-1M --context 131072', 'The 7B model at 128K tokens')
      .example('$0 plan -m ./LWM-Text-Chat-128K --dtype int8 --kv-dtype bf16', 'Longest context this machine holds with int8 weights')
      .example('$0 plan --preset 7b --context 32768 --memory 64 --json', 'For a 64 GiB machine, as JSON') as unknown as Argv<PlanArgs>,
  handler: handle<PlanArgs>('plan', runPlan),
};

async function runPlan(a: PlanArgs): Promise<void> {
  for (const [k, v] of [['sp', a.sp], ['prefill-chunk', a['prefill-chunk']], ['context', a.context]] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v > 0)) throw new InputError(`--${k} must be a positive integer, got ${v}`);
  }
  if (!WEIGHT_DTYPES.includes(a.dtype)) throw new InputError(`--dtype must be ${WEIGHT_DTYPES.join(', ')}, got '${a.dtype}'`);
  if (!KV_DTYPES.includes(a['kv-dtype'])) throw new InputError(`--kv-dtype must be ${KV_DTYPES.join(' or ')}, got '${a['kv-dtype']}'`);
  const memory = memoryBudget(a.memory);
  const { config, name } = modelConfig({ model: a.model, preset: a.preset });
  const context = a.context ?? config.maxSeqLen;
  const options = { ...(await runtimeOptions()), dtype: a.dtype, kvDtype: a['kv-dtype'], sp: a.sp, prefillChunk: a['prefill-chunk'] };
  const plan = planMemory({ ...options, config, context });
  const label = a.memory !== undefined ? `the ${gib(memory)} of --memory` : `the ${gib(memory)} available`;
  const verdict = fitsVerdict(plan, memory, label);
  if (a.json) {
    process.stdout.write(
      JSON.stringify({
        model: name,
        parameters: plan.parameters,
        model_context: config.maxSeqLen,
        context,
        dtype: plan.dtype,
        kv_dtype: plan.kvDtype,
        sp: plan.sp,
        prefill_chunk: plan.prefillChunk,
        native_attention: plan.options.native,
        bytes: { weights: plan.weights, embeddings: plan.embeddings, kv_cache: plan.kvCache, activations: plan.activations, runtime: plan.runtime, total: plan.total },
        kv_bytes_per_token: plan.kvBytesPerToken,
        memory: { bytes: memory, source: a.memory !== undefined ? '--memory' : 'machine' },
        fits: verdict.fits,
        verdict: verdict.text,
        longest_context: verdict.longest,
      }) + '\n',
    );
    return;
  }
  const out = [
    `${name}: ${params(plan.parameters)} parameters, ${fmt(context)} tokens of context, weights ${plan.dtype}, KV cache ${plan.kvDtype}${plan.sp > 1 ? `, ${plan.sp} processes` : ''}`,
    ...plan.breakdown.map((l) => `  ${l}`),
    verdict.text,
    `longest context in ${label}: ${verdict.longest > 0 ? `${fmt(verdict.longest)} tokens` : 'none'} (the model's context is ${fmt(config.maxSeqLen)}; the KV cache takes ${gib(plan.kvBytesPerToken * 1024)} per 1K tokens)`,
  ];
  process.stdout.write(out.join('\n') + '\n');
}

function params(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : `${(n / 1e6).toFixed(1)}M`;
}

/** How this process would run the model: native fused attention, in-place KV buffers (cpu backend). */
async function runtimeOptions(): Promise<Pick<PlanOptions, 'native' | 'inPlaceCache'>> {
  await initBackend();
  return { native: isNativeKernelActive(FUSED_ATTENTION), inPlaceCache: tf.getBackend() === 'cpu' };
}

/**
 * The config chooseModel would load, read without loading weights: --model DIR, else --preset,
 * else the newest ./lwm-out checkpoint, else `fallbackPreset` (default tiny).
 */
export function modelConfig(a: { model?: string; preset?: string; fallbackPreset?: string }): { config: Readonly<LlamaConfig>; name: string } {
  if (a.model && a.preset) throw new InputError('give either --model or --preset, not both');
  if (a.model) return { config: readModelConfig(a.model), name: path.basename(path.resolve(a.model)) };
  if (!a.preset) {
    const latest = latestCheckpoint(DEFAULT_TRAIN_OUT);
    if (latest && fs.existsSync(path.join(latest.dir, 'config.json'))) return { config: readModelConfig(latest.dir), name: latest.dir };
  }
  const preset = a.preset ?? a.fallbackPreset ?? 'tiny';
  return { config: presetConfig(preset), name: `preset ${preset}` };
}

export interface RequestMemory {
  model?: string;
  preset?: string;
  fallbackPreset?: string;
  /** The command's parsed flags: --dtype and --kv-dtype are planned when it has them (else f32). */
  flags?: object;
  /** A request of known size (lwm generate): its prompt tokens and new tokens; refused when they do not fit. */
  prompt?: number;
  newTokens?: number;
  /** Scores every prompt position (generate --echo --json): the whole prompt is one forward pass. */
  echo?: boolean;
  /** A --context the user gave: refused when it does not fit. */
  context?: number;
  sp?: number;
  prefillChunk?: number;
  /** KV caches alive at once (lwm serve). */
  caches?: number;
  /** What to change, appended to a refusal that a shorter context would fix. */
  hint?: string;
  /** Appended to the note about running at a shorter context than the model's. */
  capHint?: string;
}

/**
 * The memory plan chat, generate and serve make before loading a model. A request of known size
 * (`tokens`) or an explicit `context` that does not fit is refused with the plan's explanation.
 * Otherwise, when the model's own context does not fit, returns the longest context that does
 * (to run at, saying so on stderr); undefined when the model's context fits as it is.
 */
export async function checkMemory(command: string, r: RequestMemory): Promise<number | undefined> {
  if (r.context !== undefined && !(Number.isInteger(r.context) && r.context > 0)) throw new InputError(`--context must be a positive integer, got ${r.context}`);
  const { config, name } = modelConfig(r);
  const env = process.env[MEMORY_ENV];
  const memory = memoryBudget(env === undefined || env === '' ? undefined : Number(env), MEMORY_ENV);
  const memoryLabel = env ? `the ${gib(memory)} of ${MEMORY_ENV}` : undefined;
  const flags = (r.flags ?? {}) as Record<string, unknown>;
  const chunk = r.prefillChunk ?? DEFAULT_PREFILL_CHUNK;
  const options = {
    ...(await runtimeOptions()),
    dtype: (WEIGHT_DTYPES as readonly unknown[]).includes(flags['dtype']) ? (flags['dtype'] as WeightDtype) : autoDtype(config),
    kvDtype: (KV_DTYPES as readonly unknown[]).includes(flags['kv-dtype']) ? (flags['kv-dtype'] as KvDtype) : 'f32',
    sp: r.sp ?? 1,
    // A known prompt shorter than a chunk is the largest forward pass; with echo the whole prompt is.
    prefillChunk: r.prompt === undefined ? chunk : Math.max(1, r.echo ? r.prompt : Math.min(chunk, r.prompt)),
    caches: r.caches ?? 1,
    allLogits: r.echo ?? false,
  };
  const request = r.prompt !== undefined ? r.prompt + (r.newTokens ?? 0) : undefined;
  const explicit = request !== undefined ? Math.min(request, config.maxSeqLen) : r.context;
  const context = explicit ?? config.maxSeqLen;
  const plan = planMemory({ ...options, config, context: Math.max(1, context) });
  const what = `lwm ${command} with ${name}${r.prompt !== undefined ? ` (${fmt(r.prompt)} prompt + ${fmt(r.newTokens ?? 0)} new tokens)` : ''}`;
  if (explicit !== undefined) {
    refuseIfTooLarge(plan, what, { memory, memoryLabel, hint: r.hint });
    return r.context;
  }
  const verdict = fitsVerdict(plan, memory, memoryLabel);
  if (verdict.fits) return undefined;
  // Round down to a whole number of 256-token blocks, the cache's own growth step.
  const longest = verdict.longest >= 256 ? verdict.longest - (verdict.longest % 256) : verdict.longest;
  if (longest < Math.min(options.prefillChunk, config.maxSeqLen)) {
    refuseIfTooLarge(planMemory({ ...options, config, context: Math.min(options.prefillChunk, config.maxSeqLen) }), what, { memory, memoryLabel, hint: r.hint });
  }
  if (detectLaunch().size === 1) {
    note(`lwm ${command}: the model's ${fmt(config.maxSeqLen)}-token context needs ${gib(plan.total)}, more than ${memoryLabel ?? `the ${gib(memory)} available`}; running with a context of ${fmt(longest)} tokens, the longest that fits${r.capHint ? ` (${r.capHint})` : ''}; lwm plan shows why`);
  }
  return longest;
}
