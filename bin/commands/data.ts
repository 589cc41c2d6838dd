import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { ConfigError, initBackend, InputError, loadTokenizer, modelFingerprint } from '../../src/index.js';
import { endpointGenerator, localGenerator, MAX_REPLY_TOKENS, type QaGenerator } from '../../src/qa/generators.js';
import { QA_DATASET_FILE, QA_STATS_FILE, runQa, type QaProgress } from '../../src/qa/run.js';
import { loadFolder } from '../modelChoice.js';
import { clock, handle, note } from '../output.js';
import { bar, ProgressLine } from '../progress.js';

interface QaArgs {
  docs: string;
  out: string;
  'chunk-tokens': number;
  lengths: string;
  model?: string;
  dtype?: string;
  endpoint?: string;
  'model-name'?: string;
  'api-key'?: string;
  tokenizer?: string;
  parallel: number;
  attempts: number;
  timeout: number;
  'max-tokens': number;
  'server-retries': number;
  mix?: string;
  'mix-ratio': number;
  seed: number;
  progress: boolean;
  json: boolean;
  debug?: boolean;
}

const qaCommand: CommandModule<object, QaArgs> = {
  command: 'qa',
  describe: 'Long-context chat data: chunk long documents, have a model write a question-answer pair per chunk, assemble long examples',
  builder: (y: Argv) =>
    y
      .option('docs', { type: 'string', demandOption: true, describe: 'JSONL of {"text": ...} documents, or a folder of .txt files' })
      .option('out', { alias: 'o', type: 'string', demandOption: true, describe: `Output folder: ${QA_DATASET_FILE} (for lwm train --data), ${QA_STATS_FILE}, cache/` })
      .option('chunk-tokens', { type: 'number', default: 1000, describe: 'Tokens per chunk (whole sentences, at most this many)' })
      .option('lengths', { type: 'string', default: '4096,32768', describe: 'Target example lengths in tokens, comma-separated' })
      .option('model', { alias: 'm', type: 'string', describe: 'Write the pairs with this model folder, in this process' })
      .option('dtype', { type: 'string', describe: 'Weights of --model: auto, f32, bf16 or int8' })
      .option('endpoint', { type: 'string', describe: 'Write the pairs with an OpenAI-compatible server (lwm serve, llama.cpp server, ollama ...), e.g. http://127.0.0.1:8080/v1' })
      .option('model-name', { type: 'string', describe: 'The model name the server expects (with --endpoint)' })
      .option('api-key', { type: 'string', describe: 'Bearer token for the server [default: $OPENAI_API_KEY]' })
      .option('tokenizer', { type: 'string', describe: 'Folder with the tokenizer.json to count tokens with [default: --model\'s, else the LLaMA-2 vocabulary]' })
      .option('parallel', { type: 'number', default: 4, describe: 'Requests to the server at once' })
      .option('attempts', { type: 'number', default: 3, describe: 'Tries per chunk while replies are rejected (malformed, empty, ungrounded), then it is dropped' })
      .option('max-tokens', { type: 'number', default: MAX_REPLY_TOKENS, describe: 'Longest reply, in tokens' })
      .option('timeout', { type: 'number', default: 120, describe: 'Seconds to wait for one reply' })
      .option('server-retries', { type: 'number', default: 4, describe: 'Retries (with backoff) after a network error, timeout, 429 or 5xx before giving up' })
      .option('mix', { type: 'string', describe: 'JSONL of short chat examples to mix in' })
      .option('mix-ratio', { type: 'number', default: 0.3, describe: 'Share of the output that comes from --mix' })
      .option('seed', { type: 'number', default: 0, describe: 'Order of the output and choice of --mix examples' })
      .option('progress', { type: 'boolean', default: true, describe: 'Progress on stderr (--no-progress: off)' })
      .option('json', { type: 'boolean', default: false, describe: 'Print the stats as JSON' })
      .epilogue(
        'Each chunk gets one reply to a fixed prompt asking for "Question: ..." and "Answer: ..." lines; a reply is kept when both are non-empty, the answer has at most 60 words, ' +
          'and at least half of its content words (not function words) occur in the chunk. Rejected replies are retried (sampling at temperature 0.7), then the chunk is dropped and counted. ' +
          'Every chunk\'s outcome is cached under the output folder, keyed by prompt, model and chunk text: a killed run resumes where it stopped and no chunk is asked for twice.',
      )
      .example('$0 data qa --docs books/ --out qa --endpoint http://127.0.0.1:8080/v1 --model-name lwm', 'Pairs from lwm serve (or llama.cpp, ollama)')
      .example('$0 data qa --docs books.jsonl --out qa -m ./LWM-Text-Chat-128K --lengths 32768,131072', 'Pairs from a local model')
      .example('$0 train -m ./LWM-Text-1M --data qa --seq-len 32768', 'Train on the result') as unknown as Argv<QaArgs>,
  handler: handle<QaArgs>('data qa', runQaCommand),
};

