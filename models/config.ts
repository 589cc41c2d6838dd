import { ConfigError } from '../ops/errors.js';

/**
 * Architecture of an LWM / LLaMA-family decoder. Field names are camelCase versions of the
 * Hugging Face `LlamaConfig` keys; `fromHfConfig`/`toHfConfig` translate.
 */
export interface LlamaConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  /** K/V heads; equal to numHeads for every LWM model, fewer for grouped-query LLaMA checkpoints. */
  numKvHeads: number;
  headDim: number;
  /** Longest position the model is used at; RoPE is not rescaled by it (no interpolation). */
  maxSeqLen: number;
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  /** 0 for text models; 8448 (8192 VQGAN codes + 256) for LWM vision-language models. */
  visionVocabSize: number;
  bosTokenId: number;
  eosTokenId: number;
}

type Arch = Pick<LlamaConfig, 'hiddenSize' | 'intermediateSize' | 'numLayers' | 'numHeads' | 'maxSeqLen' | 'rmsNormEps'>;

/** LWM's LLAMA_STANDARD_CONFIGS (lwm/llama.py) plus `tiny`, the built-in default for demos and tests. */
export const ARCH_PRESETS: Readonly<Record<string, Arch>> = {
  '200m': { hiddenSize: 1024, intermediateSize: 2048, numLayers: 14, numHeads: 8, maxSeqLen: 2048, rmsNormEps: 1e-6 },
  '1b': { hiddenSize: 2048, intermediateSize: 5504, numLayers: 22, numHeads: 16, maxSeqLen: 2048, rmsNormEps: 1e-6 },
  '3b': { hiddenSize: 3200, intermediateSize: 8640, numLayers: 26, numHeads: 32, maxSeqLen: 2048, rmsNormEps: 1e-6 },
  '7b': { hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, maxSeqLen: 4096, rmsNormEps: 1e-6 },
  '13b': { hiddenSize: 5120, intermediateSize: 13824, numLayers: 40, numHeads: 40, maxSeqLen: 2048, rmsNormEps: 1e-6 },
  '30b': { hiddenSize: 6656, intermediateSize: 17920, numLayers: 60, numHeads: 52, maxSeqLen: 2048, rmsNormEps: 1e-6 },
  '65b': { hiddenSize: 8192, intermediateSize: 22016, numLayers: 80, numHeads: 64, maxSeqLen: 2048, rmsNormEps: 1e-5 },
  /** ~100M parameters: the size native-kernel benchmarks compare with llama.cpp. */
  '100m': { hiddenSize: 640, intermediateSize: 1728, numLayers: 12, numHeads: 10, maxSeqLen: 4096, rmsNormEps: 1e-6 },
  debug: { hiddenSize: 256, intermediateSize: 256, numLayers: 2, numHeads: 2, maxSeqLen: 2048, rmsNormEps: 1e-6 },
  tiny: { hiddenSize: 64, intermediateSize: 172, numLayers: 2, numHeads: 4, maxSeqLen: 4096, rmsNormEps: 1e-6 },
};

export const LLAMA_VOCAB_SIZE = 32000;
export const VISION_VOCAB_SIZE = 8448;
/** The class default; every released model overrides it (theta is stored in no LWM checkpoint). */
export const DEFAULT_ROPE_THETA = 10000;

/** RoPE theta and max length of each LWM context size (lwm-spec 1.4). */
export const CONTEXT_PRESETS: Readonly<Record<string, { ropeTheta: number; maxSeqLen: number }>> = {
  '32k': { ropeTheta: 1e6, maxSeqLen: 32768 },
  '128k': { ropeTheta: 1e7, maxSeqLen: 131072 },
  '256k': { ropeTheta: 1e7, maxSeqLen: 262144 },
  '512k': { ropeTheta: 2.5e7, maxSeqLen: 524288 },
  '1m': { ropeTheta: 5e7, maxSeqLen: 1048576 },
};
/** Every vision-language release and script uses theta 5e7, whatever its length. */
export const VISION_ROPE_THETA = 5e7;

/** The released models by name (Hugging Face repo names, lower-cased, without the -Jax suffix). */
export const MODEL_PRESETS: Readonly<Record<string, { vision: boolean; context: string }>> = Object.fromEntries([
  ...['32k', '128k', '256k', '512k', '1m'].flatMap((c) => [
    [`lwm-text-${c}`, { vision: false, context: c }],
    [`lwm-text-chat-${c}`, { vision: false, context: c }],
  ]),
  ...['32k', '128k', '1m'].map((c) => [`lwm-chat-${c}`, { vision: true, context: c }]),
]);

export function presetNames(): string[] {
  return [...Object.keys(ARCH_PRESETS), '7b-vision', ...Object.keys(MODEL_PRESETS)];
}

/**
 * Config for a preset name: an architecture (`7b`, `debug`, `tiny`, ...), `<arch>-vision`, or a
 * release name (`LWM-Text-Chat-1M`, `LWM-Chat-32K`, ...; case-insensitive), which fixes theta and length.
 */
