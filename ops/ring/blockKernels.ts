// One (query block x key block) step of ring attention on plain arrays, forward (merge into the
// running output and log-sum-exp) and backward (add into the gradient accumulators). Arrays, not
// tensors, because blocks arrive from other processes as bytes; the native kernel reads them in
// place, the tfjs fallback wraps them for one step.
import * as tf from '@tensorflow/tfjs';
import { loadAddon } from '../native/addon.js';
import { attentionAddon, FUSED_ATTENTION, type AttentionAddon, type NativeAttentionOptions } from '../native/attentionKernel.js';
import { isNativeKernelActive } from '../native/registry.js';

export interface RingDims {
  b: number;
  h: number;
  hkv: number;
  d: number;
}

/** Per-token metadata, each [B * T]: global position, segment id, key validity (> 0 = real token). */
export interface TokenMeta {
  pos: Int32Array;
  seg: Int32Array | null;
  valid: Int32Array | null;
}

export interface BlockArgs {
  dims: RingDims;
  tq: number;
  tk: number;
  /** [B, Tq, H, D] */
  q: Float32Array;
  qMeta: TokenMeta;
  /** [B, Tk, Hkv, D] */
  k: Float32Array;
  v: Float32Array;
  kMeta: TokenMeta;
  causal: boolean;
  scale: number;
}

export interface BlockKernel {
  readonly name: 'native' | 'tfjs';
  /** Merges the block's keys into o [B, Tq, H, D] and lse [B, H, Tq] (start: 0 and -Infinity). */
  forward(a: BlockArgs, o: Float32Array, lse: Float32Array): void;
  /** Adds this block's share of dq [B, Tq, H, D], dk and dv [B, Tk, Hkv, D]; o and lse are the final ones. */
  backward(a: BlockArgs, o: Float32Array, dO: Float32Array, lse: Float32Array, dLse: Float32Array | null, dq: Float32Array, dk: Float32Array, dv: Float32Array): void;
}

/** The native block kernel when the addon is built (enabled or not), else null. */
export function builtNativeBlockKernel(): BlockKernel | null {
  const addon = loadAddon();
  const att = addon ? attentionAddon(addon) : null;
  return att ? nativeBlockKernel(att) : null;
}

/** The native kernel when it is built and enabled, else tfjs ops on the active backend. */
export function defaultBlockKernel(): BlockKernel {
  return (isNativeKernelActive(FUSED_ATTENTION) ? builtNativeBlockKernel() : null) ?? tfjsBlockKernel;
}

function nativeOptions(a: BlockArgs): NativeAttentionOptions {
  const segs = a.qMeta.seg !== null && a.kMeta.seg !== null;
  return {
    causal: a.causal,
    scale: a.scale,
    qPos: a.qMeta.pos,
    kPos: a.kMeta.pos,
    qSeg: segs ? a.qMeta.seg : null,
    kSeg: segs ? a.kMeta.seg : null,
    keyMask: a.kMeta.valid,
  };
}

export function nativeBlockKernel(att: AttentionAddon): BlockKernel {
  const shapeOf = (a: BlockArgs) => [a.dims.b, a.tq, a.tk, a.dims.h, a.dims.hkv, a.dims.d] as [number, number, number, number, number, number];
  return {
    name: 'native',
    forward(a, o, lse) {
      att.attentionForward(a.q, a.k, a.v, o, lse, shapeOf(a), { ...nativeOptions(a), accumulate: true });
    },
    backward(a, o, dO, lse, dLse, dq, dk, dv) {
      att.attentionBackward(a.q, a.k, a.v, o, dO, lse, dLse, dq, dk, dv, shapeOf(a), { ...nativeOptions(a), accumulateDq: true, accumulateDkv: true });
    },
  };
}

/** Visibility [B, Tq, Tk] of one block pair, the same rule as the native kernel. */
function visibleMask(a: BlockArgs): Uint8Array {
  const { b } = a.dims;
  const out = new Uint8Array(b * a.tq * a.tk);
  const segs = a.qMeta.seg !== null && a.kMeta.seg !== null;
  for (let bi = 0; bi < b; bi++) {
    for (let i = 0; i < a.tq; i++) {
      const qi = bi * a.tq + i;
      const base = qi * a.tk;
      for (let j = 0; j < a.tk; j++) {
        const kj = bi * a.tk + j;
        if (a.kMeta.valid && !(a.kMeta.valid[kj]! > 0)) continue;
        if (a.causal && a.kMeta.pos[kj]! > a.qMeta.pos[qi]!) continue;
        if (segs && a.kMeta.seg![kj] !== a.qMeta.seg![qi]) continue;
        out[base + j] = 1;
      }
    }
  }
  return out;
}

/** Queries grouped under their kv head: [B, Tq, H, D] -> [B, Hkv, G * Tq, D]. */
function grouped(x: tf.Tensor, b: number, t: number, h: number, hkv: number, d: number): tf.Tensor4D {
  return tf.reshape(tf.transpose(tf.reshape(x, [b, t, h, d]), [0, 2, 1, 3]), [b, hkv, (h / hkv) * t, d]);
}

function ungrouped(x: tf.Tensor, b: number, t: number, h: number, d: number): tf.Tensor {
  return tf.transpose(tf.reshape(x, [b, h, t, d]), [0, 2, 1, 3]);
}

function addInto(dst: Float32Array, t: tf.Tensor): void {
  const src = t.dataSync() as Float32Array;
  for (let i = 0; i < dst.length; i++) dst[i]! += src[i]!;
}

