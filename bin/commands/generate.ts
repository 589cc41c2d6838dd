import type { Argv, CommandModule } from 'yargs';
import {
  generate,
  InputError,
  initBackend,
  loadTokenizer,
  loadVqgan,
  presetConfig,
  readModelConfig,
  TokenStreamDecoder,
  type LlamaConfig,
  type LlamaModel,
  type Vqgan,
} from '../../src/index.js';
import { generateVisionFile, randomTinyVqgan, resolveVqganDir, checkVisionOutput, type VisionSampling } from '../../src/vision/index.js';
import { handle, note } from '../output.js';
import { checkMemory } from './plan.js';
import { kvDtype, loadFolder, randomModel } from '../modelChoice.js';

interface VisionArgs {
  image?: string;
  video?: string;
  out?: string;
  vqgan?: string;
  frames?: number;
  'cfg-scale'?: number;
  'codes-out'?: string;
}

const visionOptions = {
  image: { type: 'string', describe: 'Generate an image of TEXT (LWM-Chat models; needs --out FILE.png)' },
  video: { type: 'string', describe: 'Generate a video of TEXT: the first frame as an image, then the rest (needs --out FILE.mp4|.png)' },
  out: { type: 'string', describe: 'Output of --image/--video: .png (video frames side by side) or .mp4 (4 fps)' },
  vqgan: { type: 'string', describe: 'lwm-vqgan folder that decodes codes to pixels [default: <model>/vqgan]' },
  frames: { type: 'number', describe: 'Frames of a --video [default: 8]' },
  'cfg-scale': { type: 'number', describe: 'Classifier-free guidance scale [default: --image 5; --video 5 first frame, 1 after]' },
  'codes-out': { type: 'string', describe: 'Also write the generated VQGAN codes and tokens as JSON' },
} as const;

/** Flags of text generation and their defaults: a vision run refuses any that was changed. */
const TEXT_ONLY: readonly [keyof GenerateArgs, unknown][] = [
  ['max-tokens', 64],
  ['top-p', 1],
  ['min-p', 0],
  ['top-logprobs', 0],
  ['echo', false],
  ['bos', true],
  ['ignore-eos', false],
];

interface GenerateArgs extends VisionArgs {
  model?: string;
  preset?: string;
  dtype?: string;
  'kv-dtype'?: string;
  prompt?: string;
  'prompt-tokens'?: string;
  'max-tokens': number;
  /** No yargs default: text falls back to 0, vision to LWM's settings, so explicit values can be told apart. */
  temperature?: number;
  'top-k'?: number;
  'top-p': number;
  'min-p': number;
  seed: number;
  'top-logprobs': number;
  echo: boolean;
  json: boolean;
  bos: boolean;
  'ignore-eos': boolean;
  'rope-theta'?: number;
  timings: boolean;
  debug?: boolean;
}

export const generateCommand: CommandModule<object, GenerateArgs> = {
  command: 'generate',
  describe: 'Continue a prompt (text or token ids) with greedy or sampled decoding, or generate an image or video (--image/--video)',
  builder: (y: Argv) =>
    y
      .option('model', { alias: 'm', type: 'string', describe: 'Model folder (config.json + *.safetensors)' })
      .option('preset', { type: 'string', describe: "Random-weight model of a preset (default when no --model: 'tiny', with --image/--video 'tiny-vision')" })
      .option('dtype', { type: 'string', default: 'auto', choices: ['auto', 'f32', 'bf16', 'int8'], describe: 'Linear weights in float32, bf16 or int8 (auto: f32 unless that takes over half the memory)' })
      .option('kv-dtype', { type: 'string', default: 'f32', choices: ['f32', 'bf16'], describe: 'KV cache in float32 or bf16 (half the memory per token of context)' })
      .option('prompt', { alias: 'p', type: 'string', describe: 'Prompt text' })
      .option('prompt-tokens', { type: 'string', describe: 'Prompt as comma-separated token ids (no BOS added)' })
      .option('max-tokens', { alias: 'n', type: 'number', default: 64, describe: 'New tokens at most' })
      .option('temperature', { type: 'number', describe: '0 = greedy [default: 0; --image/--video: 1]' })
      .option('top-k', { type: 'number', describe: 'Keep the k most likely tokens, 0 = all [default: 0; --image: 8192; --video: 8192 first frame, 1000 after]' })
      .option('top-p', { type: 'number', default: 1, describe: 'Nucleus sampling mass (1 = off)' })
      .option('min-p', { type: 'number', default: 0, describe: 'Drop tokens below min-p x the top probability (0 = off)' })
      .option('seed', { type: 'number', default: 0, describe: 'Sampling seed' })
      .option('top-logprobs', { type: 'number', default: 0, describe: 'Report the K most likely tokens per step (with --json)' })
      .option('echo', { type: 'boolean', default: false, describe: 'Also score every prompt position (prompt_top in --json)' })
      .option('json', { type: 'boolean', default: false, describe: 'Print one JSON object instead of text' })
      .option('bos', { type: 'boolean', default: true, describe: 'Start a text prompt with BOS (--no-bos to omit)' })
      .option('ignore-eos', { type: 'boolean', default: false, describe: 'Keep generating after EOS' })
      .option('rope-theta', { type: 'number', describe: "Override the model's RoPE theta" })
      .option('timings', { type: 'boolean', default: false, describe: 'Print prompt and generation speed to stderr' })
      .options(visionOptions)
      .example('$0 generate -p "Once upon a time"', 'Built-in tiny model (random weights)')
      .example('$0 generate -m ./LWM-Text-Chat-128K -p "The capital of France is" -n 16', 'Greedy continuation')
      .example('$0 generate -m ./model --prompt-tokens 1,450,4996 --top-logprobs 5 --echo --json', 'Scores as JSON')
      .example('$0 generate -m ./LWM-Chat-1M --image "Fireworks over the city" --out fireworks.png', 'Image (VQGAN from ./LWM-Chat-1M/vqgan)')
      .example('$0 generate -m ./LWM-Chat-1M --video "Fireworks over the city" --frames 8 --out fireworks.mp4', 'Video at 4 fps') as unknown as Argv<GenerateArgs>,
  handler: handle<GenerateArgs>('generate', runGenerate),
};

