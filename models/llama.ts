import * as tf from '@tensorflow/tfjs';
import {
  applyRope,
  attention,
  blockwiseAttention,
  FUSED_ATTENTION,
  InputError,
  isNativeKernelActive,
  layoutIndices,
  ringAttention,
  rmsNorm,
  ropeAngles,
  ropeFrequencies,
  swiglu,
  type RingGroup,
  type RingLayout,
} from '../ops/index.js';
import type { LlamaConfig } from './config.js';
import { KVCache, type KvDtype } from './kvCache.js';
import { paramName, type LayerPart, type ParamStore, type Weight } from './params.js';
import { LowpWeight, matMulLowp } from '../ops/lowp.js';

/** Which head(s) a vision-language model reads out, and which table embeds a lone decode token (LWM's sample_mode). */
export type SampleMode = 'text' | 'vision' | 'all';

export interface ForwardOptions {
  /** [B, T] bool/0-1: true where the token id is a vision id (indexes the vision embedding). */
  visionMask?: tf.Tensor2D;
  /** [B, T] int32 absolute positions for RoPE; default cache length + 0..T-1. */
  positions?: tf.Tensor2D;
  /** [B, T] 1 = real token, 0 = padding (padding is never attended to). */
  attentionMask?: tf.Tensor2D;
  /** [B, T] int32: packed documents attend only within their own segment (no cache). */
  segmentIds?: tf.Tensor2D;
  /** Incremental decoding: keys/values of earlier tokens; appended to in place. */
  cache?: KVCache;
  /** Default 'text'. For one-token steps without a visionMask it also picks the embedding table. */
  sampleMode?: SampleMode;
  /** Only compute logits for the last position (prefill and decode need no more). */
  lastOnly?: boolean;
  /** Queries per attention block; bounds attention memory for long prompts. 0 = one block. */
  attentionBlockSize?: number;
  /** Tokens per MLP chunk (LWM's scan_mlp); bounds MLP activation memory. 0 = one chunk. */
  mlpChunkSize?: number;
  /**
   * Training: keep only each layer's input and recompute the layer in the backward pass (LWM's
   * remat / scan_layers), so activation memory is one layer's instead of all of them.
   */
  remat?: boolean;
  /**
   * Sequence parallelism: the input is this rank's share of a sequence split over `group` by
   * `layout` (see shardSequence), and attention runs as RingAttention over the group. Default
   * RoPE positions are the tokens' global indices; segmentIds and attentionMask are local.
   */
  ring?: { group: RingGroup; layout?: RingLayout };
  /**
   * Sees each layer's keys and values of these tokens ([B, T, Hkv, D], after RoPE) while the
   * forward runs, e.g. to build a KV cache from a sequence-parallel prefill. Must copy what it keeps.
   */
  onKv?: (layer: number, k: tf.Tensor4D, v: tf.Tensor4D) => void;
}

/**
 * The LWM / LLaMA-2 decoder: pre-norm blocks of RMSNorm -> attention with RoPE -> residual ->
 * RMSNorm -> SwiGLU -> residual, then a final RMSNorm and the head(s). No biases anywhere.
 * Weights are in Hugging Face layout ([out, in], rotate-half RoPE).
 */
export class LlamaModel {
  readonly freq: Float32Array;
  /** Element type of the KV caches newCache() makes (what --kv-dtype sets). */
  kvDtype: KvDtype = 'f32';
  /** Tokens newCache() preallocates unless told (the context a memory plan was made for). */
  kvCapacity = 0;

  constructor(
    readonly config: Readonly<LlamaConfig>,
    readonly params: ParamStore,
  ) {
    this.freq = ropeFrequencies(config.headDim, config.ropeTheta);
  }

  /** An empty KV cache of this model's kvDtype, preallocated for `capacity` tokens. */
  newCache(capacity = this.kvCapacity): KVCache {
    return new KVCache(this.config.numLayers, { dtype: this.kvDtype, capacity });
  }

  get isVision(): boolean {
    return this.config.visionVocabSize > 0;
  }

