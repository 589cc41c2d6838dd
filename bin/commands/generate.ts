import * as os from 'node:os';
import type { Argv, CommandModule } from 'yargs';
import {
  createModel,
  generate,
  InputError,
  initBackend,
  loadModel,
  loadTokenizer,
  paramCount,
  presetConfig,
  TokenStreamDecoder,
  type LlamaModel,
} from '../../src/index.js';
import { handle, note } from '../output.js';

interface GenerateArgs {
  model?: string;
  preset?: string;
  prompt?: string;
  'prompt-tokens'?: string;
  'max-tokens': number;
  temperature: number;
  'top-k': number;
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
  describe: 'Continue a prompt (text or token ids) with greedy or sampled decoding',
  builder: (y: Argv) =>
    y
      .option('model', { alias: 'm', type: 'string', describe: 'Model folder (config.json + *.safetensors)' })
      .option('preset', { type: 'string', describe: "Random-weight model of a preset (default 'tiny' when no --model)" })
      .option('prompt', { alias: 'p', type: 'string', describe: 'Prompt text' })
      .option('prompt-tokens', { type: 'string', describe: 'Prompt as comma-separated token ids (no BOS added)' })
      .option('max-tokens', { alias: 'n', type: 'number', default: 64, describe: 'New tokens at most' })
      .option('temperature', { type: 'number', default: 0, describe: '0 = greedy' })
      .option('top-k', { type: 'number', default: 0, describe: 'Keep the k most likely tokens (0 = all)' })
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
      .example('$0 generate -p "Once upon a time"', 'Built-in tiny model (random weights)')
      .example('$0 generate -m ./LWM-Text-Chat-128K -p "The capital of France is" -n 16', 'Greedy continuation')
      .example('$0 generate -m ./model --prompt-tokens 1,450,4996 --top-logprobs 5 --echo --json', 'Scores as JSON') as unknown as Argv<GenerateArgs>,
  handler: handle<GenerateArgs>('generate', runGenerate),
};

async function runGenerate(args: GenerateArgs): Promise<void> {
  if ((args.prompt === undefined) === (args['prompt-tokens'] === undefined)) {
    throw new InputError('give exactly one of -p/--prompt TEXT or --prompt-tokens IDS');
  }
  for (const k of ['max-tokens', 'top-k', 'top-logprobs', 'seed'] as const) {
    if (!Number.isInteger(args[k]) || args[k] < 0) throw new InputError(`--${k} must be a non-negative integer, got ${args[k]}`);
  }
  if (args.model && args.preset) throw new InputError('give either --model or --preset, not both');
  await initBackend();
  const model = openModel(args);
  try {
    const tok = loadTokenizer(args.model);
    const prompt = args['prompt-tokens'] !== undefined ? parseTokenIds(args['prompt-tokens']) : tok.encode(args.prompt!, { bos: args.bos });
    const stream = args.json ? null : new TokenStreamDecoder(tok);
    if (stream && args.echo) process.stdout.write(tok.decode(prompt));
    const r = await generate(model, prompt, {
      maxTokens: args['max-tokens'],
      temperature: args.temperature,
      topK: args['top-k'],
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

function openModel(args: GenerateArgs): LlamaModel {
  const theta = args['rope-theta'];
  if (args.model) return loadModel(args.model, theta !== undefined ? { ropeTheta: theta } : {});
  const preset = args.preset ?? 'tiny';
  if (!args.preset) note("lwm generate: no --model given, using the built-in 'tiny' preset with random weights (its output is noise); pass --model DIR for a real model");
  const config = presetConfig(preset, theta !== undefined ? { ropeTheta: theta } : {});
  const bytes = paramCount(config) * 4;
  if (bytes > os.totalmem() * 0.7) {
    throw new InputError(`random '${preset}' weights need ${(bytes / 2 ** 30).toFixed(1)} GiB in float32, more than this machine's ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB allows; use a smaller preset`);
  }
  return createModel(preset, { overrides: theta !== undefined ? { ropeTheta: theta } : {} });
}

export function parseTokenIds(text: string): number[] {
  const parts = text.split(/[\s,]+/).filter((s) => s.length > 0);
  return parts.map((s) => {
    if (!/^\d+$/.test(s)) throw new InputError(`--prompt-tokens: '${s}' is not a token id (expected comma-separated non-negative integers)`);
    return Number(s);
  });
}
