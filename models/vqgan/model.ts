import * as tf from '@tensorflow/tfjs';
import { CheckpointError, ConfigError, InputError } from '../../ops/errors.js';
import { validateVqganConfig, vqganParamSpecs, type VqganConfig } from './config.js';
import { BOTTOM_RIGHT_PADDING, conv2d, groupNorm, upsampleNearest2x, vectorQuantize, type ConvPadding } from './layers.js';

/**
 * LWM's VQGAN (lwm/vqgan.py) on TF.js, NHWC float32. Frames [T, H, W, 3] in [-1, 1] become
 * int32 codes [T, H/16, W/16] (encode) and back (decode, clipped to [-1, 1]). Owns its params.
 */
export class Vqgan {
  readonly downsampleFactor: number;
  private readonly weights: Map<string, tf.Tensor>;

  constructor(
    readonly config: Readonly<VqganConfig>,
    params: Map<string, tf.Tensor>,
  ) {
    validateVqganConfig(config as VqganConfig);
    const levels = config.channelMult.length;
    const widths = [config.hiddenChannels, ...config.channelMult.map((m) => m * config.hiddenChannels)];
    const bad = widths.find((w) => w % config.numGroups !== 0);
    if (bad !== undefined) {
      throw new ConfigError(`VQGAN config: width ${bad} is not divisible by numGroups ${config.numGroups}; use widths that are multiples of it or fewer groups`);
    }
    for (const s of vqganParamSpecs(config as VqganConfig)) {
      const t = params.get(s.name);
      if (!t) throw new CheckpointError(`VQGAN params: missing '${s.name}' (shape [${s.shape}]); the weights do not match the config`);
      if (t.shape.join(',') !== s.shape.join(',')) {
        throw new CheckpointError(`VQGAN params: '${s.name}' has shape [${t.shape}], the config needs [${s.shape}]`);
      }
      if (t.dtype !== 'float32') throw new CheckpointError(`VQGAN params: '${s.name}' is ${t.dtype}; convert it to float32`);
    }
    this.weights = params;
    this.downsampleFactor = 2 ** (levels - 1);
  }

  /** Codebook [numEmbeddings, quantizedEmbedDim]. */
  get codebook(): tf.Tensor2D {
    return this.p('quantize/embeddings') as tf.Tensor2D;
  }

  /** Frames [T, H, W, 3] float32 in [-1, 1] -> int32 codes [T, H/f, W/f] (f = 16 for LWM). */
  encode(frames: tf.Tensor4D): tf.Tensor3D {
    return tf.tidy(() => this.quantize(this.encodeLatents(frames)).codes);
  }

  /** Encoder + quant_conv: latents [T, H/f, W/f, quantizedEmbedDim] before quantization. */
  encodeLatents(frames: tf.Tensor4D): tf.Tensor4D {
    this.checkFrames(frames);
    return tf.tidy(() => this.conv(this.encoder(frames), 'quant_conv', 1, 'valid'));
  }

  /** VectorQuantizer: nearest codebook row per position (ties -> lowest index). */
  quantize(latents: tf.Tensor4D): { codes: tf.Tensor3D; quantized: tf.Tensor4D } {
    const dim = this.config.quantizedEmbedDim;
    if (latents.rank !== 4 || latents.shape[3] !== dim || latents.dtype !== 'float32') {
      throw new InputError(`VQGAN quantize: latents must be float32 [T, h, w, ${dim}], got ${latents.dtype} [${latents.shape}]`);
    }
    const r = vectorQuantize(latents, this.codebook);
    return { codes: r.codes as tf.Tensor3D, quantized: r.quantized as tf.Tensor4D };
  }

  /** Codebook rows of int32 codes [T, h, w] -> [T, h, w, quantizedEmbedDim]. */
  embed(codes: tf.Tensor3D): tf.Tensor4D {
    this.checkCodes(codes);
    return this.lookup(codes);
  }

