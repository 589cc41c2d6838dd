/**
 * lwm: the Large World Model on TensorFlow.js.
 *
 *   import { loadModel, loadTokenizer, generate } from 'lwm';
 *   const model = loadModel('./LWM-Text-Chat-128K');
 *   const tok = loadTokenizer('./LWM-Text-Chat-128K');
 *   const out = await generate(model, tok.encode('Hello', { bos: true }), { maxTokens: 32 });
 *   console.log(tok.decode(out.tokens));
 */

// Errors and tensor ops
export * from '../ops/index.js';

// Models and configs
export * from '../models/index.js';

// Data: tokenizer, ffmpeg discovery
export * from '../data/index.js';

// Backend, checkpoints, generation
export { initBackend, type BackendInfo } from './backend.js';
export { loadModel, saveModel, readModelConfig, type LoadOptions, type SaveOptions, type WeightDtype } from './checkpoint/modelDir.js';
export {
  readSafetensorsHeader,
  readTensorF32,
  readTensorI32,
  readTensorU8,
  readWeightIndex,
  writeSafetensors,
  writeSafetensorsSharded,
  type TensorEntry,
  type TensorToWrite,
  type WriteDtype,
} from './checkpoint/safetensors.js';
export {
  loadVqgan,
  saveVqgan,
  readVqganConfig,
  vqganConfigToJson,
  vqganWeightsHash,
  VQGAN_MODEL_TYPE,
  VQGAN_FORMAT_VERSION,
  type LoadVqganOptions,
  type SaveVqganOptions,
} from './checkpoint/vqgan.js';
export { generate, generateTokens, prefillCache, validatePrompt, type GenerateOptions, type GenerateResult, type GenerateStep, type StopReason } from './generate.js';
export { streamText, generateText, StopStringMatcher, type TextGenerateOptions, type TextResult } from './textStream.js';

// Chat: LWM's templates, multi-turn sessions over one KV cache, media codes and prompt caches
export * from './chat/index.js';

// Image and video generation: LWM's vision sampling loop, decoded by the VQGAN to PNG or MP4
export * from './vision/index.js';

// lwm serve: the OpenAI-compatible HTTP API
export * from './serve/index.js';
export { createModel } from './createModel.js';
export { writeGguf, readGgufHeader } from './checkpoint/gguf.js';

// Sequence parallelism: the ring's process group
export { ProcessGroup, type ProcessGroupOptions, type RingStats } from './distributed/processGroup.js';
export { detectLaunch, type LaunchInfo } from './distributed/env.js';

// Datasets: lwm prepare's pipeline and its output folder
export * from './prepare/index.js';

// Model-generated question-answer data (lwm data qa).
export { runQa, readDocuments, QA_DATASET_FILE, QA_STATS_FILE, type QaRunOptions, type QaStats, type QaProgress } from './qa/run.js';
export { endpointGenerator, localGenerator, chatCompletionsUrl, ServerError, type QaGenerator, type EndpointOptions } from './qa/generators.js';
export { qaPrompt, parseQaReply, groundedShare, QA_PROMPT_VERSION, type QaVerdict, type DropReason } from './qa/prompt.js';

// Training: fine-tuning API, the trainer and its pieces
export { finetune, type FinetuneOptions } from './train/finetune.js';
export { train, checkTrainConfig, type TrainConfig, type TrainHooks, type TrainSummary, type StepReport, type Stage } from './train/run.js';
export { Trainer, type TrainerOptions, type StepMetrics } from './train/trainer.js';
export { weightedLoss, type LossBatch } from './train/loss.js';
export { AdamW, globalNorm, paramNorm, LWM_ADAMW } from './train/optimizer.js';
export { makeSchedule, warmupCosine, warmupLinear, constant, LWM_SCHEDULE, LWM_SCRIPT_SCHEDULE, type Schedule, type ScheduleSpec } from './train/schedule.js';
export { saveCheckpoint, loadCheckpoint, latestCheckpoint, listCheckpoints } from './train/checkpoint.js';
export { lossCurvePng } from './train/plot.js';
export { passkeyAccuracy } from './train/passkeyEval.js';
export * from './eval/needle.js';
export * from './eval/passkeyEval.js';
export * from './eval/run.js';
export * from './eval/perplexity.js';
export * from './eval/videoNeedle.js';
export { heatmapPng, lineChartPng, scoreColor, heatmapLayout, lineChartLayout, type HeatmapOptions, type LineChartOptions } from './eval/plot.js';