/** Scores and masks of one block pair, shared by forward and backward. Call inside tf.tidy. */
function scores(a: BlockArgs) {
  const { b, h, hkv, d } = a.dims;
  const g = h / hkv;
  const qg = grouped(tf.tensor(a.q), b, a.tq, h, hkv, d);
  const kT = tf.transpose(tf.tensor4d(a.k, [b, a.tk, hkv, d]), [0, 2, 1, 3]);
  const vT = tf.transpose(tf.tensor4d(a.v, [b, a.tk, hkv, d]), [0, 2, 1, 3]);
  const s = tf.reshape(tf.mul(tf.matMul(qg, kT, false, true), a.scale), [b, hkv, g, a.tq, a.tk]);
  const mask = tf.reshape(tf.tensor(visibleMask(a), [b, a.tq, a.tk], 'bool'), [b, 1, 1, a.tq, a.tk]);
  return { g, qg, kT, vT, s, mask };
}

export const tfjsBlockKernel: BlockKernel = {
  name: 'tfjs',
  forward(a, o, lse) {
    const { b, h, hkv, d } = a.dims;
    const [ob, lb] = tf.tidy(() => {
      const { g, vT, s, mask } = scores(a);
      const masked = tf.where(mask, s, tf.fill(s.shape, -Infinity));
      const m = tf.max(masked, -1, true);
      const seen = tf.isFinite(m);
      const mSafe = tf.where(seen, m, tf.zerosLike(m));
      const p = tf.exp(tf.sub(masked, mSafe));
      const l = tf.sum(p, -1, true);
      const pv = tf.matMul(tf.reshape(p, [b, hkv, g * a.tq, a.tk]), vT);
      const oBlock = tf.div(pv, tf.reshape(tf.where(seen, l, tf.onesLike(l)), [b, hkv, g * a.tq, 1]));
      const lBlock = tf.where(seen, tf.add(tf.log(l), mSafe), tf.fill(m.shape, -Infinity));
      return [ungrouped(oBlock, b, a.tq, h, d), tf.reshape(lBlock, [b, h, a.tq])];
    });
    mergePartial(o, lse, ob!.dataSync() as Float32Array, lb!.dataSync() as Float32Array, b, a.tq, h, d);
    tf.dispose([ob!, lb!]);
  },
  backward(a, o, dO, lse, dLse, dq, dk, dv) {
    const { b, h, hkv, d } = a.dims;
    // D = rowsum(dO * O) - dLse, in [B, H, Tq] like lse.
    const drow = new Float32Array(b * h * a.tq);
    for (let bi = 0; bi < b; bi++) {
      for (let i = 0; i < a.tq; i++) {
        for (let hh = 0; hh < h; hh++) {
          const off = ((bi * a.tq + i) * h + hh) * d;
          const idx = (bi * h + hh) * a.tq + i;
          let acc = 0;
          for (let x = 0; x < d; x++) acc += dO[off + x]! * o[off + x]!;
          drow[idx] = acc - (dLse && lse[idx]! > -Infinity ? dLse[idx]! : 0);
        }
      }
    }
    const grads = tf.tidy(() => {
      const { g, qg, kT, vT, s, mask } = scores(a);
      const L = tf.reshape(tf.tensor(lse), [b, hkv, g, a.tq, 1]);
      const live = tf.logicalAnd(mask, tf.isFinite(L));
      // P = exp(s - L) where visible; L already is the global normaliser, so no renormalising.
      const p = tf.where(live, tf.exp(tf.sub(s, tf.where(tf.isFinite(L), L, tf.zerosLike(L)))), tf.zerosLike(s));
      const pg = tf.reshape(p, [b, hkv, g * a.tq, a.tk]);
      const dOg = grouped(tf.tensor(dO), b, a.tq, h, hkv, d);
      const dVb = tf.matMul(pg, dOg, true, false);
      const dP = tf.matMul(dOg, vT, false, true);
      const dS = tf.mul(pg, tf.sub(dP, tf.reshape(tf.tensor(drow), [b, hkv, g * a.tq, 1])));
      const dQb = tf.mul(tf.matMul(dS, kT), a.scale);
      const dKb = tf.mul(tf.matMul(dS, qg, true, false), a.scale);
      return [ungrouped(dQb, b, a.tq, h, d), tf.transpose(dKb, [0, 2, 1, 3]), tf.transpose(dVb, [0, 2, 1, 3])];
    });
    addInto(dq, grads[0]!);
    addInto(dk, grads[1]!);
    addInto(dv, grads[2]!);
    tf.dispose(grads);
  },
};

/**
 * Folds a normalised partial (ob, lb) into (o, lse) in max-shifted log-sum-exp form, which
 * cannot overflow exp (spec pitfall 1); an empty partial (lb = -inf) is the identity.
 */
export function mergePartial(o: Float32Array, lse: Float32Array, ob: Float32Array, lb: Float32Array, b: number, t: number, h: number, d: number): void {
  for (let bi = 0; bi < b; bi++) {
    for (let hh = 0; hh < h; hh++) {
      for (let i = 0; i < t; i++) {
        const idx = (bi * h + hh) * t + i;
        const la = lse[idx]!;
        const lbv = lb[idx]!;
        if (!(lbv > -Infinity)) continue;
        const off = ((bi * t + i) * h + hh) * d;
        if (!(la > -Infinity)) {
          for (let x = 0; x < d; x++) o[off + x] = ob[off + x]!;
          lse[idx] = lbv;
          continue;
        }
        const merged = Math.max(la, lbv) + Math.log1p(Math.exp(-Math.abs(la - lbv)));
        const wa = Math.exp(la - merged);
        const wb = Math.exp(lbv - merged);
        for (let x = 0; x < d; x++) o[off + x] = wa * o[off + x]! + wb * ob[off + x]!;
        lse[idx] = merged;
      }
    }
  }
}
