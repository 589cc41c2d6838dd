import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Argv, CommandModule } from 'yargs';
import {
  ChatSession,
  ConfigError,
  detectLaunch,
  documentPrefix,
  initBackend,
  InputError,
  LwmError,
  loadTokenizer,
  MediaEncoder,
  ProcessGroup,
  ringPrefill,
  type ChatMessage,
  type ChatReply,
  type ChatTurnOptions,
  type Sampling,
} from '../../src/index.js';
import { chooseModel, chooseVqgan } from '../modelChoice.js';
import { handle, note } from '../output.js';
import { checkMemory } from './plan.js';
import { repeatedValues } from '../repeatable.js';
import { hideBin } from 'yargs/helpers';
import { launch } from '../../src/distributed/launch.js';

interface ChatArgs {
  model?: string;
  preset?: string;
  dtype?: string;
  'kv-dtype'?: string;
  prompt?: string;
  system?: string;
  file?: string;
  image?: string[];
  video?: string[];
  vqgan?: string;
  fps?: number;
  'max-frames'?: number;
  'codes-cache'?: string;
  'vision-first': boolean;
  'prompt-cache'?: string;
  'max-tokens': number;
  temperature?: number;
  'top-k'?: number;
  'top-p': number;
  'min-p': number;
  'repeat-penalty': number;
  'repeat-last-n': number;
  seed: number;
  stop?: string[];
  truncate: boolean;
  'prefill-chunk': number;
  sp: number;
  'rope-theta'?: number;
  context?: number;
  timings: boolean;
  json: boolean;
  debug?: boolean;
}

export const chatCommand: CommandModule<object, ChatArgs> = {
  command: 'chat',
  describe: 'Chat with a model: interactive, or one question with -p; long documents, images and videos',
  builder: (y: Argv) =>
    y
      .option('model', { alias: 'm', type: 'string', describe: 'Model folder (default: newest ./lwm-out checkpoint, else the random tiny preset)' })
      .option('preset', { type: 'string', describe: 'Random-weight model of a preset' })
      .option('dtype', { type: 'string', default: 'auto', choices: ['auto', 'f32', 'bf16', 'int8'], describe: 'Linear weights in float32, bf16 or int8 (auto: f32 unless that takes over half the memory)' })
      .option('kv-dtype', { type: 'string', default: 'f32', choices: ['f32', 'bf16'], describe: 'KV cache in float32 or bf16 (half the memory per token of context)' })
      .option('prompt', { alias: 'p', type: 'string', describe: 'Ask one question, print the answer and exit' })
      .option('system', { type: 'string', describe: 'System text (default LWM\'s "You are a helpful assistant.")' })
      .option('file', { alias: 'f', type: 'string', describe: 'A text document placed before the first question' })
      .option('image', { type: 'string', array: true, describe: 'Image file(s) for the first question' })
      .option('video', { type: 'string', array: true, describe: 'Video file(s) for the first question' })
      .option('vqgan', { type: 'string', describe: 'VQGAN folder (default: the model folder\'s vqgan/)' })
      .option('fps', { type: 'number', describe: 'Video frames per second to take (default: LWM\'s 8 frames spread over the clip)' })
      .option('max-frames', { type: 'number', describe: 'At most N video frames, spread uniformly (LWM default 8)' })
      .option('codes-cache', { type: 'string', describe: 'Folder for cached VQGAN codes (default $LWM_CACHE_DIR or ~/.cache/lwm, then codes/)' })
      .option('vision-first', { type: 'boolean', default: false, describe: 'Put images/videos before the question (lets --prompt-cache reuse a video for any question; LWM\'s chat puts the question first)' })
      .option('prompt-cache', { type: 'string', describe: 'File for the encoded first prompt (KV cache): reused when the next prompt starts the same' })
      .option('max-tokens', { alias: 'n', type: 'number', default: 512, describe: 'New tokens per answer at most' })
      .option('temperature', { type: 'number', describe: '0 = greedy (default for text; 0.2 with images/videos, as LWM)' })
      .option('top-k', { type: 'number', describe: 'Keep the k most likely tokens (default 0 = all; 50 with images/videos, as LWM)' })
      .option('top-p', { type: 'number', default: 1, describe: 'Nucleus sampling mass (1 = off)' })
      .option('min-p', { type: 'number', default: 0, describe: 'Drop tokens below min-p x the top probability (0 = off)' })
      .option('repeat-penalty', { type: 'number', default: 1, describe: 'Penalise recent tokens (1 = off; 1.1 is common)' })
      .option('repeat-last-n', { type: 'number', default: 64, describe: 'Tokens the repeat penalty looks back over' })
      .option('seed', { type: 'number', default: 0, describe: 'Sampling seed' })
      .option('stop', { type: 'string', array: true, describe: 'Stop the answer where this text appears (repeatable)' })
      .option('truncate', { type: 'boolean', default: false, describe: 'Cut an over-long document to fit the context instead of refusing' })
      .option('prefill-chunk', { type: 'number', default: 512, describe: 'Prompt tokens per forward pass (bounds memory for long prompts)' })
      .option('sp', { type: 'number', default: 1, describe: 'Prefill the --file document with RingAttention over N processes (started here unless under a launcher); rank 0 then answers' })
      .option('rope-theta', { type: 'number', describe: "Override the model's RoPE theta" })
      .option('context', { type: 'number', describe: "Override the model's context length (max_sequence_length)" })
      .option('timings', { type: 'boolean', default: false, describe: 'Print prompt and generation speed to stderr after each answer' })
      .option('json', { type: 'boolean', default: false, describe: 'Print one JSON object per answer instead of streaming text' })
      .example('$0 chat', 'Interactive chat (the newest ./lwm-out checkpoint, or the random tiny model)')
      .example('$0 chat -m ./LWM-Text-Chat-1M -f book.txt --prompt-cache book.kv -p "Who is the narrator?"', 'Question over a long document, encoded once')
      .example('$0 chat -m ./LWM-Chat-1M --video clip.mp4 -p "What happens in the video?"', 'Video question (codes cached for later runs)') as unknown as Argv<ChatArgs>,
  handler: handle<ChatArgs>('chat', runChat),
};

