import * as tf from '@tensorflow/tfjs';
import type { LlamaConfig } from './config.js';
import { InputError } from '../ops/errors.js';
import { LowpWeight, type LowpDtype } from '../ops/lowp.js';

/** One weight of the model: its checkpoint name (Hugging Face layout) and shape. */
export interface ParamSpec {
  name: string;
  shape: number[];
}

/** Checkpoint names of the weights, in Hugging Face `LlamaForCausalLM` layout ([out, in] matrices). */
export const paramName = {
  embed: 'model.embed_tokens.weight',
  visionEmbed: 'model.vision_embed_tokens.weight',
  finalNorm: 'model.norm.weight',
  lmHead: 'lm_head.weight',
  visionHead: 'vision_head.weight',
  layer: (i: number, part: LayerPart) => `model.layers.${i}.${part}.weight`,
};

export type LayerPart =
  | 'input_layernorm'
  | 'self_attn.q_proj'
  | 'self_attn.k_proj'
  | 'self_attn.v_proj'
  | 'self_attn.o_proj'
  | 'post_attention_layernorm'
  | 'mlp.gate_proj'
  | 'mlp.up_proj'
  | 'mlp.down_proj';

/** Every weight the config needs, in checkpoint order. The single source of names and shapes. */
export function paramSpecs(c: LlamaConfig): ParamSpec[] {
  const e = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const specs: ParamSpec[] = [{ name: paramName.embed, shape: [c.vocabSize, e] }];
  if (c.visionVocabSize > 0) specs.push({ name: paramName.visionEmbed, shape: [c.visionVocabSize, e] });
  for (let i = 0; i < c.numLayers; i++) {
    const l = (part: LayerPart, shape: number[]) => specs.push({ name: paramName.layer(i, part), shape });
    l('input_layernorm', [e]);
    l('self_attn.q_proj', [q, e]);
    l('self_attn.k_proj', [kv, e]);
    l('self_attn.v_proj', [kv, e]);
    l('self_attn.o_proj', [e, q]);
    l('post_attention_layernorm', [e]);
    l('mlp.gate_proj', [c.intermediateSize, e]);
    l('mlp.up_proj', [c.intermediateSize, e]);
    l('mlp.down_proj', [e, c.intermediateSize]);
  }
  specs.push({ name: paramName.finalNorm, shape: [e] });
  if (!c.tieWordEmbeddings) specs.push({ name: paramName.lmHead, shape: [c.vocabSize, e] });
  if (c.visionVocabSize > 0) specs.push({ name: paramName.visionHead, shape: [c.visionVocabSize, e] });
  return specs;
}

export function isNormWeight(name: string): boolean {
  return name.endsWith('layernorm.weight') || name === paramName.finalNorm;
}

/** A weight as the model uses it: a tensor, or a linear weight kept in bf16/int8 (inference only). */
export type Weight = tf.Tensor | LowpWeight;

/** The single owner of a model's weights. */
export class ParamStore {
  private readonly tensors: Map<string, Weight>;

  constructor(tensors: Map<string, Weight>) {
    this.tensors = tensors;
  }

  /** A float32 tensor (embeddings, norms, and every weight of a full-precision model). */
  get(name: string): tf.Tensor {
    const t = this.weight(name);
    if (t instanceof LowpWeight) throw new InputError(`weight '${name}' is stored as ${t.dtype}, which only inference matmuls take; load the model with dtype f32 to train or export it`);
    return t;
  }

  /** Any weight, low-precision ones included (for the linear layers). */
  weight(name: string): Weight {
    const t = this.tensors.get(name);
    if (!t) throw new Error(`ParamStore: no weight named '${name}'`);
    return t;
  }

  /** Whether any weight is held in bf16/int8 (such a model cannot be trained). */
  get lowPrecision(): boolean {
    for (const t of this.tensors.values()) if (t instanceof LowpWeight) return true;
    return false;
  }

  /** Bytes the weights hold. */
  get bytes(): number {
    let n = 0;
    for (const t of this.tensors.values()) n += t instanceof LowpWeight ? t.bytes : t.size * 4;
    return n;
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  get numParams(): number {
    let n = 0;
    for (const t of this.tensors.values()) n += t.size;
    return n;
  }

  dispose(): void {
    for (const t of this.tensors.values()) t.dispose();
    this.tensors.clear();
  }
}

/**
 * Fresh weights as LWM initialises them for training from scratch: every matrix and embedding
 * ~ Normal(0, 0.02), norm weights 1. Deterministic for a given seed.
 */
export function initParams(c: LlamaConfig, seed = 0, std = 0.02): ParamStore {
  const map = new Map<string, tf.Tensor>();
  paramSpecs(c).forEach((s, i) => {
    map.set(s.name, isNormWeight(s.name) ? tf.ones(s.shape) : tf.randomNormal(s.shape, 0, std, 'float32', seed * 7919 + i));
  });
  return new ParamStore(map);
}

/** Linear-layer weights (the ones bf16/int8 storage applies to): matrices other than the embedding tables. */
export function isLinearWeight(name: string, shape: readonly number[]): boolean {
  return shape.length === 2 && name !== paramName.embed && name !== paramName.visionEmbed;
}

/**
 * The same weights with every linear one held in bf16 or int8 (embeddings and norms stay float32);
 * the float32 originals of those are disposed, so `store` must not be used afterwards.
 */
export function lowerParams(store: ParamStore, dtype: LowpDtype): ParamStore {
  const map = new Map<string, Weight>();
  for (const name of store.names()) {
    const w = store.weight(name);
    if (w instanceof LowpWeight || !isLinearWeight(name, w.shape)) {
      map.set(name, w);
      continue;
    }
    map.set(name, LowpWeight.fromFloat32(w.dataSync() as Float32Array, [w.shape[0]!, w.shape[1]!], dtype));
    w.dispose();
  }
  return new ParamStore(map);
}
