// Native Conv2D and FusedConv2D for the cpu backend: NHWC input, HWIO filter, float32,
// dilation 1, any strides and padding ('same', 'valid', explicit). The convolution is an im2col
// of tiles of output pixels plus the packed GEMM (src/conv.cc); bias and activation are applied
// natively with tfjs' own formulas. Everything else (NCHW, dilations, other dtypes, biases that
// are not one value per output channel) goes to tfjs' kernel. Also the nearest-neighbour
// upsampling that precedes the VQGAN decoder's convs.
import * as tf from '@tensorflow/tfjs';
import type { NativeAddon } from './addon.js';
import { ACT } from './gemmKernels.js';
import { cpuTensor, cpuValues, defineNativeKernel } from './registry.js';

/** The convolution (and the upsampling before some) of the addon (src/conv_napi.cc). */
export interface ConvAddon {
  /**
   * x NHWC [n, h, w, cin], filter HWIO [kh, kw, cin, cout] -> [n, oh, ow, cout], padT/padL
   * zero rows/columns before the input; bias and prelu weights hold cout values.
   */
  conv2d(
    x: Float32Array, filter: Float32Array, n: number, h: number, w: number, cin: number,
    kh: number, kw: number, cout: number, sh: number, sw: number, padT: number, padL: number, oh: number, ow: number,
    bias?: Float32Array | null, act?: number, leakyAlpha?: number, prelu?: Float32Array | null,
  ): Float32Array;
  /** x NHWC [n, h, w, c] -> [n, h * fh, w * fw, c], each pixel repeated in an fh x fw block. */
  upsampleNearest(x: Float32Array, n: number, h: number, w: number, c: number, fh: number, fw: number): Float32Array;
}

export function convAddon(addon: NativeAddon): ConvAddon | null {
  const c = addon as unknown as Partial<ConvAddon>;
  return typeof c.conv2d === 'function' ? (c as ConvAddon) : null;
}