function checkArgs(a: ChatArgs): void {
  for (const k of ['max-tokens', 'seed', 'prefill-chunk', 'repeat-last-n'] as const) {
    if (!Number.isInteger(a[k]) || a[k] < 0) throw new InputError(`--${k} must be a non-negative integer, got ${a[k]}`);
  }
  if (a['prefill-chunk'] < 1) throw new InputError('--prefill-chunk must be at least 1');
  if (a.fps !== undefined && a['max-frames'] !== undefined) throw new InputError('give --fps or --max-frames, not both');
  if (a.fps !== undefined && !(a.fps > 0)) throw new InputError(`--fps must be > 0, got ${a.fps}`);
  if (a['max-frames'] !== undefined && !(Number.isInteger(a['max-frames']) && a['max-frames'] > 0)) throw new InputError(`--max-frames must be a positive integer, got ${a['max-frames']}`);
  if (a.file !== undefined && !fs.existsSync(a.file)) throw new InputError(`--file ${a.file}: no such file`);
  if (!Number.isInteger(a.sp) || a.sp < 1) throw new InputError(`--sp must be a positive integer, got ${a.sp}`);
  if (a.sp > 1 && a.file === undefined) throw new InputError('--sp N prefills a long --file document over N processes; give --file');
  if (a.sp > 1 && (a.image?.length || a.video?.length)) throw new InputError('--sp prefills a text document; ask about images and videos without --sp');
  if (a.sp > 1 && a.truncate) throw new InputError('--sp cannot be combined with --truncate; shorten the document or raise --context');
  for (const f of [...(a.image ?? []), ...(a.video ?? [])]) if (!fs.existsSync(f)) throw new InputError(`${f}: no such image or video file`);
}