export const dataCommand: CommandModule = {
  command: 'data <tool>',
  describe: 'Make training data (qa: model-generated question-answer sets from long documents)',
  builder: (y) => y.command(qaCommand).demandCommand(1, 'give a data tool: qa'),
  handler: () => {},
};

function lengths(s: string): number[] {
  const out = s.split(',').map((x) => Number(x.trim()));
  if (out.some((x) => !Number.isInteger(x) || x < 16)) throw new InputError(`--lengths must be integers >= 16 separated by commas, got '${s}'`);
  return out;
}

async function runQaCommand(a: QaArgs): Promise<void> {
  for (const [k, v] of [['chunk-tokens', a['chunk-tokens']], ['parallel', a.parallel], ['attempts', a.attempts], ['timeout', a.timeout], ['max-tokens', a['max-tokens']]] as const) {
    if (!(Number.isFinite(v) && v > 0)) throw new InputError(`--${k} must be positive, got ${v}`);
  }
  if (!(Number.isInteger(a['server-retries']) && a['server-retries'] >= 0)) throw new InputError(`--server-retries must be a whole number >= 0, got ${a['server-retries']}`);
  if ((a.model === undefined) === (a.endpoint === undefined)) throw new ConfigError('give exactly one of --model DIR (a local model) or --endpoint URL (a server)');
  if (a.endpoint !== undefined && !a['model-name']) throw new ConfigError('--endpoint needs --model-name, the name the server knows the model by (lwm serve: see GET /v1/models)');
  if (a.tokenizer !== undefined && !fs.existsSync(path.join(a.tokenizer, 'tokenizer.json'))) throw new InputError(`--tokenizer ${a.tokenizer}: no tokenizer.json there`);
  const tok = loadTokenizer(a.tokenizer ?? a.model);
  let generator: QaGenerator;
  if (a.model !== undefined) {
    await initBackend();
    const model = loadFolder('data qa', a.model, {}, a.dtype);
    // Cached replies follow the weights (a fingerprint of config and values, as prompt caches
    // use), not the folder's path: another model in a same-named folder does not reuse them.
    generator = localGenerator(model, tok, `${path.basename(path.resolve(a.model))}@${modelFingerprint(model).slice(0, 12)}`, a['max-tokens']);
  } else {
    generator = endpointGenerator(
      { url: a.endpoint!, modelName: a['model-name']!, timeoutMs: a.timeout * 1000, retries: a['server-retries'], apiKey: a['api-key'] ?? process.env['OPENAI_API_KEY'], maxTokens: a['max-tokens'] },
      a.parallel,
    );
  }
  const line = new ProgressLine(process.stderr, a.progress);
  const t0 = performance.now();
  const show = (p: QaProgress): string => {
    const s = (performance.now() - t0) / 1000;
    const fresh = p.done - p.cached;
    const rate = fresh / Math.max(s, 1e-9);
    const eta = rate > 0 ? (p.total - p.done) / rate : NaN;
    return `data qa [${bar(p.done / Math.max(1, p.total))}] ${p.done}/${p.total} chunks ${rate.toFixed(2)}/s, pairs kept ${p.kept}, dropped ${p.dropped}${p.cached ? `, ${p.cached} cached` : ''} ${clock(s)} eta ${clock(eta)}`;
  };
  let last: QaProgress | null = null;
  const stats = await runQa({
    docs: a.docs,
    out: a.out,
    tokenizer: tok,
    generator,
    chunkTokens: a['chunk-tokens'],
    lengths: lengths(a.lengths),
    attempts: a.attempts,
    parallel: a.parallel,
    mix: a.mix,
    mixRatio: a['mix-ratio'],
    seed: a.seed,
    onProgress: (p) => {
      last = p;
      line.update(p.done / Math.max(1, p.total), show(p));
    },
  });
  if (last) line.finish(show(last));
  if (a.json) {
    process.stdout.write(JSON.stringify(stats, null, 2) + '\n');
    return;
  }
  const per = Object.entries(stats.lengths).map(([L, s]) => `${L}: ${s.examples}`).join(', ');
  note(`data qa: ${stats.documents} documents, ${stats.chunks} chunks, pairs kept ${stats.pairs.kept}, dropped ${stats.pairs.dropped}${stats.pairs.dropped ? ` (${Object.entries(stats.pairs.droppedBy).map(([r, n]) => `${r} ${n}`).join(', ')})` : ''}; examples per length ${per}${stats.mix ? `, mixed ${stats.mix.used}` : ''}`);
  process.stdout.write(`${path.join(a.out, QA_DATASET_FILE)}\n`);
}
