import * as tf from '@tensorflow/tfjs';
import { ConfigError } from '../../ops/errors.js';

/**
 * LWM's VQGAN (`VQGANConfig` in lwm/vqgan.py), camelCased. LWM always runs the defaults
 * (VQGAN_DEFAULTS); other values exist to shrink the model for tests.
 */
export interface VqganConfig {
  /** Nominal input size; LWM asserts H = W = 256. Here any H, W divisible by the downsampling factor work. */
  resolution: number;
  /** Image channels (RGB). */
  numChannels: number;
  /** Width of level 0; level i has hiddenChannels * channelMult[i]. */
  hiddenChannels: number;
  channelMult: readonly number[];
  /** ResnetBlocks per encoder level; decoder levels have numResBlocks + 1. */
  numResBlocks: number;
  /** Must be empty: LWM's config has no attention blocks (AttnBlock is never instantiated). */
  attnResolutions: readonly number[];
  /** Must be true (no attention in the mid blocks), as in LWM. */
  noAttnMidBlock: boolean;
  /** Channels of the encoder output / post_quant_conv output. */
  zChannels: number;
  /** Codebook rows. */
  numEmbeddings: number;
  /** Codebook row width (quant_conv output channels). */
  quantizedEmbedDim: number;
  /** true: Downsample/Upsample have a 3x3 conv; false: 2x2 average pool / plain nearest upsampling. */
  resampleWithConv: boolean;
  /** Flax nn.GroupNorm defaults: 32 groups, epsilon 1e-6. Fewer groups only to run shrunken test models. */
  numGroups: number;
  normEps: number;
}

/** LWM's VQGAN: widths 128/256/256/512/768, 16x downsampling, 8192 x 64 codebook; 146,244,675 parameters. */
export const VQGAN_DEFAULTS: Readonly<VqganConfig> = Object.freeze({
  resolution: 256,
  numChannels: 3,
  hiddenChannels: 128,
  channelMult: Object.freeze([1, 2, 2, 4, 6]),
  numResBlocks: 2,
  attnResolutions: Object.freeze([]),
  noAttnMidBlock: true,
  zChannels: 64,
  numEmbeddings: 8192,
  quantizedEmbedDim: 64,
  resampleWithConv: true,
  numGroups: 32,
  normEps: 1e-6,
});

/**
 * The reduced-width VQGAN of fixtures/tiny-vqgan-pickle (widths 8/16/16/32/48, codebook 64 x 8):
 * the same 277 parameter names. With LWM's 32 groups it cannot run (widths < 32); use
 * `vqganConfig({ ...VQGAN_TINY, numGroups: 8 })` to run it.
 */
export const VQGAN_TINY: Readonly<VqganConfig> = Object.freeze({
  ...VQGAN_DEFAULTS,
  hiddenChannels: 8,
  zChannels: 8,
  numEmbeddings: 64,
  quantizedEmbedDim: 8,
});

/** LWM's defaults with some fields replaced; validated. */
export function vqganConfig(overrides: Partial<VqganConfig> = {}): VqganConfig {
  const c: VqganConfig = { ...VQGAN_DEFAULTS, ...overrides };
  c.channelMult = [...c.channelMult];
  c.attnResolutions = [...c.attnResolutions];
  validateVqganConfig(c);
  return c;
}

/** A config from the snake_case keys of `VQGANConfig` (e.g. a fixture's config.json); missing keys take LWM's defaults. */
export function vqganConfigFromJson(json: Record<string, unknown>): VqganConfig {
  const pick = <T>(key: string): T | undefined => (key in json ? (json[key] as T) : undefined);
  const o: Partial<VqganConfig> = {};
  const set = <K extends keyof VqganConfig>(k: K, v: VqganConfig[K] | undefined) => {
    if (v !== undefined) o[k] = v;
  };
  set('resolution', pick('resolution'));
  set('numChannels', pick('num_channels'));
  set('hiddenChannels', pick('hidden_channels'));
  set('channelMult', pick('channel_mult'));
  set('numResBlocks', pick('num_res_blocks'));
  set('attnResolutions', pick('attn_resolutions'));
  set('noAttnMidBlock', pick('no_attn_mid_block'));
  set('zChannels', pick('z_channels'));
  set('numEmbeddings', pick('num_embeddings'));
  set('quantizedEmbedDim', pick('quantized_embed_dim'));
  set('resampleWithConv', pick('resample_with_conv'));
  return vqganConfig(o);
}

const posInt = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v > 0;

export function validateVqganConfig(c: VqganConfig): void {
  for (const k of ['resolution', 'numChannels', 'hiddenChannels', 'numResBlocks', 'zChannels', 'numEmbeddings', 'quantizedEmbedDim', 'numGroups'] as const) {
    if (!posInt(c[k])) throw new ConfigError(`VQGAN config: ${k} must be a positive integer, got ${String(c[k])}`);
  }
  if (!Array.isArray(c.channelMult) || c.channelMult.length === 0 || !c.channelMult.every(posInt)) {
    throw new ConfigError(`VQGAN config: channelMult must be a non-empty list of positive integers, got ${JSON.stringify(c.channelMult)}`);
  }
  if (c.attnResolutions.length > 0 || !c.noAttnMidBlock) {
    throw new ConfigError('VQGAN config: attention blocks are not supported (LWM uses attnResolutions [] and noAttnMidBlock true); remove those overrides');
  }
  if (!(typeof c.normEps === 'number' && c.normEps > 0)) throw new ConfigError(`VQGAN config: normEps must be > 0, got ${String(c.normEps)}`);
}

