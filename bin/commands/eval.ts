import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Argv, CommandModule } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ConfigError, detectLaunch, initBackend, InputError, loadTokenizer, ProcessGroup, ringPrefill } from '../../src/index.js';
import { launch } from '../../src/distributed/launch.js';
import { loadHaystack } from '../../data/haystack.js';
import { LWM_NEEDLE_CONTEXTS, LWM_NEEDLE_DEPTHS } from '../../src/eval/needle.js';
import { runRetrievalGrid, type RetrievalResults } from '../../src/eval/run.js';
import { perplexityByPosition } from '../../src/eval/perplexity.js';
import { handle, note } from '../output.js';
import { accuracyGrid, checkCommon, commonOptions, intList, openModel, pct, RoundProgress, writeResults, type CommonEvalArgs } from '../evalCommon.js';
import { videoNeedleCommand } from './evalVideo.js';


interface GridArgs extends CommonEvalArgs {
  context?: string;
  depths?: string;
  rounds: number;
  'max-tokens': number;
  'prefill-chunk': number;
  sp: number;
  needles: number;
  retrieve?: number;
  haystack?: string;
  digits: number;
}

interface PplArgs extends CommonEvalArgs {
  file?: string;
  context?: number;
  'max-windows'?: number;
  chunk: number;
}


function gridOptions(y: Argv, kind: 'needle' | 'passkey'): Argv<GridArgs> {
  const g = commonOptions(y, kind)
    .option('context', { type: 'string', describe: kind === 'needle' ? "Prompt lengths in tokens, comma list (default LWM's round(linspace(1000, 10000, 20)) up to the model's context)" : 'Prompt lengths in tokens, comma list (default 256, 512, ... up to the context, at most 16K)' })
    .option('depths', { type: 'string', describe: kind === 'needle' ? "Needle depths in percent (default LWM's round(linspace(0, 100, 20)))" : 'Passkey depths in percent (default 0, 10, ..., 100)' })
    .option('rounds', { type: 'number', default: kind === 'needle' ? 3 : 1, describe: 'Cases per cell' })
    .option('max-tokens', { type: 'number', default: 32, describe: 'Answer tokens at most (greedy)' })
    .option('prefill-chunk', { type: 'number', default: 512, describe: 'Prompt tokens per forward pass' })
    .option('sp', { type: 'number', default: 1, describe: 'Prefill each prompt with RingAttention over N processes (started here unless under a launcher)' });
  return (kind === 'needle'
    ? g
        .option('needles', { type: 'number', default: 1, describe: "Needles hidden per prompt (above 1: LWM's multi-needle test)" })
        .option('retrieve', { type: 'number', describe: 'Needles asked for (default all)' })
        .option('haystack', { type: 'string', describe: 'Haystack text: .txt, .txt.gz or JSONL of {"text": ...} (default: the King James Bible, shipped)' })
    : g.option('digits', { type: 'number', default: 5, describe: 'Digits of the passkey' })) as unknown as Argv<GridArgs>;
}

const needleCommand: CommandModule<object, GridArgs> = {
  command: 'needle',
  describe: "Needle in a haystack (LWM's protocol): accuracy over context length x depth, JSON and heatmap PNG",
  builder: (y) => gridOptions(y, 'needle'),
  handler: handle<GridArgs>('eval needle', (a) => runGrid(a, 'needle')),
};

const passkeyCommand: CommandModule<object, GridArgs> = {
  command: 'passkey',
  describe: 'Passkey retrieval in repetitive filler: accuracy over context length x depth, JSON and heatmap PNG',
  builder: (y) => gridOptions(y, 'passkey'),
  handler: handle<GridArgs>('eval passkey', (a) => runGrid(a, 'passkey')),
};

/** The shipped text is a million tokens; scoring all of it by default would take hours on a CPU. */
const SHIPPED_TEXT_WINDOWS = 4;

