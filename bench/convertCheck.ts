import type { LlamaConfig } from '../src/index.js';
import { readTensorF32, readWeightIndex } from '../src/checkpoint/safetensors.js';
import { bf16Bits, recordSeed, scannedLwmShapes } from '../__tests__/helpers/jaxParamsWriter.js';

/**
 * A few converted tensors compared in full with the random source values, so a fast but wrong
 * conversion cannot pass as a result. Picked to cover each transform and the 7B chunk
 * boundaries: w2 layers 11 and 23 straddle chunks 0/1 and 1/2, w1 layer 31 lies in the short
 * last chunk, wq is the RoPE permutation of an unchunked 1 GiB record.
 */
const CASES: [hfPart: string, jax: string, layer: number, transform: 'none' | 'transpose' | 'rope'][] = [
  ['self_attn.q_proj', 'attention/wq/kernel', 0, 'rope'],
  ['mlp.down_proj', 'feed_forward/w2/kernel', 11, 'transpose'],
  ['mlp.down_proj', 'feed_forward/w2/kernel', 23, 'transpose'],
  ['mlp.gate_proj', 'feed_forward/w1/kernel', 31, 'transpose'],
  ['input_layernorm', 'attention_norm/kernel', 7, 'none'],
  ['', 'transformer/ln_f/kernel', -1, 'none'],
];

export interface CheckResult {
  tensors: string[];
  values: number;
  mismatches: number;
  firstMismatch?: string;
}

export function checkConverted(outDir: string, c: Readonly<LlamaConfig>, seed: number): CheckResult {
  const shapes = scannedLwmShapes(c);
  const index = readWeightIndex(outDir);
  const res: CheckResult = { tensors: [], values: 0, mismatches: 0 };
  for (const [part, jax, wantLayer, t] of CASES) {
    // Smaller presets (a quick run of the bench) check their last layer instead.
    const layer = Math.min(wantLayer, c.numLayers - 1);
    const hf = layer >= 0 ? `model.layers.${layer}.${part}.weight` : 'model.norm.weight';
    if (res.tensors.includes(hf)) continue;
    const key = layer >= 0 ? `transformer/h/scan_decoder/${jax}` : jax;
    const ri = shapes.findIndex(([k]) => k === key);
    const entry = index.get(hf);
    if (ri < 0 || !entry) throw new Error(`check: ${ri < 0 ? key : hf} not found`);
    const jaxShape = layer >= 0 ? shapes[ri]![1].slice(1) : shapes[ri]![1];
    const per = jaxShape.reduce((a, b) => a * b, 1);
    const base = layer >= 0 ? layer * per : 0;
    const s = recordSeed(seed, ri);
    const got = new Uint32Array(readTensorF32(entry, entry.file).buffer);
    const [rows, cols] = [jaxShape[0]!, jaxShape[1] ?? 1];
    const D = c.headDim;
    for (let idx = 0; idx < got.length; idx++) {
      let src = idx;
      if (t !== 'none') {
        // HF [out, in] element (r, k) is Flax (in, out) element (k, col(r)); lwm-spec 2.5 for rope.
        const r = Math.floor(idx / rows);
        const k = idx % rows;
        const w = r % D;
        const col = t === 'rope' ? r - w + 2 * (w % (D / 2)) + Math.floor(w / (D / 2)) : r;
        src = k * cols + col;
      }
      if (got[idx] !== ((bf16Bits(s, base + src) << 16) >>> 0)) {
        res.mismatches++;
        res.firstMismatch ??= `${hf}[${idx}]`;
      }
    }
    res.tensors.push(hf);
    res.values += got.length;
  }
  return res;
}
