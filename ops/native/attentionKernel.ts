// Fused blockwise attention as tfjs `cpu` kernels: LwmFusedAttention (outputs O and LSE) and
// LwmFusedAttentionGrad, plus the gradient config that joins them. The addon reads the
// [B, T, H, D] tensors in place and returns its outputs in native memory (src/attention.h).
import * as tf from '@tensorflow/tfjs';
import { InputError } from '../errors.js';
import type { NativeAddon } from './addon.js';
import { cpuTensor, cpuValues, defineNativeKernel, isNativeKernelActive } from './registry.js';

export const FUSED_ATTENTION = 'LwmFusedAttention';
export const FUSED_ATTENTION_GRAD = 'LwmFusedAttentionGrad';

/** [B, Tq, Tk, H, Hkv, D] */
export type AttentionShape = [number, number, number, number, number, number];

/** Masks, positions and merge flags of one native call; see src/attention.h for the semantics. */
export interface NativeAttentionOptions {
  /** Default true: key j is visible to query i iff kPos[j] <= qPos[i]. */
  causal?: boolean;
  /** Default 1/sqrt(D). */
  scale?: number;
  /** qPos[i] = queryOffset + i when qPos is absent; default Tk - Tq. */
  queryOffset?: number;
  /** Absolute positions, [Tq] / [Tk] (shared by the batch) or [B, Tq] / [B, Tk]; kPos defaults to j. */
  qPos?: Int32Array | null;
  kPos?: Int32Array | null;
  /** [B, Tk], > 0 where a key may be attended. */
  keyMask?: Float32Array | Int32Array | Uint8Array | null;
  /** [B, Tq] and [B, Tk]: attend only within the same segment (both or neither). */
  qSeg?: Int32Array | null;
  kSeg?: Int32Array | null;
  /** Forward: merge into the given (o, lse) by log-sum-exp (one ring step). */
  accumulate?: boolean;
  /** Backward: add into the given dq / dk and dv instead of overwriting them. */
  accumulateDq?: boolean;
  accumulateDkv?: boolean;
}

/** The attention functions of the addon (src/attention_napi.cc). Null outputs are allocated. */
export interface AttentionAddon {
  attentionForward(
    q: Float32Array, k: Float32Array, v: Float32Array, o: Float32Array | null, lse: Float32Array | null,
    shape: AttentionShape, opts: NativeAttentionOptions,
  ): [Float32Array, Float32Array];
  attentionBackward(
    q: Float32Array, k: Float32Array, v: Float32Array, o: Float32Array, dO: Float32Array, lse: Float32Array,
    dLse: Float32Array | null, dq: Float32Array | null, dk: Float32Array | null, dv: Float32Array | null,
    shape: AttentionShape, opts: NativeAttentionOptions,
  ): [Float32Array, Float32Array, Float32Array];
}

export function attentionAddon(addon: NativeAddon): AttentionAddon | null {
  const a = addon as unknown as Partial<AttentionAddon>;
  return typeof a.attentionForward === 'function' && typeof a.attentionBackward === 'function' ? (a as AttentionAddon) : null;
}

export interface FusedAttentionOptions {
  /** Default true. */
  causal?: boolean;
  /** Default 1/sqrt(D). */
  scale?: number;
  /** Position of the first query among the keys (KV-cache length before this step). Default Tk - Tq. */
  queryOffset?: number;
  /** [B, Tk], > 0 where a key may be attended. */
  keyMask?: tf.Tensor2D;
  /** [B, Tq] segment ids (cast to int32): packed documents attend only within their segment. */
  segmentIds?: tf.Tensor2D;
  /** [B, Tk]; defaults to segmentIds when Tq == Tk. */
  kvSegmentIds?: tf.Tensor2D;
  /** int32 absolute positions for the causal test, [Tq] or [B, Tq] (e.g. a striped ring layout). */
  queryPositions?: tf.Tensor1D | tf.Tensor2D;
  /** int32 [Tk] or [B, Tk]; default 0..Tk-1. */
  keyPositions?: tf.Tensor1D | tf.Tensor2D;
}

