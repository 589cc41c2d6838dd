import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { fromHfConfig, InputError, vqganConfigFromJson } from '../../src/index.js';
import { convertVqganPickle } from '../../src/convert/vqganPickle.js';
import { detectFormat, openModelSource } from '../../src/convert/open.js';
import { outputBytes, writeModelFolder } from '../../src/convert/output.js';
import { resolveHfCache } from '../../src/convert/hfCache.js';
import { readJsonObject } from '../../src/checkpoint/modelDir.js';
import { removeStaleTemporaries } from '../../src/checkpoint/files.js';
import { writeGgufFrom } from '../../src/checkpoint/gguf.js';
import { storedDtype } from '../../src/checkpoint/source.js';
import type { StorageDtype } from '../../src/checkpoint/dtype.js';
import { ByteProgress, byteSize } from '../progress.js';
import { handle, note } from '../output.js';

interface ConvertArgs {
  input?: string;
  outdir?: string;
  from: string;
  to: string;
  'from-hf-cache'?: string;
  revision?: string;
  preset?: string;
  config?: string;
  theta?: number;
  'max-len'?: number;
  dtype?: string;
  'text-only'?: boolean;
  verify: boolean;
  progress: boolean;
  debug?: boolean;
}

const DTYPES: Readonly<Record<string, StorageDtype>> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

export const convertCommand: CommandModule<object, ConvertArgs> = {
  command: 'convert [input] [outdir]',
  describe: "Convert LWM's Jax params, Hugging Face folders (.bin or safetensors) or the vqgan pickle; export to Hugging Face or GGUF. No Python",
  builder: (y: Argv) =>
    y
      .positional('input', { type: 'string', describe: 'A Jax params file (or its folder), a Hugging Face/lwm model folder, or the vqgan pickle' })
      .positional('outdir', { type: 'string', describe: 'New folder for the converted model (a .gguf file with --to gguf)' })
      .option('from', { type: 'string', default: 'auto', choices: ['auto', 'jax', 'hf', 'vqgan'], describe: 'Input format (auto: by content)' })
      .option('to', { type: 'string', default: 'lwm', choices: ['lwm', 'hf', 'gguf'], describe: 'lwm folder, Hugging Face LlamaForCausalLM folder, or a GGUF file for llama.cpp' })
      .option('from-hf-cache', { type: 'string', describe: 'Read a model already downloaded by huggingface_hub, e.g. LargeWorldModel/LWM-Text-Chat-1M (then the only positional is the output)' })
      .option('revision', { type: 'string', describe: 'With --from-hf-cache: a branch, tag or commit (default main)' })
      .option('preset', { type: 'string', describe: 'Architecture of a Jax file, e.g. LWM-Text-Chat-1M (sets theta and length), 7b, 7b-vision; default: the release its path names' })
      .option('config', { type: 'string', describe: 'config.json with the architecture (Hugging Face keys) instead of --preset' })
      .option('theta', { type: 'number', describe: 'RoPE theta (Jax files do not store it)' })
      .option('max-len', { type: 'number', describe: 'Context length (max_position_embeddings)' })
      .option('dtype', { type: 'string', choices: ['bf16', 'f16', 'f32'], describe: 'Stored weight type (default: as the source stores it; f32 for the VQGAN)' })
      .option('text-only', { type: 'boolean', describe: 'Drop the vision embedding and head (needed for --to hf of a vision model)' })
      .option('verify', { type: 'boolean', default: true, describe: 'Read every written tensor back and compare its sha256 (--no-verify skips it)' })
      .option('progress', { type: 'boolean', default: true, describe: 'Progress bar with bytes/s on stderr (--no-progress hides it)' })
      .example('$0 convert ./LWM-Text-Chat-1M-Jax/params ./LWM-Text-Chat-1M', 'Jax params to a model folder (architecture from the path; or --preset)')
      .example('$0 convert ./LWM-Text-Chat-1M ./LWM-Text-Chat-1M-lwm', 'A PyTorch .bin release folder (config.json + shards)')
      .example('$0 convert --from-hf-cache LargeWorldModel/LWM-Text-Chat-1M ./lwm-text-chat.gguf --to gguf', 'A downloaded model to GGUF for llama.cpp')
      .example('$0 convert ./LWM-Chat-1M-Jax/vqgan ./LWM-Chat-1M/vqgan', 'The VQGAN pickle to a VQGAN folder') as unknown as Argv<ConvertArgs>,
  handler: handle<ConvertArgs>('convert', runConvert),
};