  private lookup(codes: tf.Tensor3D): tf.Tensor4D {
    return tf.tidy(() => {
      const [t, h, w] = codes.shape;
      return tf.gather(this.codebook, codes.reshape([-1])).reshape([t, h, w, this.config.quantizedEmbedDim]) as tf.Tensor4D;
    });
  }

  /** post_quant_conv + decoder + clip to [-1, 1]: quantized latents [T, h, w, D] -> frames [T, h*f, w*f, 3]. */
  decodeLatents(quantized: tf.Tensor4D): tf.Tensor4D {
    const dim = this.config.quantizedEmbedDim;
    if (quantized.rank !== 4 || quantized.shape[3] !== dim || quantized.dtype !== 'float32') {
      throw new InputError(`VQGAN decode: latents must be float32 [T, h, w, ${dim}], got ${quantized.dtype} [${quantized.shape}]`);
    }
    return tf.tidy(() => this.decoder(this.conv(quantized, 'post_quant_conv', 1, 'valid')).clipByValue(-1, 1) as tf.Tensor4D);
  }

  /** int32 codes [T, h, w] in [0, numEmbeddings) -> frames [T, h*f, w*f, 3] in [-1, 1]. */
  decode(codes: tf.Tensor3D): tf.Tensor4D {
    this.checkCodes(codes);
    return tf.tidy(() => this.decodeLatents(this.lookup(codes)));
  }

  /** The weights by Flax path; owned by this model (dispose() frees them). */
  get params(): ReadonlyMap<string, tf.Tensor> {
    return this.weights;
  }

  dispose(): void {
    for (const t of this.weights.values()) t.dispose();
    this.weights.clear();
  }

  private checkFrames(x: tf.Tensor): void {
    const f = this.downsampleFactor;
    const ch = this.config.numChannels;
    if (x.rank !== 4) throw new InputError(`VQGAN encode: frames must be rank 4 [T, H, W, ${ch}], got rank ${x.rank} [${x.shape}]; stack frames along axis 0`);
    if (x.dtype !== 'float32') throw new InputError(`VQGAN encode: frames must be float32 in [-1, 1], got ${x.dtype}; scale pixels with x / 127.5 - 1`);
    const [t, h, w, c] = x.shape as [number, number, number, number];
    if (c !== ch) throw new InputError(`VQGAN encode: frames must have ${ch} channels (RGB), got ${c}`);
    if (t === 0 || h === 0 || w === 0) throw new InputError(`VQGAN encode: frames [${x.shape}] are empty`);
    if (h % f !== 0 || w % f !== 0) throw new InputError(`VQGAN encode: height and width must be multiples of ${f}, got ${h}x${w}; resize or crop (LWM uses 256x256)`);
    const finite = tf.tidy(() => tf.all(tf.isFinite(x)).dataSync()[0]);
    if (!finite) throw new InputError('VQGAN encode: frames contain NaN or Infinity');
  }

  private checkCodes(codes: tf.Tensor): void {
    const n = this.config.numEmbeddings;
    if (codes.rank !== 3) throw new InputError(`VQGAN decode: codes must be rank 3 [T, h, w], got rank ${codes.rank} [${codes.shape}]`);
    if (codes.dtype !== 'int32') throw new InputError(`VQGAN decode: codes must be int32, got ${codes.dtype}`);
    if (codes.size === 0) throw new InputError(`VQGAN decode: codes [${codes.shape}] are empty`);
    const [lo, hi] = tf.tidy(() => [codes.min().dataSync()[0]!, codes.max().dataSync()[0]!]);
    if (lo! < 0 || hi! >= n) throw new InputError(`VQGAN decode: codes must be in [0, ${n}), got values in [${lo}, ${hi}]; vision token ids must have their offset removed`);
  }

  private p(name: string): tf.Tensor {
    const t = this.params.get(name);
    if (!t) throw new Error(`Vqgan: no parameter '${name}' (disposed?)`);
    return t;
  }

