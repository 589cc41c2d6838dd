// RingAttention as a differentiable tfjs op. The sequence is split over the ranks of a group;
// each rank keeps its queries while key/value blocks travel around the ring (spec sections 1-5).
// With no group (or a group of one) this is blockwise attention on one process.
import * as tf from '@tensorflow/tfjs';
import { InputError } from './errors.js';
import { builtNativeBlockKernel, defaultBlockKernel, tfjsBlockKernel, type BlockKernel, type TokenMeta } from './ring/blockKernels.js';
import { ringBackward, ringForward, type RingProblem } from './ring/core.js';
import { runOnGroup, SoloGroup } from './ring/drive.js';
import { checkLayout, layoutIndices, type RingLayout } from './ring/layout.js';
import type { RingGroup } from './ring/types.js';

export interface BlockwiseAttentionOptions {
  /** Key t is visible to query r only if position[t] <= position[r]. Default true. */
  causal?: boolean;
  /** int32 [B, T]: packed documents attend only within their own segment. */
  segmentIds?: tf.Tensor2D | Int32Array;
  /** [B, T], > 0 for real tokens, 0 for padding keys (never attended). */
  keyMask?: tf.Tensor2D | Int32Array;
  /** int32 [T] or [B, T]: global positions of this rank's tokens. Default: from the layout. */
  positions?: tf.Tensor1D | tf.Tensor2D | Int32Array;
  /** Inner query/key chunk length; 0 = whole blocks (the native kernel tiles them itself). */
  blockSize?: number;
  /** Default 1/sqrt(headDim). */
  scale?: number;
  /** 'native' (needs the addon), 'tfjs', or the default: native when enabled, else tfjs. */
  kernel?: 'native' | 'tfjs';
}

export interface RingAttentionOptions extends BlockwiseAttentionOptions {
  /** The ring; default a group of one (blockwise attention). */
  group?: RingGroup;
  /** How the global sequence is split, which fixes the default positions. Default 'contiguous'. */
  layout?: RingLayout;
}

/** Default inner chunk for the tfjs path: bounds its [G*c, c] score tiles. */
const TFJS_BLOCK = 512;

function pickKernel(name: BlockwiseAttentionOptions['kernel']): BlockKernel {
  if (name === 'tfjs') return tfjsBlockKernel;
  if (name === 'native') {
    const native = builtNativeBlockKernel();
    if (!native) throw new InputError("ring attention: kernel 'native' needs the native addon; build it with `npm run build:native`");
    return native;
  }
  return defaultBlockKernel();
}

/** Int32 [B * T] of a [B, T] (or shared [T]) tensor or array; `flags` maps values to 1 where > 0. */
function ints(name: string, x: tf.Tensor | Int32Array | undefined, b: number, t: number, allowShared: boolean, flags = false): Int32Array | null {
  if (x === undefined) return null;
  const shape = x instanceof Int32Array ? [x.length] : x.shape;
  const n = shape.reduce((a, c) => a * c, 1);
  const shared = allowShared && n === t && shape.length <= 1;
  if (!shared && (n !== b * t || (!(x instanceof Int32Array) && (shape.length !== 2 || shape[0] !== b)))) {
    throw new InputError(`ring attention: ${name} has shape [${shape}], expected [${b}, ${t}]${allowShared ? ` or [${t}]` : ''}`);
  }
  const raw = x instanceof Int32Array ? x : x.dataSync();
  const vals = flags ? Int32Array.from(raw as ArrayLike<number>, (y) => (y > 0 ? 1 : 0)) : x instanceof Int32Array ? x : Int32Array.from(raw as ArrayLike<number>);
  if (!shared) return vals;
  const out = new Int32Array(b * t);
  for (let i = 0; i < b; i++) out.set(vals, i * t);
  return out;
}