  /** Logits [B, T or 1, V] of the head chosen by sampleMode ('text' unless given). */
  forward(inputIds: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor3D {
    const mode = opts.sampleMode ?? 'text';
    if (mode === 'all') throw new InputError("forward: sampleMode 'all' returns two heads; call hidden() then textLogits()/visionLogits()");
    return tf.tidy(() => {
      const h = this.hidden(inputIds, opts);
      return mode === 'vision' ? this.visionLogits(h) : this.textLogits(h);
    });
  }

  /** Final hidden state after the last RMSNorm: [B, T or 1, E]. */
  hidden(inputIds: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor3D {
    const c = this.config;
    const [b, t] = inputIds.shape;
    const cache = opts.cache;
    const past = cache?.length ?? 0;
    this.validate(inputIds, opts, past);
    return tf.tidy(() => {
      let x = this.embed(inputIds, opts);
      const order = this.globalOrder(t, opts);
      const positions = opts.positions ?? (tf.tile(tf.reshape(order ? tf.tensor1d(order, 'int32') : tf.range(past, past + t, 1, 'int32'), [1, t]), [b, 1]) as tf.Tensor2D);
      const angles = ropeAngles(positions, this.freq);
      const keyMask = cache ? cache.appendMask(b, t, opts.attentionMask ?? null) : (opts.attentionMask ?? null);
      // Off the gradient tape nothing needs a layer's intermediates once it is done: freeing them
      // per layer keeps a 512-token prefill of a 7B model at one layer's activations (~0.1 GB)
      // instead of all 32 layers' (~3.5 GB) until the pass ends.
      const inference = !(tf.engine() as unknown as { isTapeOn(): boolean }).isTapeOn();
      for (let i = 0; i < c.numLayers; i++) {
        const w = (part: LayerPart) => this.params.weight(paramName.layer(i, part));
        const layer = (xi: tf.Tensor3D) => (opts.remat ? this.rematBlock(i, xi, angles, keyMask, opts, order) : this.block(i, xi, w, angles, keyMask, opts, order)) as tf.Tensor3D;
        const xi = x;
        x = inference ? tf.tidy(() => layer(xi)) : layer(xi);
        if (inference && i > 0) xi.dispose();
      }
      cache?.advance(t);
      if (opts.lastOnly && t > 1) x = tf.slice(x, [0, t - 1, 0], [b, 1, c.hiddenSize]);
      return rmsNorm(x, this.params.get(paramName.finalNorm), c.rmsNormEps) as tf.Tensor3D;
    });
  }

  /** One decoder layer with the given weights. */
  private block(i: number, x: tf.Tensor, w: (part: LayerPart) => Weight, angles: { cos: tf.Tensor; sin: tf.Tensor }, keyMask: tf.Tensor2D | null, opts: ForwardOptions, order: Int32Array | null): tf.Tensor {
    const c = this.config;
    const a = this.attend(i, rmsNorm(x, tensorOf(w('input_layernorm')), c.rmsNormEps), angles, keyMask, opts, order, w);
    const h = tf.add(x, a);
    return tf.add(h, this.mlp(rmsNorm(h, tensorOf(w('post_attention_layernorm')), c.rmsNormEps), i, opts.mlpChunkSize ?? 0, w));
  }

  /**
   * The layer as one custom-gradient op over its input and weights: the forward keeps no
   * intermediates (customGrad runs it off the tape); the backward runs the layer again under
   * tf.grads. With a ring, the recompute repeats the layer's ring passes on every rank alike.
   */
  private rematBlock(i: number, x: tf.Tensor, angles: { cos: tf.Tensor; sin: tf.Tensor }, keyMask: tf.Tensor2D | null, opts: ForwardOptions, order: Int32Array | null): tf.Tensor {
    const ws = LAYER_PARTS.map((p) => this.params.get(paramName.layer(i, p)));
    // Everything the recompute reads is an input, so customGrad keeps it alive until the backward
    // (the caller's tidy disposes the originals) and frees it afterwards.
    const consts = [angles.cos, angles.sin, ...(keyMask ? [keyMask] : []), ...(opts.segmentIds ? [opts.segmentIds] : [])];
    const n = ws.length;
    const run = (a: tf.Tensor[]) => {
      const c = a.slice(1 + n);
      const km = keyMask ? (c[2] as tf.Tensor2D) : null;
      const seg = opts.segmentIds ? (c[keyMask ? 3 : 2] as tf.Tensor2D) : undefined;
      return this.block(i, a[0]!, (p) => a[1 + LAYER_PARTS.indexOf(p)]!, { cos: c[0]!, sin: c[1]! }, km, { ...opts, segmentIds: seg }, order);
    };
    const op = tf.customGrad((...args) => {
      const save = args.pop() as tf.GradSaveFunc;
      const inputs = args as tf.Tensor[];
      save(inputs);
      return {
        value: run(inputs),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          // tf.grads called from inside a backward pass starts a fresh tape and, when done, drops
          // the engine's active tape, which the outer backward still needs for its cleanup.
          const state = (tf.engine() as unknown as { state: { activeTape: unknown } }).state;
          const outer = state.activeTape;
          try {
            const g = tf.grads((...a: tf.Tensor[]) => run([...a, ...saved.slice(1 + n)]))(saved.slice(0, 1 + n), dy);
            return [...g, ...saved.slice(1 + n).map((t) => tf.zerosLike(t))];
          } finally {
            state.activeTape = outer;
          }
        },
      };
    });
    return op(x, ...ws, ...consts);
  }

  textLogits(h: tf.Tensor3D): tf.Tensor3D {
    const head = this.params.weight(this.config.tieWordEmbeddings ? paramName.embed : paramName.lmHead);
    return project(h, head);
  }

  visionLogits(h: tf.Tensor3D): tf.Tensor3D {
    if (!this.isVision) throw new InputError('visionLogits: this is a text model (vision_vocab_size 0); load a vision-language checkpoint');
    return project(h, this.params.weight(paramName.visionHead));
  }

  dispose(): void {
    this.params.dispose();
  }

  /** Global token index of each local token under sequence parallelism, else null. */
  private globalOrder(t: number, opts: ForwardOptions): Int32Array | null {
    if (!opts.ring) return null;
    const { group, layout = 'contiguous' } = opts.ring;
    return layoutIndices(t * group.size, group.size, group.rank, layout);
  }

  private validate(ids: tf.Tensor2D, opts: ForwardOptions, past: number): void {
    const [b, t] = ids.shape;
    if (ids.rank !== 2) throw new InputError(`forward: input ids must be [batch, seq], got shape [${ids.shape.join(', ')}]`);
    if (ids.dtype !== 'int32') throw new InputError(`forward: input ids must be int32, got ${ids.dtype}`);
    if (t === 0) throw new InputError('forward: empty input (0 tokens)');
    if (opts.ring && opts.cache) throw new InputError('forward: a ring (sequence-parallel) forward cannot use a KV cache; decode on one process');
    const total = past + t * (opts.ring?.group.size ?? 1);
    if (total > this.config.maxSeqLen) {
      throw new InputError(
        `input of ${total - past} tokens after ${past} cached ones needs ${total} positions, but the model's context is ${this.config.maxSeqLen}; shorten the prompt or use a longer-context model`,
      );
    }
    for (const [name, m] of [['visionMask', opts.visionMask], ['positions', opts.positions], ['attentionMask', opts.attentionMask], ['segmentIds', opts.segmentIds]] as const) {
      if (m && (m.shape[0] !== b || m.shape[1] !== t)) {
        throw new InputError(`forward: ${name} has shape [${m.shape.join(', ')}] but the input is [${b}, ${t}]`);
      }
    }
    this.validateIds(ids, opts.visionMask, opts.sampleMode);
    if (opts.segmentIds && opts.cache) throw new InputError('forward: segmentIds (packed training rows) cannot be combined with a KV cache');
  }

  /** Out-of-range ids would silently read garbage rows (NaN in LWM's JAX), so they are refused. */
  private validateIds(ids: tf.Tensor2D, visionMask?: tf.Tensor2D, mode?: SampleMode): void {
    const v = ids.dataSync();
    const vm = visionMask?.dataSync();
    // A lone decode token without a mask is embedded by sampleMode (see embed()), so checked the same way.
    const loneVision = !vm && this.isVision && ids.shape[1] === 1 && mode === 'vision';
    for (let i = 0; i < v.length; i++) {
      const isVision = vm ? Boolean(vm[i]) : loneVision;
      const limit = isVision ? this.config.visionVocabSize : this.config.vocabSize;
      if (!(v[i]! >= 0 && v[i]! < limit)) {
        throw new InputError(`token id ${v[i]} at position ${i} is outside the ${isVision ? 'vision ' : ''}vocabulary [0, ${limit}); check the prompt token ids`);
      }
    }
  }

  /** Token embedding; vision ids read the vision table (lwm-spec 3.3). */
  private embed(ids: tf.Tensor2D, opts: ForwardOptions): tf.Tensor3D {
    const text = this.params.get(paramName.embed);
    if (!this.isVision) return tf.gather(text, ids) as tf.Tensor3D;
    const vision = this.params.get(paramName.visionEmbed);
    if (!opts.visionMask) {
      const mode = opts.sampleMode ?? 'text';
      if (ids.shape[1] === 1 && mode === 'all') throw new InputError("forward: a single token with sampleMode 'all' is ambiguous; pass a visionMask or sampleMode 'text'/'vision'");
      return tf.gather(ids.shape[1] === 1 && mode === 'vision' ? vision : text, ids) as tf.Tensor3D;
    }
    const vm = tf.cast(opts.visionMask, 'bool');
    const zeros = tf.zerosLike(ids);
    const e = tf.gather(text, tf.where(vm, zeros, ids));
    const ev = tf.gather(vision, tf.where(vm, ids, zeros));
    return tf.where(tf.expandDims(vm, -1), ev, e) as tf.Tensor3D;
  }

  private attend(layer: number, x: tf.Tensor, angles: { cos: tf.Tensor; sin: tf.Tensor }, keyMask: tf.Tensor2D | null, opts: ForwardOptions, order: Int32Array | null, w: (part: LayerPart) => Weight): tf.Tensor {
    const c = this.config;
    const [b, t] = x.shape as [number, number, number];
    const heads = (p: LayerPart, n: number) => tf.reshape(project(x as tf.Tensor3D, w(p)), [b, t, n, c.headDim]) as tf.Tensor4D;
    const q = applyRope(heads('self_attn.q_proj', c.numHeads), angles);
    let k = applyRope(heads('self_attn.k_proj', c.numKvHeads), angles);
    let v = heads('self_attn.v_proj', c.numKvHeads);
    opts.onKv?.(layer, k, v);
    if (opts.cache) [k, v] = opts.cache.append(layer, k, v);
    const o = opts.cache?.dtype === 'bf16' ? opts.cache.attend(layer, q, keyMask) : this.attention(q, k, v, keyMask, opts, order);
    return project(tf.reshape(o, [b, t, c.numHeads * c.headDim]) as tf.Tensor3D, w('self_attn.o_proj'));
  }

  /**
   * Causal order is the token's place in the (global) sequence, not its RoPE position, which
   * packed rows reset per document.
   */
  private attention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, keyMask: tf.Tensor2D | null, opts: ForwardOptions, order: Int32Array | null): tf.Tensor4D {
    const masks = { keyMask: keyMask ?? undefined, segmentIds: opts.segmentIds };
    if (opts.ring && order) return ringAttention(q, k, v, { ...masks, group: opts.ring.group, layout: opts.ring.layout, positions: order });
    // Without a cache the native path is the one-rank ring: the same kernel and gradient.
    if (!opts.cache && isNativeKernelActive(FUSED_ATTENTION)) return blockwiseAttention(q, k, v, masks);
    return attention(q, k, v, {
      causal: true,
      queryOffset: opts.cache ? opts.cache.length : 0,
      keyMask: keyMask ?? undefined,
      segmentIds: opts.segmentIds,
      blockSize: opts.attentionBlockSize,
    });
  }