/** Attributes of LwmFusedAttention(Grad). Absent masks are small placeholder inputs plus a false flag. */
interface Attrs {
  causal: boolean;
  scale: number;
  queryOffset: number;
  hasKeyMask: boolean;
  hasSegments: boolean;
  hasQueryPositions: boolean;
  hasKeyPositions: boolean;
}

const MASK_INPUTS = ['keyMask', 'qSeg', 'kSeg', 'qPos', 'kPos'] as const;

/**
 * Attention through the native kernel, recorded on the tfjs tape (differentiable in q, k, v and,
 * through `lse`, in the log-sum-exp too). q: [B, Tq, H, D]; k, v: [B, Tk, Hkv, D]. Returns
 * out [B, Tq, H, D] and lse [B, H, Tq] (natural log; -Infinity for a query that sees no key,
 * whose output is 0). Needs enableNativeKernels() with the addon built; attention() falls back
 * to plain tfjs by itself.
 */
export function fusedAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: FusedAttentionOptions = {}): { out: tf.Tensor4D; lse: tf.Tensor3D } {
  if (!isNativeKernelActive(FUSED_ATTENTION)) {
    throw new InputError('fusedAttention: the native kernel is not active; build it with `npm run build:native` and call enableNativeKernels() on the cpu backend, or use attention()');
  }
  const [b, tq, h, d] = q.shape;
  const [, tk, hkv] = k.shape;
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) {
    if (t.dtype !== 'float32') throw new InputError(`fusedAttention: ${name} is ${t.dtype}; cast it to float32`);
  }
  if (k.shape[0] !== b || k.shape[3] !== d || v.shape.join() !== k.shape.join() || h % hkv !== 0) {
    throw new InputError(`fusedAttention: q [${q.shape}], k [${k.shape}], v [${v.shape}] do not agree; expected q [B,Tq,H,D], k and v [B,Tk,Hkv,D] with H a multiple of Hkv`);
  }
  const kvSeg = opts.kvSegmentIds ?? (opts.segmentIds && tq === tk ? opts.segmentIds : undefined);
  if (opts.segmentIds && !kvSeg) throw new InputError('fusedAttention: segmentIds given with Tq != Tk; pass kvSegmentIds for the keys too');
  expectShape('keyMask', opts.keyMask, [[b, tk]]);
  expectShape('segmentIds', opts.segmentIds, [[b, tq]]);
  expectShape('kvSegmentIds', opts.segmentIds ? kvSeg : undefined, [[b, tk]]);
  expectShape('queryPositions', opts.queryPositions, [[tq], [b, tq]]);
  expectShape('keyPositions', opts.keyPositions, [[tk], [b, tk]]);

  return tf.tidy(() => {
    const placeholder = tf.zeros([1], 'int32');
    const int32 = (t: tf.Tensor | undefined) => (t ? (t.dtype === 'int32' ? t : tf.cast(t, 'int32')) : placeholder);
    const inputs = {
      q, k, v,
      keyMask: opts.keyMask ?? placeholder,
      qSeg: int32(opts.segmentIds),
      kSeg: int32(opts.segmentIds ? kvSeg : undefined),
      qPos: int32(opts.queryPositions),
      kPos: int32(opts.keyPositions),
    };
    const attrs: Attrs = {
      causal: opts.causal ?? true,
      scale: opts.scale ?? 1 / Math.sqrt(d),
      queryOffset: opts.queryOffset ?? tk - tq,
      hasKeyMask: opts.keyMask !== undefined,
      hasSegments: opts.segmentIds !== undefined,
      hasQueryPositions: opts.queryPositions !== undefined,
      hasKeyPositions: opts.keyPositions !== undefined,
    };
    const [out, lse] = tf.engine().runKernel(FUSED_ATTENTION, inputs as unknown as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
    return { out: out as tf.Tensor4D, lse: lse as tf.Tensor3D };
  });
}

function expectShape(name: string, t: tf.Tensor | undefined, allowed: number[][]): void {
  if (!t || allowed.some((s) => s.join() === t.shape.join())) return;
  throw new InputError(`fusedAttention: ${name} has shape [${t.shape}], expected ${allowed.map((s) => `[${s}]`).join(' or ')}`);
}

type Inputs = Record<string, tf.TensorInfo>;