const pplCommand: CommandModule<object, PplArgs> = {
  command: 'ppl',
  describe: 'Perplexity overall and by position (1K, 2K, 4K, ...), JSON and a PNG curve',
  builder: (y) =>
    commonOptions(y, 'ppl')
      .option('file', { alias: 'f', type: 'string', describe: 'Text to score (.txt, .txt.gz or JSONL of {"text": ...}; default: the shipped King James Bible)' })
      .option('context', { type: 'number', describe: "Window in tokens (default: the model's context)" })
      .option('max-windows', { type: 'number', describe: `Score at most this many windows of the text (default: all of --file; ${SHIPPED_TEXT_WINDOWS} of the shipped text)` })
      .option('chunk', { type: 'number', default: 512, describe: 'Tokens per forward pass' }) as unknown as Argv<PplArgs>,
  handler: handle<PplArgs>('eval ppl', runPpl),
};

export const evalCommand: CommandModule = {
  command: 'eval <test>',
  describe: 'Evaluate long-context retrieval and perplexity: needle, passkey, ppl, video-needle',
  builder: (y) => y.command(needleCommand).command(passkeyCommand).command(pplCommand).command(videoNeedleCommand).demandCommand(1, 'give a test: needle, passkey, ppl or video-needle'),
  handler: () => undefined,
};



