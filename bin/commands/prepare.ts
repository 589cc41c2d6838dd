import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import {
  ConfigError,
  initBackend,
  loadTokenizer,
  prepareDataset,
  prepareStats,
  writePreview,
  type LossWeighting,
  type PrepareEvent,
  type PreparedStats,
  type Sampling,
} from '../../src/index.js';
import { clock, handle, note } from '../output.js';

interface PrepareArgs {
  manifest: string;
  out?: string;
  vqgan?: string;
  fps?: number;
  'max-frames'?: number;
  'all-frames': boolean;
  'seq-len': number;
  fields?: string;
  weighting: string;
  'vision-weight'?: number;
  'batch-rows': number;
  packing: string;
  tokenizer?: string;
  cache?: string;
  'skip-bad': boolean;
  'allow-outside-paths': boolean;
  overwrite: boolean;
  stats: boolean;
  preview?: string;
  json: boolean;
  debug?: boolean;
}

const DEFAULT_MAX_FRAMES = 8;

export const prepareCommand: CommandModule<object, PrepareArgs> = {
  command: 'prepare <manifest>',
  describe: 'Turn a JSONL manifest of text, images and videos into VQGAN codes, token shards and packed, loss-weighted rows',
  builder: (y: Argv) =>
    y
      .positional('manifest', { type: 'string', demandOption: true, describe: 'JSONL file: one example per line; vision paths are relative to it' })
      .option('out', { alias: 'o', type: 'string', describe: 'Output folder (prepare.json, tokens/, rows/, cache/)' })
      .option('vqgan', { type: 'string', describe: 'VQGAN folder (config.json + model.safetensors); needed for images and videos' })
      .option('fps', { type: 'number', describe: 'Sample videos at this rate (frames per second)' })
      .option('max-frames', { type: 'number', describe: `At most N frames per video, chosen uniformly like LWM (default ${DEFAULT_MAX_FRAMES})` })
      .option('all-frames', { type: 'boolean', default: false, describe: 'Encode every frame of every video' })
      .option('seq-len', { type: 'number', default: 4096, describe: 'Tokens per packed row' })
      .option('fields', { type: 'string', describe: 'Fields spec for every line, e.g. "[vision+question],answer" (default: the line\'s "fields", else inferred)' })
      .option('weighting', { type: 'string', choices: ['lwm', 'lwm-text', 'token', 'mask'], default: 'lwm', describe: 'Loss weights: lwm = 0.5 vision + 0.5 text per row; token = per-token mean' })
      .option('vision-weight', { type: 'number', describe: 'With --weighting token: weight of a vision token relative to a text token (default 1)' })
      .option('batch-rows', { type: 'number', default: 1, describe: 'Rows per loss-normalisation group (the training batch size)' })
      .option('packing', { type: 'string', choices: ['ffd', 'greedy'], default: 'ffd', describe: 'ffd: first-fit-decreasing (least padding); greedy: keep manifest order' })
      .option('tokenizer', { type: 'string', describe: 'Model folder whose tokenizer.json to use (default: the built-in LLaMA-2 vocabulary)' })
      .option('cache', { type: 'string', describe: 'Codes cache folder, shareable between datasets (default OUT/cache)' })
      .option('skip-bad', { type: 'boolean', default: false, describe: 'Skip bad lines and unreadable files with a warning instead of stopping' })
      .option('allow-outside-paths', { type: 'boolean', default: false, describe: "Allow vision paths outside the manifest's folder" })
      .option('overwrite', { type: 'boolean', default: false, describe: 'Replace a finished output prepared from other inputs' })
      .option('stats', { type: 'boolean', default: false, describe: 'Dry run: count frames, tokens, rows and padding; write nothing' })
      .option('preview', { type: 'string', describe: 'Also write a PNG of sampled frames over their VQGAN reconstructions' })
      .option('json', { type: 'boolean', default: false, describe: 'Print the summary as JSON' })
      .example('$0 prepare clips.jsonl --out data/clips --vqgan ./LWM-Chat-1M-Jax/vqgan --max-frames 16', 'Video QA set to packed rows')
      .example('$0 prepare clips.jsonl --stats --max-frames 16 --seq-len 32768', 'Frames, tokens, rows and padding, without encoding')
      .example('$0 prepare books.jsonl --out data/books --seq-len 65536 --weighting lwm-text', 'Text only: no VQGAN needed') as unknown as Argv<PrepareArgs>,
  handler: handle<PrepareArgs>('prepare', runPrepare),
};

function sampling(a: PrepareArgs): Sampling {
  const given = [a.fps !== undefined, a['max-frames'] !== undefined, a['all-frames']].filter(Boolean).length;
  if (given > 1) throw new ConfigError('give at most one of --fps, --max-frames and --all-frames');
  if (a.fps !== undefined) return { fps: a.fps };
  if (a['all-frames']) return { all: true };
  return { maxFrames: a['max-frames'] ?? DEFAULT_MAX_FRAMES };
}

function weighting(a: PrepareArgs): LossWeighting {
  if (a['vision-weight'] !== undefined && a.weighting !== 'token') throw new ConfigError('--vision-weight goes with --weighting token');
  if (a.weighting === 'token') return { mode: 'token', ...(a['vision-weight'] !== undefined ? { visionWeight: a['vision-weight'] } : {}) };
  return { mode: a.weighting as 'lwm' | 'lwm-text' | 'mask' };
}