async function runChat(args: ChatArgs): Promise<void> {
  const a: ChatArgs = { ...args, stop: repeatedValues('stop') ?? args.stop, image: repeatedValues('image') ?? args.image, video: repeatedValues('video') ?? args.video };
  checkArgs(a);
  const context = await checkMemory('chat', { model: a.model, preset: a.preset, flags: a, context: a.context, sp: a.sp, prefillChunk: a['prefill-chunk'], hint: 'pass a lower --context' });
  const launched = detectLaunch();
  if (a.sp > 1 && launched.size === 1) {
    // Rank 0 talks to the user (stdin, stdout); the others only help with the prefill.
    const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'lwm.js');
    const r = await launch({ nprocs: a.sp, command: [process.execPath, cli, ...hideBin(process.argv)], forwardSignals: true, interactiveRank: 0 });
    process.exitCode = r.code;
    return;
  }
  if (a.sp > 1 && launched.size !== a.sp) throw new ConfigError(`--sp ${a.sp} but the launcher started ${launched.size} ranks; make them equal`);
  await initBackend();
  const choice = chooseModel('chat', { model: a.model, preset: a.preset, dtype: a.dtype, kvDtype: a['kv-dtype'], ropeTheta: a['rope-theta'], context });
  // The conversation's cache is allocated once for the context the memory plan accepted.
  choice.model.kvCapacity = choice.model.config.maxSeqLen;
  const vqgan = chooseVqgan(a.vqgan, choice.dir);
  const sampling: Sampling = a.fps !== undefined ? { fps: a.fps } : { maxFrames: a['max-frames'] ?? 8 };
  const media = vqgan ? new MediaEncoder({ vqgan, cacheDir: a['codes-cache'], sampling }) : undefined;
  const tok = loadTokenizer(choice.dir);
  const session = new ChatSession(choice.model, tok, { system: a.system, visionFirst: a['vision-first'], media, prefillChunk: a['prefill-chunk'], promptCache: a['prompt-cache'] });
  const document = a.file !== undefined ? fs.readFileSync(a.file, 'utf8') : undefined;
  try {
    if (a.sp > 1) {
      const group = await ProcessGroup.init();
      try {
        const prefix = documentPrefix(tok, document!, { system: a.system });
        const t0 = performance.now();
        const cache = await ringPrefill(choice.model, group, prefix.tokens);
        if (!cache) return;
        session.adoptCache(cache, prefix);
        if (a.timings) note(`document: ${prefix.tokens.length} tokens prefilled over ${a.sp} processes in ${(performance.now() - t0).toFixed(0)} ms (${((prefix.tokens.length * 1000) / (performance.now() - t0)).toFixed(1)} tok/s)`);
      } finally {
        await group.close();
      }
    }
    const first: Omit<ChatMessage, 'text'> = { document, images: a.image, videos: a.video };
    if (a.prompt !== undefined) await turn(session, { ...first, text: a.prompt }, a);
    else await repl(session, first, a);
  } finally {
    session.dispose();
    media?.dispose();
    choice.model.dispose();
  }
}

/** LWM's vision chat samples (temperature 0.2, top-k 50); text chat is greedy. Explicit flags win. */
function turnOptions(a: ChatArgs, msg: ChatMessage, signal?: AbortSignal): ChatTurnOptions {
  const vision = (msg.images?.length ?? 0) + (msg.videos?.length ?? 0) > 0;
  return {
    maxTokens: a['max-tokens'],
    temperature: a.temperature ?? (vision ? 0.2 : 0),
    topK: a['top-k'] ?? (vision ? 50 : 0),
    topP: a['top-p'],
    minP: a['min-p'],
    repeatPenalty: a['repeat-penalty'],
    repeatLastN: a['repeat-last-n'],
    seed: a.seed,
    stop: a.stop,
    truncate: a.truncate,
    signal,
    onProgress: (e) => {
      if (e.stage === 'encode' && process.stderr.isTTY) process.stderr.write(`\rencoding ${e.file}: ${e.frames} frames`);
    },
  };
}

async function turn(session: ChatSession, msg: ChatMessage, a: ChatArgs, signal?: AbortSignal): Promise<ChatReply> {
  const it = session.send(msg, turnOptions(a, msg, signal));
  let r = await it.next();
  while (!r.done) {
    if (!a.json) process.stdout.write(r.value);
    r = await it.next();
  }
  const reply = r.value;
  if (reply.truncatedTokens) note(`lwm chat: cut ${reply.truncatedTokens} tokens from the end of the document to fit the context`);
  if (a.json) process.stdout.write(JSON.stringify(replyJson(reply)) + '\n');
  else process.stdout.write('\n');
  if (a.timings) note(timingLine(reply));
  return reply;
}