export function presetConfig(name: string, overrides: Partial<LlamaConfig> = {}): LlamaConfig {
  const key = name.toLowerCase().replace(/-jax$/, '');
  let arch = ARCH_PRESETS[key];
  let vision = false;
  let context: { ropeTheta: number; maxSeqLen: number } | undefined;
  if (!arch && key.endsWith('-vision')) {
    arch = ARCH_PRESETS[key.slice(0, -'-vision'.length)];
    vision = true;
  }
  const release = MODEL_PRESETS[key];
  if (release) {
    arch = ARCH_PRESETS['7b'];
    vision = release.vision;
    context = CONTEXT_PRESETS[release.context];
    if (vision && context) context = { ...context, ropeTheta: VISION_ROPE_THETA };
  }
  if (!arch) {
    throw new ConfigError(`unknown preset '${name}'; choose one of: ${presetNames().join(', ')}`);
  }
  return resolveConfig({
    ...arch,
    vocabSize: LLAMA_VOCAB_SIZE,
    numKvHeads: arch.numHeads,
    headDim: arch.hiddenSize / arch.numHeads,
    ropeTheta: DEFAULT_ROPE_THETA,
    tieWordEmbeddings: false,
    visionVocabSize: vision ? VISION_VOCAB_SIZE : 0,
    bosTokenId: 1,
    eosTokenId: 2,
    ...(context ?? {}),
    ...overrides,
  });
}

/** Validates a complete config and returns a frozen copy. */
export function resolveConfig(c: LlamaConfig, source = 'config'): Readonly<LlamaConfig> {
  const positiveInt = (k: keyof LlamaConfig) => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new ConfigError(`${source}: ${k} must be a positive integer, got ${JSON.stringify(v)}`);
    }
  };
  for (const k of ['vocabSize', 'hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'maxSeqLen'] as const) {
    positiveInt(k);
  }
  if (!Number.isInteger(c.visionVocabSize) || c.visionVocabSize < 0) {
    throw new ConfigError(`${source}: visionVocabSize must be 0 (text model) or a positive integer, got ${c.visionVocabSize}`);
  }
  if (c.numHeads % c.numKvHeads !== 0) {
    throw new ConfigError(`${source}: numHeads ${c.numHeads} is not a multiple of numKvHeads ${c.numKvHeads}`);
  }
  if (c.headDim % 2 !== 0) throw new ConfigError(`${source}: headDim must be even for RoPE, got ${c.headDim}`);
  if (!(c.rmsNormEps > 0)) throw new ConfigError(`${source}: rmsNormEps must be > 0, got ${c.rmsNormEps}`);
  if (!(c.ropeTheta > 1)) throw new ConfigError(`${source}: ropeTheta must be > 1, got ${c.ropeTheta}`);
  for (const k of ['bosTokenId', 'eosTokenId'] as const) {
    if (!Number.isInteger(c[k]) || c[k] < 0 || c[k] >= c.vocabSize) {
      throw new ConfigError(`${source}: ${k} ${c[k]} is outside the vocabulary [0, ${c.vocabSize})`);
    }
  }
  return Object.freeze({ ...c, tieWordEmbeddings: Boolean(c.tieWordEmbeddings) });
}

/** Scalar count of every weight, from the config alone (lwm-spec 11 item 1). */
export function paramCount(c: LlamaConfig): number {
  const e = c.hiddenSize;
  const qo = 2 * e * c.numHeads * c.headDim;
  const kv = 2 * e * c.numKvHeads * c.headDim;
  const perLayer = qo + kv + 3 * e * c.intermediateSize + 2 * e;
  const text = c.vocabSize * e * (c.tieWordEmbeddings ? 1 : 2);
  return text + c.numLayers * perLayer + e + 2 * c.visionVocabSize * e;
}

/** Reads a Hugging Face `config.json` object (plus LWM's `vision_vocab_size`). */
export function fromHfConfig(j: Record<string, unknown>, source = 'config.json'): Readonly<LlamaConfig> {
  const num = (key: string, fallback?: number): number => {
    const v = j[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new ConfigError(`${source}: missing required key '${key}'`);
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new ConfigError(`${source}: '${key}' must be a number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const modelType = j['model_type'];
  if (modelType !== undefined && modelType !== 'llama' && modelType !== 'lwm') {
    throw new ConfigError(`${source}: model_type '${String(modelType)}' is not supported; lwm runs LLaMA-architecture models`);
  }
  if (j['rope_scaling'] != null) {
    throw new ConfigError(`${source}: rope_scaling is not supported (LWM models use plain RoPE with a large theta); remove it or set it to null`);
  }
  const hiddenSize = num('hidden_size');
  const numHeads = num('num_attention_heads');
  return resolveConfig(
    {
      vocabSize: num('vocab_size'),
      hiddenSize,
      intermediateSize: num('intermediate_size'),
      numLayers: num('num_hidden_layers'),
      numHeads,
      numKvHeads: num('num_key_value_heads', numHeads),
      headDim: num('head_dim', Math.floor(hiddenSize / numHeads)),
      maxSeqLen: num('max_position_embeddings', num('max_sequence_length', 4096)),
      rmsNormEps: num('rms_norm_eps', 1e-6),
      ropeTheta: num('rope_theta', num('theta', DEFAULT_ROPE_THETA)),
      tieWordEmbeddings: j['tie_word_embeddings'] === true,
      visionVocabSize: num('vision_vocab_size', 0),
      bosTokenId: num('bos_token_id', 1),
      eosTokenId: num('eos_token_id', 2),
    },
    source,
  );
}

export function toHfConfig(c: LlamaConfig, dtype: 'float32' | 'float16' | 'bfloat16'): Record<string, unknown> {
  return {
    architectures: [c.visionVocabSize > 0 ? 'LWMVisionLlamaForCausalLM' : 'LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    hidden_act: 'silu',
    max_position_embeddings: c.maxSeqLen,
    rms_norm_eps: c.rmsNormEps,
    rope_theta: c.ropeTheta,
    rope_scaling: null,
    tie_word_embeddings: c.tieWordEmbeddings,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    torch_dtype: dtype,
    vision_vocab_size: c.visionVocabSize,
  };
}
