export * from './config.js';
export { ParamStore, paramSpecs, paramName, initParams, isNormWeight, isLinearWeight, lowerParams, type ParamSpec, type LayerPart, type Weight } from './params.js';
export { LlamaModel, type ForwardOptions, type SampleMode } from './llama.js';
export { KVCache, type KvDtype } from './kvCache.js';
export { shardSequence, unshardSequence, padForRing, type ShardSpec, type PaddedBatch } from './sequenceParallel.js';
export {
  VQGAN_DEFAULTS,
  VQGAN_TINY,
  vqganConfig,
  vqganConfigFromJson,
  vqganParamSpecs,
  vqganParamCount,
  initVqganParams,
  vectorQuantize,
  Vqgan,
  type VqganConfig,
  type VqganParamSpec,
} from './vqgan.js';