async function runGrid(a: GridArgs, kind: 'needle' | 'passkey'): Promise<void> {
  checkCommon(a);
  for (const [flag, v, min] of [['rounds', a.rounds, 1], ['max-tokens', a['max-tokens'], 1], ['prefill-chunk', a['prefill-chunk'], 1], ['sp', a.sp, 1], ['needles', a.needles, 1], ['digits', a.digits, 1]] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new InputError(`--${flag} must be an integer of at least ${min}, got ${v}`);
  }
  if (a.haystack !== undefined && !fs.existsSync(a.haystack)) throw new InputError(`--haystack ${a.haystack}: no such file`);
  const launched = detectLaunch();
  if (a.sp > 1 && launched.size === 1) {
    const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'lwm.js');
    const r = await launch({ nprocs: a.sp, command: [process.execPath, cli, ...hideBin(process.argv)], forwardSignals: true });
    process.exitCode = r.code;
    return;
  }
  if (a.sp > 1 && launched.size !== a.sp) throw new ConfigError(`--sp ${a.sp} but the launcher started ${launched.size} ranks; make them equal`);
  const rank0 = launched.rank === 0;
  await initBackend();
  const choice = openModel(`eval ${kind}`, a);
  const tok = loadTokenizer(choice.dir);
  const max = choice.model.config.maxSeqLen;
  const contexts = intList('context', a.context, 16) ?? defaultContexts(kind, max);
  const depths = intList('depths', a.depths, 0, 100) ?? (kind === 'needle' ? [...LWM_NEEDLE_DEPTHS] : [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
  const progress = new RoundProgress(`lwm eval ${kind}`, a.progress && rank0);
  const group = a.sp > 1 ? await ProcessGroup.init() : undefined;
  let r: RetrievalResults;
  try {
    r = await runRetrievalGrid(choice.model, tok, {
      kind,
      contexts,
      depths,
      rounds: a.rounds,
      seed: a.seed,
      maxTokens: a['max-tokens'],
      prefillChunk: a['prefill-chunk'],
      ...(kind === 'needle' ? { needles: a.needles, ...(a.retrieve !== undefined ? { retrieve: a.retrieve } : {}), haystack: loadHaystack(a.haystack !== undefined ? { file: a.haystack } : {}) } : { digits: a.digits }),
      ...(group ? { prefill: (t: readonly number[]) => ringPrefill(choice.model, group, t) } : {}),
      onProgress: (done, total, eta) => progress.update(done, total, eta),
    });
  } finally {
    await group?.close();
    choice.model.dispose();
  }
  if (!rank0) return;
  const rounds = r.cells.reduce((s, c) => s + c.rounds.length, 0);
  progress.finish(rounds, rounds, `overall ${pct(r.overall)}`);
  const multi = r.config.needles > 1;
  const ys = multi ? [null] : r.config.depths;
  const title = `${kind === 'needle' ? (multi ? `Multi-needle (${r.config.retrieve} of ${r.config.needles})` : 'Needle in a haystack') : 'Passkey retrieval'}: ${choice.name}, ${pct(r.overall)} of ${rounds} rounds`;
  const files = await writeResults(a.out, kind, { test: kind, model: choice.name, modelDir: choice.dir ?? null, tokenizer: tok.source, maxSeqLen: max, ropeTheta: choice.model.config.ropeTheta, ...r }, {
    heatmap: {
      title,
      xLabel: 'Context length (tokens)',
      yLabel: multi ? '' : 'Depth (%)',
      xTicks: r.config.contexts,
      yTicks: multi ? ['all'] : r.config.depths,
      values: accuracyGrid(r.cells, r.config.contexts, ys, (c) => c.context),
      legendLabel: 'Accuracy',
    },
  });
  note(`lwm eval ${kind}: overall ${pct(r.overall)}; by context ${r.accuracyByContext.map((c) => `${c.context}: ${pct(c.accuracy)}`).join(', ')}`);
  note(`lwm eval ${kind}: wrote ${files.json} and ${files.png}`);
  if (a.json) process.stdout.write(JSON.stringify(r) + '\n');
}

/** Needle: LWM's grid points the model can take; passkey: powers of two from 256. */
function defaultContexts(kind: 'needle' | 'passkey', max: number): number[] {
  const all = kind === 'needle' ? [...LWM_NEEDLE_CONTEXTS] : [256, 512, 1024, 2048, 4096, 8192, 16384];
  const fit = all.filter((c) => c <= max);
  if (fit.length === 0) throw new InputError(`the model's context is ${max} tokens, shorter than every default --context (${all[0]}+); give --context with smaller lengths`);
  return fit;
}

async function runPpl(a: PplArgs): Promise<void> {
  checkCommon(a);
  if (a.file !== undefined && !fs.existsSync(a.file)) throw new InputError(`--file ${a.file}: no such file`);
  if (a.context !== undefined && !(Number.isInteger(a.context) && a.context >= 2)) throw new InputError(`--context must be an integer of at least 2, got ${a.context}`);
  if (a['max-windows'] !== undefined && !(Number.isInteger(a['max-windows']) && a['max-windows'] >= 1)) throw new InputError(`--max-windows must be a positive integer, got ${a['max-windows']}`);
  if (!(Number.isInteger(a.chunk) && a.chunk >= 1)) throw new InputError(`--chunk must be a positive integer, got ${a.chunk}`);
  await initBackend();
  const choice = openModel('eval ppl', a);
  const tok = loadTokenizer(choice.dir);
  const text = loadHaystack(a.file !== undefined ? { file: a.file } : {});
  const window = a.context ?? choice.model.config.maxSeqLen;
  // Only as much text as the windows need is encoded (the shipped text is a million tokens).
  const maxWindows = a['max-windows'] ?? (a.file === undefined ? SHIPPED_TEXT_WINDOWS : undefined);
  const need = maxWindows !== undefined ? maxWindows * window : Infinity;
  const tokens = tok.encode(need === Infinity ? text : text.slice(0, Math.min(text.length, need * 8)));
  const progress = new RoundProgress('lwm eval ppl', a.progress);
  const t0 = performance.now();
  let r;
  try {
    r = await perplexityByPosition(choice.model, tokens, {
      window,
      bos: tok.bosId,
      chunk: a.chunk,
      ...(maxWindows !== undefined ? { maxWindows } : {}),
      onProgress: (done, total) => {
        const s = (performance.now() - t0) / 1000;
        progress.update(done, total, (s * (total - done)) / Math.max(1, done));
      },
    });
  } finally {
    choice.model.dispose();
  }
  progress.finish(r.scored, r.scored, `ppl ${r.ppl.toFixed(3)}`);
  const files = await writeResults(a.out, 'ppl', { test: 'ppl', model: choice.name, modelDir: choice.dir ?? null, file: a.file ?? 'shipped:kjv', tokenizer: tok.source, ...r }, {
    line: {
      title: `Perplexity by position: ${choice.name}, ${r.windows} x ${r.windowTokens} tokens, overall ${r.ppl.toFixed(2)}`,
      xLabel: 'Position (bucket end, tokens)',
      yLabel: 'Perplexity',
      series: [{ name: choice.name, points: r.buckets.filter((b) => b.tokens > 0).map((b) => [b.end, b.ppl] as const) }],
      logX: true,
    },
  });
  note(`lwm eval ppl: ${r.ppl.toFixed(3)} over ${r.scored} tokens; by position ${r.buckets.map((b) => `[${b.start}, ${b.end}): ${b.ppl.toFixed(2)}`).join(', ')}`);
  note(`lwm eval ppl: wrote ${files.json} and ${files.png}`);
  if (a.json) process.stdout.write(JSON.stringify(r) + '\n');
}
