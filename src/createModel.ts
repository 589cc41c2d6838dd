import { presetConfig, type LlamaConfig } from '../models/config.js';
import { LlamaModel } from '../models/llama.js';
import { initParams } from '../models/params.js';

/** A model with freshly initialised weights (LWM's init), from a preset name. */
export function createModel(preset: string, opts: { seed?: number; overrides?: Partial<LlamaConfig> } = {}): LlamaModel {
  const config = presetConfig(preset, opts.overrides);
  return new LlamaModel(config, initParams(config, opts.seed ?? 0));
}