async function runGenerate(args: GenerateArgs): Promise<void> {
  if (args.image !== undefined || args.video !== undefined) return runVision(args);
  if ((args.prompt === undefined) === (args['prompt-tokens'] === undefined)) {
    throw new InputError('give exactly one of -p/--prompt TEXT or --prompt-tokens IDS (or --image/--video TEXT for pixels)');
  }
  for (const k of ['out', 'vqgan', 'frames', 'cfg-scale', 'codes-out'] as const) {
    if (args[k] !== undefined) throw new InputError(`--${k} applies to --image/--video generation, not to text`);
  }
  const temperature = args.temperature ?? 0;
  const topK = args['top-k'] ?? 0;
  for (const [k, v] of [['max-tokens', args['max-tokens']], ['top-k', topK], ['top-logprobs', args['top-logprobs']], ['seed', args.seed]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new InputError(`--${k} must be a non-negative integer, got ${v}`);
  }
  if (args.model && args.preset) throw new InputError('give either --model or --preset, not both');
  await initBackend();
  const tok = loadTokenizer(args.model);
  const prompt = args['prompt-tokens'] !== undefined ? parseTokenIds(args['prompt-tokens']) : tok.encode(args.prompt!, { bos: args.bos });
  await checkMemory('generate', { model: args.model, preset: args.preset ?? (args.model ? undefined : 'tiny'), flags: args, prompt: prompt.length, newTokens: args['max-tokens'], echo: args.echo && args.json, hint: 'shorten the prompt or -n' });
  const model = openModel(args, 'tiny', "no --model given, using the built-in 'tiny' preset with random weights (its output is noise); pass --model DIR for a real model");
  try {
    const stream = args.json ? null : new TokenStreamDecoder(tok);
    if (stream && args.echo) process.stdout.write(tok.decode(prompt));
    const r = await generate(model, prompt, {
      maxTokens: args['max-tokens'],
      temperature,
      topK,
      topP: args['top-p'],
      minP: args['min-p'],
      seed: args.seed,
      topLogprobs: args['top-logprobs'],
      echo: args.echo && args.json,
      stopTokens: args['ignore-eos'] ? [] : [model.config.eosTokenId],
      onStep: stream ? (s) => process.stdout.write(stream.push(s.token)) : undefined,
    });
    const steps = r.steps;
    if (r.stoppedBy === 'context') note(`lwm generate: stopped at the model's context of ${model.config.maxSeqLen} tokens`);
    if (stream) process.stdout.write(stream.flush() + '\n');
    else {
      const out: Record<string, unknown> = {
        prompt,
        tokens: steps.map((s) => s.token),
        text: tok.decode(steps.map((s) => s.token)),
        steps: steps.map((s) => (s.top ? { token: s.token, top: s.top } : { token: s.token })),
        stopped_by: r.stoppedBy,
      };
      if (r.promptTop) out['prompt_top'] = r.promptTop;
      process.stdout.write(JSON.stringify(out) + '\n');
    }
    if (args.timings) {
      const { promptMs, generateMs } = r.timings;
      const gen = steps.length > 1 ? ((steps.length - 1) * 1000) / generateMs : 0;
      note(`prompt: ${prompt.length} tokens, ${((prompt.length * 1000) / promptMs).toFixed(1)} tok/s (time to first token ${promptMs.toFixed(0)} ms) | generated: ${steps.length} tokens, ${gen.toFixed(1)} tok/s`);
    }
  } finally {
    model.dispose();
  }
}

async function runVision(args: GenerateArgs): Promise<void> {
  if (args.image !== undefined && args.video !== undefined) throw new InputError('give either --image or --video, not both');
  const kind = args.image !== undefined ? 'image' : 'video';
  const caption = (args.image ?? args.video)!;
  if (args.prompt !== undefined || args['prompt-tokens'] !== undefined) throw new InputError(`--${kind} cannot be combined with -p/--prompt or --prompt-tokens`);
  for (const [k, dflt] of TEXT_ONLY) {
    if (args[k] !== dflt) throw new InputError(`--${k} applies to text generation, not to --${kind}`);
  }
  if (kind === 'image' && args.frames !== undefined) throw new InputError('--frames applies to --video; an image is one frame');
  const frames = kind === 'video' ? (args.frames ?? 8) : 1;
  if (kind === 'video' && (!Number.isInteger(frames) || frames < 2)) throw new InputError(`--frames must be an integer >= 2 for --video, got ${frames}; use --image for one frame`);
  if (!args.out) throw new InputError(`--${kind} needs --out FILE (${kind === 'image' ? '.png' : '.mp4 or .png'})`);
  checkVisionOutput(args.out, frames);
  if (!Number.isInteger(args.seed) || args.seed < 0) throw new InputError(`--seed must be a non-negative integer, got ${args.seed}`);
  if (args.model && args.preset) throw new InputError('give either --model or --preset, not both');
  // Flags the user gave override LWM's settings in both stages; the others keep LWM's per-stage values.
  const given: Partial<VisionSampling> = {};
  if (args.temperature !== undefined) given.temperature = args.temperature;
  if (args['top-k'] !== undefined) given.topK = args['top-k'];
  if (args['cfg-scale'] !== undefined) given.cfgScale = args['cfg-scale'];
  if (args.model) requireVision(readModelConfig(args.model), args.model);
  const vqganDir = resolveVqganDir(args.model, args.vqgan);
  await initBackend();
  const vqgan: Vqgan = vqganDir ? loadVqgan(vqganDir) : randomTinyVqgan();
  let model: LlamaModel | null = null;
  try {
    model = openModel(args, 'tiny-vision', `no --model given, using the built-in 'tiny-vision' preset with random weights${vqganDir ? '' : ' and a random tiny VQGAN'} (the ${kind} is noise); pass --model DIR for a real LWM-Chat model`, (c, preset) => requireVision(c, `preset '${preset}'`));
    const progress = process.stderr.isTTY && !args.json;
    const r = await generateVisionFile(model, vqgan, {
      prompt: caption,
      frames,
      image: given,
      video: given,
      seed: args.seed,
      tokenizer: loadTokenizer(args.model),
      out: args.out,
      codesOut: args['codes-out'],
      onProgress: progress ? (done, total) => (done % 16 === 0 || done === total) && process.stderr.write(`\rlwm generate: ${done}/${total} tokens${done === total ? '\n' : ''}`) : undefined,
    });
    if (r.clamped > 0) note(`lwm generate: ${r.clamped} sampled code(s) lay past the VQGAN codebook and were clamped to its last entry, as LWM does`);
    if (args.timings) note(`generated ${r.tokens.length} tokens in ${r.seconds.toFixed(1)} s (${(r.tokens.length / r.seconds).toFixed(1)} tok/s)`);
    if (args.json) {
      const out: Record<string, unknown> = { out: r.out, kind, frames: r.frames, tokens: r.tokens.length, seconds: r.seconds, seed: args.seed, format: r.format };
      if (args['codes-out']) out['codes_out'] = args['codes-out'];
      process.stdout.write(JSON.stringify(out) + '\n');
    } else process.stdout.write(`${r.out}\n`);
  } finally {
    model?.dispose();
    vqgan.dispose();
  }
}

function requireVision(c: Readonly<LlamaConfig>, what: string): void {
  if (c.visionVocabSize > 0) return;
  throw new InputError(`${what} is a text model (vision_vocab_size 0); --image/--video need a vision-language model such as LWM-Chat-1M (or --preset tiny-vision)`);
}

/** --model, else random weights of --preset, else of `fallback` (saying so with `fallbackNote`). */
function openModel(args: GenerateArgs, fallback: string, fallbackNote: string, check?: (config: Readonly<LlamaConfig>, preset: string) => void): LlamaModel {
  const model = openModelWeights(args, fallback, fallbackNote, check);
  model.kvDtype = kvDtype(args['kv-dtype']);
  return model;
}

function openModelWeights(args: GenerateArgs, fallback: string, fallbackNote: string, check?: (config: Readonly<LlamaConfig>, preset: string) => void): LlamaModel {
  const theta = args['rope-theta'];
  const overrides = theta !== undefined ? { ropeTheta: theta } : {};
  if (args.model) return loadFolder('generate', args.model, overrides, args.dtype);
  const preset = args.preset ?? fallback;
  const config = presetConfig(preset, overrides);
  check?.(config, preset);
  if (!args.preset) note(`lwm generate: ${fallbackNote}`);
  return randomModel('generate', preset, config, args.dtype);
}

export function parseTokenIds(text: string): number[] {
  const parts = text.split(/[\s,]+/).filter((s) => s.length > 0);
  return parts.map((s) => {
    if (!/^\d+$/.test(s)) throw new InputError(`--prompt-tokens: '${s}' is not a token id (expected comma-separated non-negative integers)`);
    return Number(s);
  });
}
