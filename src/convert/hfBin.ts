import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../../ops/index.js';
import { paramSpecs } from '../../models/index.js';
import { readModelConfig } from '../checkpoint/modelDir.js';
import type { TensorToWrite } from '../checkpoint/safetensors.js';
import { writeConvertedModel } from './output.js';
import { readTorchBin, readTorchTensorF32, type TorchTensorRef } from '../checkpoint/torchBin.js';

/** The .bin files of a Hugging Face folder: those the index names, or the single pytorch_model.bin. */
function binFiles(dir: string): string[] {
  const index = path.join(dir, 'pytorch_model.bin.index.json');
  if (fs.existsSync(index)) {
    const j = JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> };
    if (!j.weight_map) throw new CheckpointError(`${index}: no weight_map`);
    return [...new Set(Object.values(j.weight_map))].sort().map((f) => path.join(dir, f));
  }
  const single = path.join(dir, 'pytorch_model.bin');
  if (fs.existsSync(single)) return [single];
  throw new CheckpointError(`${dir}: no pytorch_model.bin or pytorch_model.bin.index.json`);
}

/**
 * A Hugging Face PyTorch folder (LWM-Text releases: `LlamaForCausalLM` .bin shards, the same
 * tensor names and rotate-half layout as ours) to a model folder, one tensor at a time; the
 * folder is built aside and renamed. Rotary inv_freq buffers of older transformers are skipped.
 */
export function convertHfBin(dir: string, outDir: string, opts: { dtype?: 'F32' | 'BF16'; ropeTheta?: number; maxSeqLen?: number } = {}): { tensors: number } {
  const base = readModelConfig(dir);
  const config = { ...base, ...(opts.ropeTheta !== undefined ? { ropeTheta: opts.ropeTheta } : {}), ...(opts.maxSeqLen !== undefined ? { maxSeqLen: opts.maxSeqLen } : {}) };
  const refs = new Map<string, TorchTensorRef>();
  for (const f of binFiles(dir)) for (const t of readTorchBin(f)) if (!t.name.endsWith('rotary_emb.inv_freq')) refs.set(t.name, t);
  const specs = paramSpecs(config);
  const tensors: TensorToWrite[] = specs.map((s) => {
    const r = refs.get(s.name);
    if (!r) throw new CheckpointError(`${dir}: tensor '${s.name}' is missing from the .bin files`);
    if (r.shape.join() !== s.shape.join()) throw new CheckpointError(`${r.file}: '${s.name}' has shape [${r.shape}] but config.json implies [${s.shape}]`);
    return { name: s.name, shape: s.shape, data: () => readTorchTensorF32(r) };
  });
  const extra = [...refs.keys()].filter((n) => !specs.some((s) => s.name === n));
  if (extra.length) throw new CheckpointError(`${dir}: '${extra[0]}' is not a parameter of the model config.json describes`);
  writeConvertedModel(outDir, tensors, config, opts.dtype ?? 'BF16', {
    copy: { from: dir, files: ['tokenizer.json', 'tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json'] },
  });
  return { tensors: tensors.length };
}