function shapeOf(q: tf.TensorInfo, k: tf.TensorInfo): AttentionShape {
  const [b, tq, h, d] = q.shape as number[];
  const [, tk, hkv] = k.shape as number[];
  return [b!, tq!, tk!, h!, hkv!, d!];
}

function f32(backend: tf.KernelBackend, t: tf.TensorInfo): Float32Array {
  return cpuValues(backend, t) as Float32Array;
}

function nativeOptions(backend: tf.KernelBackend, t: Inputs, a: Attrs): NativeAttentionOptions {
  const ints = (name: string, on: boolean) => (on ? (cpuValues(backend, t[name]!) as Int32Array) : null);
  return {
    causal: a.causal,
    scale: a.scale,
    queryOffset: a.queryOffset,
    keyMask: a.hasKeyMask ? (cpuValues(backend, t['keyMask']!) as Float32Array | Int32Array) : null,
    qSeg: ints('qSeg', a.hasSegments),
    kSeg: ints('kSeg', a.hasSegments),
    qPos: ints('qPos', a.hasQueryPositions),
    kPos: ints('kPos', a.hasKeyPositions),
  };
}

function forwardKernel(att: AttentionAddon): tf.KernelFunc {
  return ({ inputs, backend: be, attrs }) => {
    const backend = be as tf.KernelBackend;
    const t = inputs as unknown as Inputs;
    const shape = shapeOf(t['q']!, t['k']!);
    const opts = nativeOptions(backend, t, attrs as unknown as Attrs);
    const [o, lse] = att.attentionForward(f32(backend, t['q']!), f32(backend, t['k']!), f32(backend, t['v']!), null, null, shape, opts);
    return [cpuTensor(backend, t['q']!.shape, o), cpuTensor(backend, [shape[0], shape[3], shape[1]], lse)];
  };
}

function backwardKernel(att: AttentionAddon): tf.KernelFunc {
  return ({ inputs, backend: be, attrs }) => {
    const backend = be as tf.KernelBackend;
    const t = inputs as unknown as Inputs;
    const shape = shapeOf(t['q']!, t['k']!);
    const opts = nativeOptions(backend, t, attrs as unknown as Attrs);
    const val = (name: string) => f32(backend, t[name]!);
    const [dq, dk, dv] = att.attentionBackward(val('q'), val('k'), val('v'), val('o'), val('dO'), val('lse'), val('dLse'), null, null, null, shape, opts);
    return [cpuTensor(backend, t['q']!.shape, dq), cpuTensor(backend, t['k']!.shape, dk), cpuTensor(backend, t['v']!.shape, dv)];
  };
}

defineNativeKernel({
  kernelName: FUSED_ATTENTION,
  make: (addon) => {
    const att = attentionAddon(addon);
    return att ? forwardKernel(att) : null;
  },
  gradient: {
    kernelName: FUSED_ATTENTION,
    inputsToSave: ['q', 'k', 'v', ...MASK_INPUTS],
    outputsToSave: [true, true],
    gradFunc: (dy, saved, attrs) => {
      // dy holds zeros for an output that is not on the backprop path (the usual unused lse).
      const [dO, dLse] = dy as tf.Tensor[];
      const [q, k, v, keyMask, qSeg, kSeg, qPos, kPos, o, lse] = saved as tf.Tensor[];
      const [dq, dk, dv] = tf.engine().runKernel(
        FUSED_ATTENTION_GRAD,
        { q, k, v, o, dO, lse, dLse, keyMask, qSeg, kSeg, qPos, kPos } as unknown as tf.NamedTensorMap,
        attrs as tf.NamedAttrMap,
      ) as tf.Tensor[];
      // Masks and positions are not differentiable; tfjs wants a float32 gradient of each shape.
      const none = (x: tf.Tensor | undefined) => () => tf.zeros(x!.shape, 'float32');
      return { q: () => dq!, k: () => dk!, v: () => dv!, keyMask: none(keyMask), qSeg: none(qSeg), kSeg: none(kSeg), qPos: none(qPos), kPos: none(kPos) };
    },
  },
});

defineNativeKernel({
  kernelName: FUSED_ATTENTION_GRAD,
  make: (addon) => {
    const att = attentionAddon(addon);
    return att ? backwardKernel(att) : null;
  },
});