/** Spatial reduction of the encoder: 2^(levels - 1) (16 for LWM). */
export function vqganDownsampleFactor(c: VqganConfig): number {
  return 2 ** (c.channelMult.length - 1);
}

/** One parameter: its Flax tree path joined with '/' (as in the pickle and params.txt) and its shape. */
export interface VqganParamSpec {
  name: string;
  shape: number[];
}

/** Separator of Flax tree path components in parameter names. */
export const VQGAN_PATH_SEP = '/';

function conv(out: VqganParamSpec[], name: string, k: number, cin: number, cout: number): void {
  out.push({ name: `${name}/kernel`, shape: [k, k, cin, cout] }, { name: `${name}/bias`, shape: [cout] });
}

function norm(out: VqganParamSpec[], name: string, c: number): void {
  out.push({ name: `${name}/scale`, shape: [c] }, { name: `${name}/bias`, shape: [c] });
}

function resnet(out: VqganParamSpec[], name: string, cin: number, cout: number): void {
  norm(out, `${name}/GroupNorm_0`, cin);
  conv(out, `${name}/Conv_0`, 3, cin, cout);
  norm(out, `${name}/GroupNorm_1`, cout);
  conv(out, `${name}/Conv_1`, 3, cout, cout);
  if (cin !== cout) conv(out, `${name}/Conv_2`, 1, cin, cout);
}

/** Parameters in the order the network uses them (encoder, quant_conv, quantize, post_quant_conv, decoder). */
export function vqganParamSpecsInUseOrder(c: VqganConfig): VqganParamSpec[] {
  const s: VqganParamSpec[] = [];
  const levels = c.channelMult.length;
  const width = (level: number) => c.hiddenChannels * c.channelMult[level]!;
  // Encoder
  let ch = c.hiddenChannels;
  conv(s, 'encoder/Conv_0', 3, c.numChannels, ch);
  for (let i = 0; i < levels; i++) {
    const block = `encoder/DownsamplingBlock_${i}`;
    for (let r = 0; r < c.numResBlocks; r++) {
      resnet(s, `${block}/ResnetBlock_${r}`, ch, width(i));
      ch = width(i);
    }
    if (i !== levels - 1 && c.resampleWithConv) conv(s, `${block}/Downsample_0/Conv_0`, 3, ch, ch);
  }
  resnet(s, 'encoder/MidBlock_0/ResnetBlock_0', ch, ch);
  resnet(s, 'encoder/MidBlock_0/ResnetBlock_1', ch, ch);
  norm(s, 'encoder/GroupNorm_0', ch);
  conv(s, 'encoder/Conv_1', 3, ch, c.zChannels);
  conv(s, 'quant_conv', 1, c.zChannels, c.quantizedEmbedDim);
  s.push({ name: 'quantize/embeddings', shape: [c.numEmbeddings, c.quantizedEmbedDim] });
  conv(s, 'post_quant_conv', 1, c.quantizedEmbedDim, c.zChannels);
  // Decoder: UpsamplingBlock_0 is the deepest level (blocks are created in reversed level order).
  ch = width(levels - 1);
  conv(s, 'decoder/Conv_0', 3, c.zChannels, ch);
  resnet(s, 'decoder/MidBlock_0/ResnetBlock_0', ch, ch);
  resnet(s, 'decoder/MidBlock_0/ResnetBlock_1', ch, ch);
  for (let b = 0; b < levels; b++) {
    const level = levels - 1 - b;
    const block = `decoder/UpsamplingBlock_${b}`;
    for (let r = 0; r < c.numResBlocks + 1; r++) {
      resnet(s, `${block}/ResnetBlock_${r}`, ch, width(level));
      ch = width(level);
    }
    if (level !== 0 && c.resampleWithConv) conv(s, `${block}/Upsample_0/Conv_0`, 3, ch, ch);
  }
  norm(s, 'decoder/GroupNorm_0', ch);
  conv(s, 'decoder/Conv_1', 3, ch, c.numChannels);
  return s;
}

/**
 * Every parameter's name and shape, sorted by name (code-unit order). This is the order of the
 * pickled Flax dict (keys sorted at every level; '/' sorts before every name character).
 */
export function vqganParamSpecs(c: VqganConfig): VqganParamSpec[] {
  return vqganParamSpecsInUseOrder(c).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export function vqganParamCount(c: VqganConfig): number {
  return vqganParamSpecs(c).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);
}

/**
 * Deterministic weights initialised as Flax does: conv kernels lecun_normal (truncated normal,
 * variance 1/fan_in), biases 0, GroupNorm scale 1 / bias 0, codebook uniform(-1/n, 1/n).
 */
export function initVqganParams(c: VqganConfig, seed = 0): Map<string, tf.Tensor> {
  validateVqganConfig(c);
  const map = new Map<string, tf.Tensor>();
  vqganParamSpecs(c).forEach((s, i) => {
    const rngSeed = seed * 7919 + i;
    let t: tf.Tensor;
    if (s.name === 'quantize/embeddings') {
      t = tf.randomUniform(s.shape, -1 / c.numEmbeddings, 1 / c.numEmbeddings, 'float32', rngSeed);
    } else if (s.name.endsWith('/kernel')) {
      const [kh, kw, cin] = s.shape as [number, number, number, number];
      // 0.87962566 = std of a unit normal truncated to [-2, 2] (flax variance_scaling).
      t = tf.truncatedNormal(s.shape, 0, Math.sqrt(1 / (kh * kw * cin)) / 0.8796256610342398, 'float32', rngSeed);
    } else if (s.name.endsWith('/scale')) {
      t = tf.ones(s.shape);
    } else {
      t = tf.zeros(s.shape);
    }
    map.set(s.name, t);
  });
  return map;
}