/** Everything but q, k, v of one rank's ring problem, validated. */
function problemOf(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: RingAttentionOptions, group: RingGroup): Omit<RingProblem, 'q' | 'k' | 'v' | 'call'> {
  const [b, t, h, d] = q.shape;
  const [bk, tk, hkv, dk] = k.shape;
  for (const [name, x] of [['q', q], ['k', k], ['v', v]] as const) {
    if (x.dtype !== 'float32') throw new InputError(`ring attention: ${name} is ${x.dtype}; cast it to float32`);
    if (x.rank !== 4) throw new InputError(`ring attention: ${name} has rank ${x.rank}, expected [batch, seq, heads, headDim]`);
  }
  if (bk !== b || tk !== t || dk !== d || v.shape.join() !== k.shape.join() || h % hkv !== 0) {
    throw new InputError(`ring attention: q [${q.shape}], k [${k.shape}], v [${v.shape}] do not agree; expected q [B,T,H,D] and k, v [B,T,Hkv,D] with H a multiple of Hkv`);
  }
  const layout = checkLayout(opts.layout ?? 'contiguous');
  const blockSize = opts.blockSize ?? 0;
  if (!Number.isInteger(blockSize) || blockSize < 0) throw new InputError(`ring attention: blockSize ${blockSize} must be a whole number >= 0`);
  const kernel = pickKernel(opts.kernel);
  const positions = opts.positions === undefined ? layoutIndices(t * group.size, group.size, group.rank, layout) : opts.positions;
  const meta: TokenMeta = {
    pos: ints('positions', positions, b, t, true)!,
    seg: ints('segmentIds', opts.segmentIds, b, t, false),
    valid: ints('keyMask', opts.keyMask, b, t, false, true),
  };
  return {
    rank: group.rank,
    size: group.size,
    dims: { b, h, hkv, d },
    t,
    meta,
    causal: opts.causal ?? true,
    scale: opts.scale ?? 1 / Math.sqrt(d),
    blockSize: blockSize === 0 && kernel.name === 'tfjs' ? TFJS_BLOCK : blockSize,
    kernel,
  };
}

/** The custom-gradient op; with `withLse` its one output packs o and lse (customGrad takes one tensor). */
function ringOp(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: RingAttentionOptions, withLse: boolean): tf.Tensor {
  const group = opts.group ?? new SoloGroup();
  const base = problemOf(q, k, v, opts, group);
  const { b, h, d } = base.dims;
  const nOut = b * base.t * h * d;
  const nLse = b * h * base.t;
  const op = tf.customGrad((qi, ki, vi) => {
    const p: RingProblem = {
      ...base,
      call: group.nextCall(),
      q: (qi as tf.Tensor).dataSync() as Float32Array,
      k: (ki as tf.Tensor).dataSync() as Float32Array,
      v: (vi as tf.Tensor).dataSync() as Float32Array,
    };
    const { o, lse } = runOnGroup(ringForward(p), group);
    let value: tf.Tensor;
    if (withLse) {
      const both = new Float32Array(nOut + nLse);
      both.set(o);
      both.set(lse, nOut);
      value = tf.tensor1d(both);
    } else {
      value = tf.tensor(o, q.shape);
    }
    return {
      value,
      gradFunc: (dy: tf.Tensor) => {
        const dys = dy.dataSync() as Float32Array;
        const saved = withLse ? { o, lse, dO: dys.subarray(0, nOut), dLse: dys.subarray(nOut) } : { o, lse, dO: dys, dLse: null };
        const g = runOnGroup(ringBackward(p, saved), group);
        return [tf.tensor(g.dq, q.shape), tf.tensor(g.dk, k.shape), tf.tensor(g.dv, v.shape)];
      },
    };
  });
  return op(q, k, v);
}

/**
 * Ring attention returning the output [B, T, H, D] and the log-sum-exp [B, H, T] (natural log,
 * -Infinity for a query that sees no key; its output is 0). Differentiable in q, k, v through
 * both outputs; the backward pass runs the ring again (dK/dV travel home with their blocks).
 * Every rank of `group` must call this in the same order with the same shapes.
 */
export function ringAttentionWithLse(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: RingAttentionOptions = {}): { out: tf.Tensor4D; lse: tf.Tensor3D } {
  return tf.tidy(() => {
    const all = ringOp(q, k, v, opts, true);
    const [b, t, h, d] = q.shape;
    return {
      out: tf.reshape(tf.slice(all, 0, b * t * h * d), q.shape) as tf.Tensor4D,
      lse: tf.reshape(tf.slice(all, b * t * h * d, b * h * t), [b, h, t]) as tf.Tensor3D,
    };
  });
}

/** Ring attention: this rank's output [B, T, H, D]. See ringAttentionWithLse. */
export function ringAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: RingAttentionOptions = {}): tf.Tensor4D {
  return ringOp(q, k, v, opts, false) as tf.Tensor4D;
}

/**
 * Blockwise attention on one process: online softmax over key blocks, never the full score
 * matrix, with its own gradient. q: [B, T, H, D]; k, v: [B, T, Hkv, D].
 */
export function blockwiseAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: BlockwiseAttentionOptions = {}): tf.Tensor4D {
  return ringAttention(q, k, v, { ...opts, group: undefined, layout: 'contiguous' });
}

export function blockwiseAttentionWithLse(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: BlockwiseAttentionOptions = {}): { out: tf.Tensor4D; lse: tf.Tensor3D } {
  return ringAttentionWithLse(q, k, v, { ...opts, group: undefined, layout: 'contiguous' });
}