/** stderr progress: a redrawn bar on a terminal, one line per file otherwise (logs, CI, tests). */
function progress(json: boolean): { event: (e: PrepareEvent) => void; end: () => void } {
  const tty = Boolean(process.stderr.isTTY);
  let drawn = false;
  const speed = (encoded: number, secs: number): number => (secs > 0 ? encoded / secs : 0);
  const eta = (done: number, total: number, encoded: number, secs: number): string => {
    const r = speed(encoded, secs);
    return done >= total ? '0:00' : r > 0 ? clock((total - done) / r) : '--:--';
  };
  const bar = (done: number, total: number, encoded: number, secs: number, file: string): void => {
    const width = 24;
    const fill = total > 0 ? Math.round((done / total) * width) : width;
    const line = `[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${done}/${total} frames  ${speed(encoded, secs).toFixed(1)} frames/s  ETA ${eta(done, total, encoded, secs)}  ${path.basename(file)}`;
    process.stderr.write(`\r${line.slice(0, (process.stderr.columns || 100) - 1)}\x1b[K`);
    drawn = true;
  };
  const clear = (): void => {
    if (drawn) process.stderr.write('\r\x1b[K');
    drawn = false;
  };
  return {
    event(e) {
      if (e.type === 'skip') {
        clear();
        note(`lwm prepare: warning: skipped line ${e.line}: ${e.message}`);
      } else if (e.type === 'checked') {
        if (!json || !tty) note(`lwm prepare: ${e.files} image/video files, ${e.frames} frames to encode or read from the cache`);
      } else if (e.type === 'frames') {
        if (tty) bar(e.done, e.total, e.encoded, e.encodeSeconds, e.file);
      } else if (e.type === 'file') {
        if (tty) bar(e.done, e.total, e.encoded, e.encodeSeconds, e.file);
        else {
          const how = e.cached ? 'cached' : 'encoded';
          note(`lwm prepare: ${how} ${e.index}/${e.files} ${path.basename(e.file)} (${e.frames} frames) | ${e.done}/${e.total} frames, ${speed(e.encoded, e.encodeSeconds).toFixed(1)} frames/s, ETA ${eta(e.done, e.total, e.encoded, e.encodeSeconds)}`);
        }
      } else if (e.type === 'write') {
        clear();
      }
    },
    end: clear,
  };
}

function describe(s: PreparedStats): string {
  const pct = (x: number): string => `${(100 * x).toFixed(2)}%`;
  return [
    `examples: ${s.examples}${s.skipped ? ` (${s.skipped} skipped)` : ''}`,
    `images/videos: ${s.visionFiles}, frames: ${s.frames}`,
    `tokens: ${s.tokens} (vision ${s.visionTokens}, text ${s.textTokens})`,
    `packed rows: ${s.rows} x ${s.seqLen}, padding: ${s.paddingTokens} tokens (${pct(s.paddingWaste)} waste)`,
  ].join('\n');
}

async function runPrepare(a: PrepareArgs): Promise<void> {
  const p = progress(a.json);
  const opts = {
    manifest: a.manifest,
    out: a.out,
    vqgan: a.vqgan,
    sampling: sampling(a),
    seqLen: a['seq-len'],
    weighting: weighting(a),
    batchRows: a['batch-rows'],
    packing: a.packing as 'ffd' | 'greedy',
    fields: a.fields,
    tokenizer: loadTokenizer(a.tokenizer),
    tokenizerName: a.tokenizer ? path.basename(path.resolve(a.tokenizer)) : 'llama',
    skipBad: a['skip-bad'],
    allowOutsidePaths: a['allow-outside-paths'],
    cacheDir: a.cache,
    overwrite: a.overwrite,
    onEvent: p.event,
  };
  if (a.stats) {
    if (a.preview) throw new ConfigError('--preview needs a real run; drop --stats');
    const s = await prepareStats(opts);
    p.end();
    process.stdout.write(a.json ? JSON.stringify(s) + '\n' : describe(s) + '\n');
    return;
  }
  if (!a.out) throw new ConfigError('give --out DIR for the prepared dataset (or --stats for a dry run)');
  await initBackend();
  const r = await prepareDataset(opts);
  p.end();
  let previewFrames = 0;
  if (a.preview) {
    if (!a.vqgan) throw new ConfigError('--preview needs --vqgan and a dataset with images or videos');
    const files = r.visionFiles;
    previewFrames = await writePreview(a.preview, { files, vqgan: a.vqgan, sampling: opts.sampling, cacheDir: path.resolve(a.cache ?? path.join(a.out, 'cache')) });
  }
  const speed = r.encodeSeconds > 0 ? r.encodedFrames / r.encodeSeconds : 0;
  if (a.json) {
    process.stdout.write(JSON.stringify({ out: path.resolve(a.out), ...r.stats, cachedFiles: r.cachedFiles, encodedFrames: r.encodedFrames, encodeSeconds: r.encodeSeconds, framesPerSecond: speed, previewFrames }) + '\n');
  } else {
    process.stdout.write(`${describe(r.stats)}\nencoded ${r.encodedFrames} frames at ${speed.toFixed(1)} frames/s (${r.cachedFiles} files from the cache)\nwrote ${path.resolve(a.out)}\n`);
    if (a.preview) process.stdout.write(`preview: ${previewFrames} frames in ${a.preview}\n`);
  }
}
