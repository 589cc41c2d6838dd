import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { ConfigError, fromHfConfig, initBackend, InputError, presetConfig, vqganConfigFromJson, type LlamaConfig } from '../../src/index.js';
import { convertJaxParams } from '../../src/convert/jax.js';
import { convertVqganPickle } from '../../src/convert/vqganPickle.js';
import { convertHfBin } from '../../src/convert/hfBin.js';
import { readJsonObject } from '../../src/checkpoint/modelDir.js';
import { handle, note } from '../output.js';

interface ConvertArgs {
  input: string;
  outdir: string;
  from: string;
  preset?: string;
  config?: string;
  theta?: number;
  'max-len'?: number;
  dtype?: string;
  debug?: boolean;
}

export const convertCommand: CommandModule<object, ConvertArgs> = {
  command: 'convert <input> <outdir>',
  describe: "Convert LWM's Jax params, PyTorch .bin folders or the vqgan pickle into lwm folders, without Python",
  builder: (y: Argv) =>
    y
      .positional('input', { type: 'string', describe: 'A Jax params file (params::), a Hugging Face folder with pytorch_model*.bin, or the vqgan pickle' })
      .positional('outdir', { type: 'string', describe: 'New folder for the converted model' })
      .option('from', { type: 'string', default: 'auto', choices: ['auto', 'jax', 'hf', 'vqgan'], describe: 'Input format (auto: by content)' })
      .option('preset', { type: 'string', describe: "Architecture of a Jax file, e.g. LWM-Text-Chat-1M (sets theta and length), 7b, 7b-vision" })
      .option('config', { type: 'string', describe: 'config.json with the architecture (Hugging Face keys) instead of --preset' })
      .option('theta', { type: 'number', describe: 'RoPE theta (Jax files do not store it)' })
      .option('max-len', { type: 'number', describe: 'Context length (max_position_embeddings)' })
      .option('dtype', { type: 'string', choices: ['bf16', 'f32'], describe: 'Stored weight type (default: bf16 for models, as released; f32 for the VQGAN)' })
      .example('$0 convert ./LWM-Text-Chat-1M-Jax/params ./LWM-Text-Chat-1M --preset LWM-Text-Chat-1M', 'Jax params to a model folder')
      .example('$0 convert ./LWM-Text-Chat-1M ./LWM-Text-Chat-1M-lwm', 'A PyTorch .bin release folder (config.json + shards)')
      .example('$0 convert ./LWM-Chat-1M-Jax/vqgan ./LWM-Chat-1M/vqgan', 'The VQGAN pickle to a VQGAN folder') as unknown as Argv<ConvertArgs>,
  handler: handle<ConvertArgs>('convert', runConvert),
};

/** Pickles start with PROTO (0x80); Jax params with a msgpack array of 2 (0x92). */
function detect(file: string): 'jax' | 'vqgan' | 'hf' {
  if (fs.statSync(file).isDirectory()) return 'hf';
  const fd = fs.openSync(file, 'r');
  const b = Buffer.alloc(1);
  const n = fs.readSync(fd, b, 0, 1, 0);
  fs.closeSync(fd);
  if (n === 1 && b[0] === 0x80) return 'vqgan';
  if (n === 1 && b[0] === 0x92) return 'jax';
  throw new InputError(`${file}: neither a Jax params file nor a pickle (first byte 0x${n ? b[0]!.toString(16) : '??'}); give --from or check the file`);
}

function modelConfig(a: ConvertArgs): LlamaConfig {
  if ((a.preset === undefined) === (a.config === undefined)) throw new ConfigError('a Jax params file stores no architecture: give exactly one of --preset NAME or --config config.json');
  const overrides: Partial<LlamaConfig> = {};
  if (a.theta !== undefined) overrides.ropeTheta = a.theta;
  if (a['max-len'] !== undefined) overrides.maxSeqLen = a['max-len'];
  if (a.preset) return presetConfig(a.preset, overrides);
  if (!fs.existsSync(a.config!)) throw new InputError(`--config ${a.config}: no such file`);
  return { ...fromHfConfig(readJsonObject(a.config!), a.config!), ...overrides };
}

async function runConvert(a: ConvertArgs): Promise<void> {
  if (!fs.existsSync(a.input)) throw new InputError(`${a.input}: no such file or folder`);
  if (fs.existsSync(a.outdir) && fs.readdirSync(a.outdir).length > 0) throw new InputError(`${a.outdir} exists and is not empty; choose a new output folder`);
  const from = a.from === 'auto' ? detect(a.input) : a.from;
  await initBackend();
  const t0 = performance.now();
  if (from === 'hf') {
    if (!fs.statSync(a.input).isDirectory()) throw new InputError(`${a.input}: --from hf takes the model folder (config.json + pytorch_model*.bin)`);
    const r = convertHfBin(a.input, a.outdir, { dtype: a.dtype === 'f32' ? 'F32' : 'BF16', ...(a.theta !== undefined ? { ropeTheta: a.theta } : {}), ...(a['max-len'] !== undefined ? { maxSeqLen: a['max-len'] } : {}) });
    note(`lwm convert: ${r.tensors} tensors from PyTorch .bin -> ${a.outdir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } else if (from === 'vqgan') {
    const config = a.config ? vqganConfigFromJson(readJsonObject(a.config)) : undefined;
    const r = convertVqganPickle(a.input, a.outdir, { ...(config ? { config } : {}), dtype: a.dtype === 'bf16' ? 'BF16' : 'F32' });
    note(`lwm convert: ${r.tensors} VQGAN tensors (${r.values} values) -> ${a.outdir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } else {
    const r = convertJaxParams(a.input, a.outdir, { config: modelConfig(a), dtype: a.dtype === 'f32' ? 'F32' : 'BF16' });
    note(`lwm convert: ${r.tensors} tensors (${r.scanned ? 'scanned' : 'unscanned'} layers) -> ${a.outdir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }
  process.stdout.write(`${path.resolve(a.outdir)}\n`);
}