function replyJson(r: ChatReply): Record<string, unknown> {
  return {
    text: r.text,
    tokens: r.tokens,
    stopped_by: r.stoppedBy,
    usage: { prompt_tokens: r.promptTokens, completion_tokens: r.tokens.length, reused_prompt_tokens: r.reusedTokens, truncated_document_tokens: r.truncatedTokens },
    media: r.media.map((m) => ({ file: m.file, kind: m.kind, frames: m.frames, cached: m.cached, ms: Math.round(m.ms) })),
    timings: { prompt_ms: round(r.timings.promptMs), generate_ms: round(r.timings.generateMs) },
  };
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

export function timingLine(r: ChatReply): string {
  const run = r.promptTokens - r.reusedTokens;
  const pps = (run * 1000) / Math.max(r.timings.promptMs, 1e-3);
  const gen = r.tokens.length > 1 ? ((r.tokens.length - 1) * 1000) / r.timings.generateMs : 0;
  const reused = r.reusedTokens ? ` (${r.reusedTokens} already cached)` : '';
  return `prompt: ${r.promptTokens} tokens${reused}, ${pps.toFixed(1)} tok/s, time to first token ${r.timings.promptMs.toFixed(0)} ms | generated: ${r.tokens.length} tokens, ${gen.toFixed(1)} tok/s`;
}

const HELP = 'commands: /image FILE, /video FILE, /file FILE (attach to the next question), /reset (new conversation), /exit';

/**
 * One question per line. Works the same on a terminal and on piped stdin (then no prompt is
 * shown). Ctrl-C stops the answer being generated; a second Ctrl-C, /exit or end of input quits.
 */
async function repl(session: ChatSession, first: Omit<ChatMessage, 'text'>, a: ChatArgs): Promise<void> {
  const tty = Boolean(process.stdin.isTTY);
  const rl = readline.createInterface({ input: process.stdin, output: tty ? process.stdout : undefined, terminal: tty });
  let attach: Omit<ChatMessage, 'text'> = { ...first };
  let current: AbortController | null = null;
  const onSigint = (): void => {
    if (current && !current.signal.aborted) current.abort();
    else rl.close();
  };
  process.on('SIGINT', onSigint);
  rl.on('SIGINT', onSigint);
  if (tty) note(`lwm chat: type a question and press Enter; ${HELP}`);
  const prompt = (): void => {
    if (tty) rl.prompt();
  };
  rl.setPrompt('> ');
  prompt();
  try {
    for await (const raw of rl) {
      const line = raw.trim();
      if (line === '') {
        prompt();
        continue;
      }
      if (line.startsWith('/')) {
        const [cmd, ...rest] = line.split(/\s+/);
        const arg = rest.join(' ');
        if (cmd === '/exit' || cmd === '/quit') break;
        try {
          if (cmd === '/reset') {
            session.reset();
            attach = {};
            note('lwm chat: new conversation');
          } else if (cmd === '/image' || cmd === '/video' || cmd === '/file') {
            if (!arg || !fs.existsSync(arg)) throw new InputError(`${cmd}: no such file '${arg}'`);
            if (cmd === '/file') attach = { ...attach, document: fs.readFileSync(arg, 'utf8') };
            else if (cmd === '/image') attach = { ...attach, images: [...(attach.images ?? []), arg] };
            else attach = { ...attach, videos: [...(attach.videos ?? []), arg] };
            note(`lwm chat: ${arg} will go with the next question`);
          } else if (cmd === '/help') note(HELP);
          else throw new InputError(`unknown command ${cmd}; ${HELP}`);
        } catch (e) {
          reportTurnError(e);
        }
        prompt();
        continue;
      }
      current = new AbortController();
      try {
        await turn(session, { ...attach, text: line }, a, current.signal);
        attach = {};
      } catch (e) {
        reportTurnError(e);
      } finally {
        current = null;
      }
      prompt();
    }
  } finally {
    process.off('SIGINT', onSigint);
    rl.close();
  }
}

/** In the REPL a bad question is reported and the chat goes on; the process still ends non-zero. */
function reportTurnError(e: unknown): void {
  const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
  process.stderr.write(`lwm chat: error: ${msg}\n`);
  if (!(e instanceof LwmError)) throw e;
  process.exitCode = 1;
}