interface ConvAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  dataFormat?: 'NHWC' | 'NCHW';
  dilations?: number | [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

function f32(backend: unknown, t: tf.TensorInfo): Float32Array | null {
  const v = cpuValues(backend, t);
  return v instanceof Float32Array ? v : null;
}

/** The convolution's geometry, or null for what tfjs' kernel should handle. */
function convInfo(x: tf.TensorInfo, filter: tf.TensorInfo, attrs: ConvAttrs): tf.backend_util.Conv2DInfo | null {
  if (x.dtype !== 'float32' || filter.dtype !== 'float32') return null;
  if (x.shape.length !== 4 || filter.shape.length !== 4) return null;
  if ((attrs.dataFormat ?? 'NHWC') !== 'NHWC') return null;
  const d = attrs.dilations ?? 1;
  if (!(d === 1 || (Array.isArray(d) && d[0] === 1 && d[1] === 1))) return null;
  let info: tf.backend_util.Conv2DInfo;
  try {
    info = tf.backend_util.computeConv2DInfo(
      x.shape as [number, number, number, number], filter.shape as [number, number, number, number],
      attrs.strides, attrs.dilations ?? 1, attrs.pad, attrs.dimRoundingMode, false, 'channelsLast',
    );
  } catch {
    return null; // tfjs' kernel raises its own error
  }
  if (info.dilationHeight !== 1 || info.dilationWidth !== 1 || info.strideHeight < 1 || info.strideWidth < 1) return null;
  if (info.inChannels !== filter.shape[2]) return null;
  return info;
}

/** A per-output-channel operand (bias, prelu weights): all dims 1 but a last of cout. */
function perChannel(backend: unknown, t: tf.TensorInfo | undefined, cout: number): Float32Array | null {
  if (!t || t.dtype !== 'float32' || t.shape.length > 4) return null;
  const s = t.shape;
  if (s.length === 0 || s[s.length - 1] !== cout || s.slice(0, -1).some((v) => v !== 1)) return null;
  return f32(backend, t);
}

function run(
  c: ConvAddon, backend: unknown, info: tf.backend_util.Conv2DInfo, xv: Float32Array, fv: Float32Array,
  bias: Float32Array | null = null, act = 0, leakyAlpha = 0.2, prelu: Float32Array | null = null,
): tf.TensorInfo {
  const out = c.conv2d(
    xv, fv, info.batchSize, info.inHeight, info.inWidth, info.inChannels,
    info.filterHeight, info.filterWidth, info.outChannels, info.strideHeight, info.strideWidth,
    info.padInfo.top, info.padInfo.left, info.outHeight, info.outWidth, bias, act, leakyAlpha, prelu,
  );
  return cpuTensor(backend, [info.batchSize, info.outHeight, info.outWidth, info.outChannels], out);
}

defineNativeKernel({
  kernelName: tf.Conv2D,
  make(addon, original) {
    const c = convAddon(addon);
    if (!c || !original) return null;
    return (args) => {
      const { x, filter } = args.inputs as { x: tf.TensorInfo; filter: tf.TensorInfo };
      const info = convInfo(x, filter, args.attrs as unknown as ConvAttrs);
      const xv = info && f32(args.backend, x);
      const fv = info && f32(args.backend, filter);
      if (!info || !xv || !fv) return original(args);
      return run(c, args.backend, info, xv, fv);
    };
  },
});

defineNativeKernel({
  kernelName: tf.FusedConv2D,
  make(addon, original) {
    const c = convAddon(addon);
    if (!c || !original) return null;
    return (args) => {
      const { x, filter, bias, preluActivationWeights: prelu } = args.inputs as Record<string, tf.TensorInfo | undefined>;
      const attrs = args.attrs as unknown as ConvAttrs & { activation?: string; leakyreluAlpha?: number };
      if (!x || !filter) return original(args);
      const info = convInfo(x, filter, attrs);
      const act = ACT[attrs.activation ?? 'linear'];
      const xv = info && f32(args.backend, x);
      const fv = info && f32(args.backend, filter);
      if (!info || !xv || !fv || act === undefined) return original(args);
      const bv = bias ? perChannel(args.backend, bias, info.outChannels) : null;
      const pv = attrs.activation === 'prelu' ? perChannel(args.backend, prelu, info.outChannels) : null;
      if ((bias && !bv) || (attrs.activation === 'prelu' && !pv)) return original(args);
      return run(c, args.backend, info, xv, fv, bv, act, attrs.leakyreluAlpha ?? 0.2, pv);
    };
  },
});

// tf.image.resizeNearestNeighbor by a power-of-two factor (the VQGAN decoder's Upsample): tfjs
// reads source row floor(r * in / out), which is exactly r / factor when the ratio is a power of
// two. Other sizes, alignCorners and halfPixelCenters go to tfjs' kernel.
defineNativeKernel({
  kernelName: tf.ResizeNearestNeighbor,
  make(addon, original) {
    const up = convAddon(addon)?.upsampleNearest;
    if (typeof up !== 'function' || !original) return null;
    return (args) => {
      const { images } = args.inputs as { images: tf.TensorInfo };
      const { alignCorners, halfPixelCenters, size } = args.attrs as unknown as { alignCorners: boolean; halfPixelCenters: boolean; size: [number, number] };
      if (alignCorners || halfPixelCenters || images.shape.length !== 4) return original(args);
      const [n, h, w, ch] = images.shape as [number, number, number, number];
      const [fh, fw] = [size[0] / h, size[1] / w];
      const xv = f32(args.backend, images);
      if (!powerOfTwo(fh) || !powerOfTwo(fw) || !xv) return original(args);
      return cpuTensor(args.backend, [n, size[0], size[1], ch], up(xv, n, h, w, ch, fh, fw));
    };
  },
});

function powerOfTwo(v: number): boolean {
  return Number.isInteger(v) && v >= 1 && (v & (v - 1)) === 0;
}