  /** SwiGLU: down(silu(gate(x)) * up(x)), optionally in chunks of tokens (position-wise, so exact). */
  private mlp(x: tf.Tensor, layer: number, chunk: number, w: (part: LayerPart) => Weight): tf.Tensor {
    const run = (xs: tf.Tensor3D) => {
      return project(swiglu(project(xs, w('mlp.gate_proj')), project(xs, w('mlp.up_proj'))) as tf.Tensor3D, w('mlp.down_proj'));
    };
    const t = x.shape[1]!;
    if (!chunk || t <= chunk) return run(x as tf.Tensor3D);
    const parts: tf.Tensor[] = [];
    for (let s = 0; s < t; s += chunk) {
      parts.push(tf.tidy(() => run(tf.slice(x, [0, s, 0], [x.shape[0]!, Math.min(chunk, t - s), x.shape[2]!]) as tf.Tensor3D)));
    }
    return tf.concat(parts, 1);
  }
}

const LAYER_PARTS: readonly LayerPart[] = [
  'input_layernorm',
  'self_attn.q_proj',
  'self_attn.k_proj',
  'self_attn.v_proj',
  'self_attn.o_proj',
  'post_attention_layernorm',
  'mlp.gate_proj',
  'mlp.up_proj',
  'mlp.down_proj',
];

/** x @ W^T for a Hugging Face [out, in] weight: [B, T, in] -> [B, T, out]. */
function project(x: tf.Tensor3D, weight: Weight): tf.Tensor3D {
  const [b, t, e] = x.shape;
  const out = weight.shape[0]!;
  const x2 = tf.reshape(x, [b * t, e]) as tf.Tensor2D;
  const y = weight instanceof LowpWeight ? matMulLowp(x2, weight) : tf.matMul(x2, weight, false, true);
  return tf.reshape(y, [b, t, out]);
}

/** Norm weights are always float32 tensors; a low-precision one would be a loader bug. */
function tensorOf(w: Weight): tf.Tensor {
  if (w instanceof LowpWeight) throw new InputError(`a ${w.dtype} weight of shape [${w.shape.join(', ')}] where a float32 tensor is needed`);
  return w;
}