  private conv(x: tf.Tensor4D, name: string, stride: 1 | 2 = 1, padding: ConvPadding = 'same'): tf.Tensor4D {
    return conv2d(x, this.p(`${name}/kernel`), this.p(`${name}/bias`), stride, padding);
  }

  /** GroupNorm, then SiLU when `silu` (every norm of LWM's VQGAN is followed by one). */
  private norm(x: tf.Tensor4D, name: string, silu: boolean): tf.Tensor4D {
    return groupNorm(x, this.p(`${name}/scale`), this.p(`${name}/bias`), this.config.numGroups, this.config.normEps, { silu });
  }

  private resnet(x: tf.Tensor4D, name: string, out: number): tf.Tensor4D {
    let h = this.conv(this.norm(x, `${name}/GroupNorm_0`, true), `${name}/Conv_0`);
    h = this.conv(this.norm(h, `${name}/GroupNorm_1`, true), `${name}/Conv_1`);
    const skip = x.shape[3] === out ? x : this.conv(x, `${name}/Conv_2`, 1, 'valid');
    return h.add(skip) as tf.Tensor4D;
  }

  private encoder(x: tf.Tensor4D): tf.Tensor4D {
    const c = this.config;
    const levels = c.channelMult.length;
    let h = this.conv(x, 'encoder/Conv_0');
    for (let i = 0; i < levels; i++) {
      const block = `encoder/DownsamplingBlock_${i}`;
      const width = c.hiddenChannels * c.channelMult[i]!;
      for (let r = 0; r < c.numResBlocks; r++) h = advance(h, (t) => this.resnet(t, `${block}/ResnetBlock_${r}`, width));
      if (i !== levels - 1) {
        h = advance(h, (t) => (c.resampleWithConv ? this.conv(t, `${block}/Downsample_0/Conv_0`, 2, BOTTOM_RIGHT_PADDING) : tf.avgPool(t, 2, 2, 'valid')));
      }
    }
    h = advance(h, (t) => this.resnet(t, 'encoder/MidBlock_0/ResnetBlock_0', t.shape[3]));
    h = advance(h, (t) => this.resnet(t, 'encoder/MidBlock_0/ResnetBlock_1', t.shape[3]));
    return advance(h, (t) => this.conv(this.norm(t, 'encoder/GroupNorm_0', true), 'encoder/Conv_1'));
  }

  private decoder(z: tf.Tensor4D): tf.Tensor4D {
    const c = this.config;
    const levels = c.channelMult.length;
    let h = this.conv(z, 'decoder/Conv_0');
    h = advance(h, (t) => this.resnet(t, 'decoder/MidBlock_0/ResnetBlock_0', t.shape[3]));
    h = advance(h, (t) => this.resnet(t, 'decoder/MidBlock_0/ResnetBlock_1', t.shape[3]));
    for (let b = 0; b < levels; b++) {
      const level = levels - 1 - b;
      const block = `decoder/UpsamplingBlock_${b}`;
      const width = c.hiddenChannels * c.channelMult[level]!;
      for (let r = 0; r < c.numResBlocks + 1; r++) h = advance(h, (t) => this.resnet(t, `${block}/ResnetBlock_${r}`, width));
      if (level !== 0) {
        h = advance(h, (t) => (c.resampleWithConv ? this.conv(upsampleNearest2x(t), `${block}/Upsample_0/Conv_0`) : upsampleNearest2x(t)));
      }
    }
    return advance(h, (t) => this.conv(this.norm(t, 'decoder/GroupNorm_0', true), 'decoder/Conv_1'));
  }
}

/**
 * f(h) in its own tidy, then frees h (never the caller's input: the first stage is a conv).
 * encode and decode run in one tidy, which would otherwise keep every stage's output to its end:
 * GiBs at 256x256, and more memory to fault in.
 */
function advance(h: tf.Tensor4D, f: (h: tf.Tensor4D) => tf.Tensor4D): tf.Tensor4D {
  const next = tf.tidy(() => f(h));
  h.dispose();
  return next;
}
