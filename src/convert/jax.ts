import * as path from 'node:path';
import { CheckpointError } from '../../ops/index.js';
import { paramName, paramSpecs, type LayerPart, type LlamaConfig } from '../../models/index.js';
import { JAX_STORAGE, readJaxSliceF32, scanJaxParams, type JaxRecord } from '../checkpoint/jaxParams.js';
import type { ModelSource } from '../checkpoint/source.js';

/** How a Flax tensor becomes the Hugging Face one: as is, transposed, or transposed with q/k rows permuted. */
type Transform = 'none' | 'transpose' | 'rope';

/** Jax path under a layer (`transformer/h/<i>/` or `transformer/h/scan_decoder/`) of each HF layer part. */
const LAYER_SOURCES: Readonly<Record<LayerPart, [string, Transform]>> = {
  input_layernorm: ['attention_norm/kernel', 'none'],
  'self_attn.q_proj': ['attention/wq/kernel', 'rope'],
  'self_attn.k_proj': ['attention/wk/kernel', 'rope'],
  'self_attn.v_proj': ['attention/wv/kernel', 'transpose'],
  'self_attn.o_proj': ['attention/wo/kernel', 'transpose'],
  post_attention_layernorm: ['ffn_norm/kernel', 'none'],
  'mlp.gate_proj': ['feed_forward/w1/kernel', 'transpose'],
  'mlp.up_proj': ['feed_forward/w3/kernel', 'transpose'],
  'mlp.down_proj': ['feed_forward/w2/kernel', 'transpose'],
};

const TOP_SOURCES: Readonly<Record<string, [string, Transform]>> = {
  [paramName.embed]: ['transformer/wte/embedding', 'none'],
  [paramName.visionEmbed]: ['transformer/vte/embedding', 'none'],
  [paramName.finalNorm]: ['transformer/ln_f/kernel', 'none'],
  [paramName.lmHead]: ['lm_head/kernel', 'transpose'],
  [paramName.visionHead]: ['vision_head/kernel', 'transpose'],
};

/**
 * Flax (in, out) to HF (out, in); for q/k also LWM's interleaved RoPE pairs to rotate-half rows:
 * Jax column h*D + 2i + j is HF row h*D + j*D/2 + i (lwm-spec 2.5).
 */
function toHf(src: Float32Array, rows: number, cols: number, t: Transform, headDim: number): Float32Array {
  if (t === 'none') return src;
  const out = new Float32Array(src.length);
  const half = headDim / 2;
  const from = new Int32Array(cols);
  for (let r = 0; r < cols; r++) {
    const w = r % headDim;
    from[r] = t === 'rope' ? r - w + 2 * (w % half) + Math.floor(w / half) : r;
  }
  // In tiles, so the strided reads stay in cache: about twice as fast as row by row on 7B matrices.
  const B = 64;
  for (let e0 = 0; e0 < rows; e0 += B) {
    const e1 = Math.min(rows, e0 + B);
    for (let r0 = 0; r0 < cols; r0 += B) {
      const r1 = Math.min(cols, r0 + B);
      for (let r = r0; r < r1; r++) {
        const c = from[r]!;
        const o = r * rows;
        for (let e = e0; e < e1; e++) out[o + e] = src[e * cols + c]!;
      }
    }
  }
  return out;
}

/**
 * An LWM Jax `params` file (scanned or unscanned layers; `trainstate` files via their
 * params/params/ keys) as a model source in Hugging Face layout. Only record headers are read
 * here; each tensor is read from its file offsets when asked for, so memory holds about one tensor.
 * Jax files store no architecture, hence `config` (theta and length included).
 */
export function jaxSource(file: string, c: Readonly<LlamaConfig>): ModelSource & { scanned: boolean } {
  const byKey = new Map<string, JaxRecord>();
  for (const r of scanJaxParams(file)) {
    const k = r.key[0] === 'params' && r.key[1] === 'params' ? r.key.slice(2) : r.key;
    byKey.set(k.join('/'), r);
  }
  const scanned = [...byKey.keys()].some((k) => k.startsWith('transformer/h/scan_decoder/'));
  const find = (key: string) => {
    const r = byKey.get(key);
    if (!r) throw new CheckpointError(`${file}: record '${key}' is missing; is this an LWM params file for this config (layers ${c.numLayers}, vision ${c.visionVocabSize > 0})?`);
    return r;
  };
  const tensors = paramSpecs(c).map((s) => {
    const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(s.name);
    const [source, t] = m ? LAYER_SOURCES[m[2] as LayerPart] : (TOP_SOURCES[s.name] ?? ['', 'none']);
    if (!source) throw new CheckpointError(`convert: no Jax source for '${s.name}'`);
    const layer = m ? Number(m[1]) : -1;
    const key = m ? (scanned ? `transformer/h/scan_decoder/${source}` : `transformer/h/${layer}/${source}`) : source;
    const rec = find(key);
    const stored = JAX_STORAGE[rec.dtype];
    if (!stored) throw new CheckpointError(`${file}: '${key}' is ${rec.dtype}; weights must be float32, float16 or bfloat16`);
    const jaxShape = t === 'none' ? s.shape : [...s.shape].reverse();
    const want = m && scanned ? [c.numLayers, ...jaxShape] : jaxShape;
    if (rec.shape.join() !== want.join()) throw new CheckpointError(`${file}: '${key}' has shape [${rec.shape}] but the config needs [${want}]; check --preset/--config`);
    const per = jaxShape.reduce((a, b) => a * b, 1);
    return {
      name: s.name,
      shape: s.shape,
      stored,
      data: () => {
        const src = readJaxSliceF32(file, rec, m && scanned ? layer * per : 0, per);
        return toHf(src, jaxShape[0]!, jaxShape[1] ?? 1, t, c.headDim);
      },
    };
  });
  return { config: c, tensors, tokenizerDir: path.dirname(file), name: path.basename(path.dirname(path.resolve(file))), format: `Jax params (${scanned ? 'scanned' : 'unscanned'} layers)`, scanned };
}
