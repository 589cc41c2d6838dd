import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../../ops/index.js';
import { readModelConfig } from '../checkpoint/modelDir.js';
import { matchWeights, withOverrides, type ContextOverrides, type ModelSource } from '../checkpoint/source.js';
import { readTorchBin, readTorchTensorF32, type TorchTensorRef } from '../checkpoint/torchBin.js';

/** The .bin files of a Hugging Face folder: those the index names, or the single pytorch_model.bin. */
export function binFiles(dir: string): string[] {
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
 * tensor names and rotate-half layout as ours) as a model source; only the pickles are read
 * here, each tensor later from its byte range. Rotary inv_freq buffers of older transformers are skipped.
 */
export function hfBinSource(dir: string, overrides: ContextOverrides = {}): ModelSource {
  const config = withOverrides(readModelConfig(dir), overrides);
  const refs = new Map<string, TorchTensorRef>();
  for (const f of binFiles(dir)) for (const t of readTorchBin(f)) refs.set(t.name, t);
  const tensors = matchWeights(dir, refs, config, { ignore: (n) => n.endsWith('rotary_emb.inv_freq') }).map(({ name, shape, weight }) => ({
    name,
    shape,
    stored: weight.dtype,
    data: () => readTorchTensorF32(weight),
  }));
  return { config, tensors, tokenizerDir: dir, name: path.basename(path.resolve(dir)), format: 'PyTorch .bin' };
}