/** Input and output paths: two positionals, or one (the output) with --from-hf-cache. */
function paths(a: ConvertArgs): { input: string; out: string; revision?: string } {
  if (a['from-hf-cache'] !== undefined) {
    if (a.outdir !== undefined) throw new InputError('with --from-hf-cache give only the output path (the input is the cached snapshot)');
    if (a.input === undefined) throw new InputError('give the output path after --from-hf-cache REPO');
    const r = resolveHfCache(a['from-hf-cache'], a.revision !== undefined ? { revision: a.revision } : {});
    note(`lwm convert: ${a['from-hf-cache']} @ ${r.revision} from ${r.dir}`);
    return { input: r.dir, out: a.input };
  }
  if (a.revision !== undefined) throw new InputError('--revision goes with --from-hf-cache');
  if (a.input === undefined || a.outdir === undefined) throw new InputError('give the input and the output: lwm convert <input> <outdir> (or --from-hf-cache REPO <outdir>)');
  return { input: a.input, out: a.outdir };
}

function checkOutput(out: string, to: string): void {
  if (to === 'gguf') {
    if (fs.existsSync(out)) throw new InputError(`${out} exists; choose a new .gguf path (lwm never overwrites a model)`);
    if (!fs.existsSync(path.dirname(path.resolve(out)))) throw new InputError(`${out}: the folder ${path.dirname(path.resolve(out))} does not exist`);
  } else if (fs.existsSync(out) && (!fs.statSync(out).isDirectory() || fs.readdirSync(out).length > 0)) {
    throw new InputError(`${out} exists and is not an empty folder; choose a new output folder`);
  }
}

async function runConvert(a: ConvertArgs): Promise<void> {
  const { input, out } = paths(a);
  if (!fs.existsSync(input)) throw new InputError(`${input}: no such file or folder`);
  checkOutput(out, a.to);
  const detected = detectFormat(input);
  const from = a.from === 'auto' ? detected.format : a.from;
  const t0 = performance.now();
  const seconds = () => ((performance.now() - t0) / 1000).toFixed(1);
  if (from === 'vqgan') {
    if (a.to !== 'lwm') throw new InputError(`--to ${a.to} is for language models; the VQGAN converts to an lwm VQGAN folder only`);
    const config = a.config ? vqganConfigFromJson(readJsonObject(a.config)) : undefined;
    const file = fs.statSync(input).isDirectory() ? path.join(input, 'vqgan') : input;
    const r = convertVqganPickle(file, out, { ...(config ? { config } : {}), dtype: a.dtype === 'bf16' ? 'BF16' : 'F32', verify: a.verify });
    note(`lwm convert: ${r.tensors} VQGAN tensors (${r.values} values) -> ${out} in ${seconds()} s${a.verify ? '; every tensor read back and matched (sha256)' : ''}`);
    process.stdout.write(`${path.resolve(out)}\n`);
    return;
  }
  if (a.config !== undefined && !fs.existsSync(a.config)) throw new InputError(`--config ${a.config}: no such file`);
  const src = openModelSource(from === 'jax' ? detected.file : input, from as 'jax' | 'hf', {
    ...(a.preset !== undefined ? { preset: a.preset } : {}),
    ...(a.config !== undefined ? { config: fromHfConfig(readJsonObject(a.config), a.config) } : {}),
    ...(a.theta !== undefined ? { ropeTheta: a.theta } : {}),
    ...(a['max-len'] !== undefined ? { maxSeqLen: a['max-len'] } : {}),
  });
  const dtype = a.dtype ? DTYPES[a.dtype]! : storedDtype(src);
  const total = outputBytes(src, { dtype, textOnly: a['text-only'], gguf: a.to === 'gguf' });
  const bar = new ByteProgress('lwm convert', total, process.stderr, a.progress);
  // Tests kill the process mid-write this way to check that nothing half-written is left.
  const crashAfter = Number(process.env['LWM_TEST_CRASH_IN_CONVERT'] ?? 0);
  let written = 0;
  const onWrite = (n: number) => {
    bar.add(n);
    if (++written === crashAfter) process.kill(process.pid, 'SIGKILL');
  };
  let tensors: number;
  if (a.to === 'gguf') {
    if (a['text-only']) throw new InputError('--text-only is for --to hf/lwm; GGUF export takes text models only');
    removeStaleTemporaries(path.dirname(path.resolve(out)), `${path.basename(out)}.tmp-`);
    writeGgufFrom(src, out, { dtype, onWrite, verify: a.verify });
    tensors = src.tensors.length;
  } else {
    tensors = writeModelFolder(out, src, { layout: a.to as 'lwm' | 'hf', dtype, textOnly: a['text-only'], onWrite, verify: a.verify }).tensors;
  }
  const r = bar.finish();
  note(
    `lwm convert: ${tensors} tensors from ${src.format}, ${byteSize(r.bytes)} ${dtype} -> ${out} (${a.to}) in ${seconds()} s, ${(r.bytesPerS / 1e6).toFixed(1)} MB/s` +
      (a.verify ? '; every tensor read back and matched (sha256)' : ''),
  );
  process.stdout.write(`${path.resolve(out)}\n`);
}
