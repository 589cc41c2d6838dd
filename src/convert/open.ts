import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../../ops/index.js';
import { MODEL_PRESETS, presetConfig, type LlamaConfig } from '../../models/index.js';
import { safetensorsSource } from '../checkpoint/modelDir.js';
import { withOverrides, type ContextOverrides, type ModelSource } from '../checkpoint/source.js';
import { hfBinSource } from './hfBin.js';
import { jaxSource } from './jax.js';

export type InputFormat = 'jax' | 'hf' | 'vqgan';

/**
 * What a path holds, by content rather than name: a folder with config.json is a Hugging Face (or
 * lwm) folder; a folder with a `params` file and no config.json is an LWM Jax release; a file
 * starting with PROTO (0x80) is a pickle (the vqgan); one starting with a msgpack array of 2 (0x92)
 * is a Jax params record stream.
 */
export function detectFormat(input: string): { format: InputFormat; file: string } {
  if (fs.statSync(input).isDirectory()) {
    if (fs.existsSync(path.join(input, 'config.json'))) return { format: 'hf', file: input };
    const params = path.join(input, 'params');
    if (fs.existsSync(params)) return { format: 'jax', file: params };
    throw new InputError(`${input}: a folder with neither config.json (Hugging Face / lwm) nor a Jax 'params' file; give the model folder or file`);
  }
  const fd = fs.openSync(input, 'r');
  const b = Buffer.alloc(1);
  const n = fs.readSync(fd, b, 0, 1, 0);
  fs.closeSync(fd);
  if (n === 1 && b[0] === 0x80) return { format: 'vqgan', file: input };
  if (n === 1 && b[0] === 0x92) return { format: 'jax', file: input };
  throw new InputError(`${input}: neither a Jax params file nor a pickle (first byte ${n ? `0x${b[0]!.toString(16)}` : 'none: empty file'}); give --from or check the file`);
}

/** The LWM release a path names (`.../LWM-Text-Chat-1M-Jax/params`, a hub cache folder), if any. */
export function releaseFromPath(p: string): string | undefined {
  const names = Object.keys(MODEL_PRESETS).sort((a, b) => b.length - a.length);
  const lower = path.resolve(p).toLowerCase();
  let best: { name: string; at: number } | undefined;
  for (const n of names) {
    const at = lower.lastIndexOf(n);
    // Only a whole name counts (followed by a separator or the end), and the last one in the path.
    if (at >= 0 && /^(?:$|[-/._])/.test(lower.slice(at + n.length)) && (!best || at > best.at)) best = { name: n, at };
  }
  return best?.name;
}

export interface OpenOptions extends ContextOverrides {
  /** Architecture for a Jax file: a preset name or a parsed config.json (Jax files store none). */
  preset?: string;
  config?: LlamaConfig;
}

/** The architecture a Jax file needs: --preset, --config, or the release its path names. */
function jaxConfig(file: string, o: OpenOptions): Readonly<LlamaConfig> {
  if (o.preset !== undefined && o.config !== undefined) throw new InputError('give --preset or --config, not both');
  if (o.config) return withOverrides(o.config, o, 'config');
  const preset = o.preset ?? releaseFromPath(file);
  if (!preset) throw new InputError(`${file}: a Jax params file stores no architecture and its path names no LWM release; give --preset NAME (e.g. LWM-Text-Chat-1M) or --config config.json`);
  return withOverrides(presetConfig(preset), o, `--preset ${preset}`);
}

/** Opens a model checkpoint of any supported format as a source in Hugging Face layout. */
export function openModelSource(input: string, format: 'jax' | 'hf', o: OpenOptions = {}): ModelSource {
  if (!fs.existsSync(input)) throw new InputError(`${input}: no such file or folder`);
  if (format === 'jax') {
    const file = fs.statSync(input).isDirectory() ? path.join(input, 'params') : input;
    if (!fs.existsSync(file)) throw new InputError(`${input}: no Jax 'params' file in this folder`);
    return jaxSource(file, jaxConfig(file, o));
  }
  if (!fs.statSync(input).isDirectory()) throw new InputError(`${input}: --from hf takes the model folder (config.json + *.safetensors or pytorch_model*.bin)`);
  if (o.preset !== undefined || o.config !== undefined) throw new InputError(`${input}: a Hugging Face folder has its own config.json; --preset and --config are for Jax files (use --theta / --max-len to override)`);
  const hasSafetensors = fs.readdirSync(input).some((f) => f.endsWith('.safetensors'));
  return hasSafetensors ? safetensorsSource(input, o, { allowExtra: false }) : hfBinSource(input, o);
}
