/**
 * The built-in training set of `lwm train` with no data arguments: passkey retrieval (a task a tiny
 * model visibly learns in minutes), a few plain lines, and four short generated videos with captions
 * and questions encoded by a tiny random VQGAN, so the whole vision path runs without downloads.
 *
 *   DIR/default-data.json   written last, with the settings and stats: DIR is complete when it exists
 *   DIR/source/             manifest.jsonl, eval.jsonl (held-out passkeys), videos/, vqgan/
 *   DIR/prepared/           the `lwm prepare` output of source/manifest.jsonl
 *
 * Everything is built in a hidden sibling of DIR and renamed into place, so a killed run leaves no
 * folder that looks finished; a DIR made with other settings is replaced (keeping its VQGAN codes).
 * The caller picks the tfjs backend (initBackend) beforehand.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, InputError } from '../../ops/errors.js';
import { findFfmpeg } from '../../data/ffmpeg.js';
import { mulberry32 } from '../../data/batches.js';
import { passkeyDataset, passkeyExample, type PasskeyRecord } from '../../data/passkey.js';
import { initVqganParams, vqganConfig, VQGAN_TINY } from '../../models/vqgan/config.js';
import { isProcessAlive, swapDirectory } from '../checkpoint/files.js';
import { saveVqgan } from '../checkpoint/vqgan.js';
import { CACHE_DIR, readPreparedInfo, type PreparedStats } from '../prepare/format.js';
import { prepareDataset, type PrepareEvent } from '../prepare/run.js';

export const DEFAULT_DATA_FORMAT = 'lwm-default-data';
/** Bump when the recipe changes, so old folders are rebuilt rather than reused. */
export const DEFAULT_DATA_RECIPE = 1;
export const DEFAULT_DATA_INFO_FILE = 'default-data.json';
/** Two frames per video keep the VQGAN work to eight frames. */
const MAX_FRAMES = 2;
const VQGAN_SEED = 3;
const PASSKEY_DIGITS = 5;

export interface DefaultDataOptions {
  seqLen: number;
  seed: number;
  /** Training passkey examples. Default 1024. */
  passkeyExamples?: number;
  /** Held-out passkey examples in eval.jsonl (their passkeys never occur in training). Default 64. */
  evalExamples?: number;
  /** Tokens per passkey example. Default min(256, seqLen). */
  passkeyTokens?: number;
  onEvent?: (e: DefaultDataEvent) => void;
}

export type DefaultDataEvent =
  | { type: 'default-data'; stage: 'reuse' | 'build' | 'media' | 'vqgan' | 'prepare' | 'done'; dir: string }
  | PrepareEvent;

export interface DefaultDataCounts {
  passkeyExamples: number;
  textExamples: number;
  videoExamples: number;
  videos: number;
  evalExamples: number;
  passkeyTokens: number;
}

export interface DefaultData {
  /** The `lwm prepare` folder to train on. */
  prepared: string;
  /** Held-out passkey records (JSONL with `passkey` on each line; prompt = text + ' ' + question). */
  evalManifest: string;
  vqgan: string;
  /** The training manifest the prepared folder was made from. */
  manifest: string;
  /** true when an existing folder with the same settings was used as is. */
  reused: boolean;
  stats: PreparedStats;
  counts: DefaultDataCounts;
}

interface Info {
  format: typeof DEFAULT_DATA_FORMAT;
  settings: Record<string, unknown>;
  stats: PreparedStats;
  counts: DefaultDataCounts;
}

const TEXT_LINES = [
  'The quick brown fox jumps over the lazy dog.',
  'One, two, three, four, five, six, seven, eight, nine, ten.',
  'Red, green and blue are the primary colours of light.',
  'Hello! I am a tiny world model, trained on a few examples.',
];

/** Short, cheap lavfi clips; even sizes because yuv420p needs them. */
const VIDEOS = [
  { file: 'red.mp4', source: 'color=c=red:s=96x64:r=8', frames: 4, caption: 'A red screen.', question: 'What colour is the screen?', answer: 'Red.' },
  { file: 'blue.mp4', source: 'color=c=blue:s=64x64:r=8', frames: 4, caption: 'A blue screen.', question: 'What colour is the screen?', answer: 'Blue.' },
  { file: 'pattern.mp4', source: 'testsrc2=s=160x120:r=8', frames: 6, caption: 'A test pattern of coloured bars with a moving counter.', question: 'What is shown?', answer: 'A test pattern.' },
  { file: 'fractal.mp4', source: 'mandelbrot=s=128x96:r=8', frames: 6, caption: 'A colourful fractal, zooming in.', question: 'What is shown?', answer: 'A fractal.' },
] as const;

function settingsOf(o: Required<Omit<DefaultDataOptions, 'onEvent'>>): Record<string, unknown> {
  return {
    recipe: DEFAULT_DATA_RECIPE,
    seq_len: o.seqLen,
    seed: o.seed,
    passkey_examples: o.passkeyExamples,
    eval_examples: o.evalExamples,
    passkey_tokens: o.passkeyTokens,
    passkey_digits: PASSKEY_DIGITS,
    max_frames: MAX_FRAMES,
  };
}

function checkInt(flag: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min) throw new ConfigError(`${flag} must be an integer >= ${min}, got ${v}`);
}

function result(dir: string, info: Info, reused: boolean): DefaultData {
  const source = path.join(dir, 'source');
  return {
    prepared: path.join(dir, 'prepared'),
    evalManifest: path.join(source, 'eval.jsonl'),
    vqgan: path.join(source, 'vqgan'),
    manifest: path.join(source, 'manifest.jsonl'),
    reused,
    stats: info.stats,
    counts: info.counts,
  };
}

/** The folder's info when it is a finished build with these settings, else null. */
function readFinished(dir: string, settings: Record<string, unknown>): Info | null {
  try {
    const info = JSON.parse(fs.readFileSync(path.join(dir, DEFAULT_DATA_INFO_FILE), 'utf8')) as Info;
    if (info?.format !== DEFAULT_DATA_FORMAT || JSON.stringify(info.settings) !== JSON.stringify(settings)) return null;
    readPreparedInfo(path.join(dir, 'prepared'));
    const r = result(dir, info, true);
    return fs.existsSync(r.evalManifest) && fs.existsSync(r.manifest) && fs.existsSync(path.join(r.vqgan, 'config.json')) ? info : null;
  } catch {
    return null;
  }
}

const OWN_ENTRIES = new Set(['source', 'prepared', DEFAULT_DATA_INFO_FILE]);

/** Refuses a DIR holding anything this module did not write (it is replaced when settings change). */
function checkReplaceable(dir: string): void {
  if (!fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory()) throw new InputError(`${dir}: exists and is not a folder; choose another folder for the built-in training set`);
  const foreign = fs.readdirSync(dir).filter((n) => !OWN_ENTRIES.has(n));
  if (foreign.length > 0) {
    throw new InputError(`${dir}: holds other files (${foreign.slice(0, 3).join(', ')}); the built-in training set needs a folder of its own`);
  }
}


/** Deletes build folders of DIR left by killed processes. */
function removeStaleBuilds(dir: string): void {
  const parent = path.dirname(dir);
  const re = new RegExp(`^\\.${path.basename(dir).replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\.(?:tmp|old)-(\\d+)-[0-9a-f]+$`);
  for (const name of fs.readdirSync(parent)) {
    const m = re.exec(name);
    if (m && !isProcessAlive(Number(m[1]))) fs.rmSync(path.join(parent, name), { recursive: true, force: true });
  }
}

function makeVideo(ffmpeg: string, file: string, source: string, frames: number): void {
  // One thread and bitexact flags: the same ffmpeg writes the same bytes every time.
  const args = ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', source, '-frames:v', String(frames), '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-threads', '1', '-fflags', '+bitexact', '-flags:v', '+bitexact', '-map_metadata', '-1', file];
  const r = spawnSync(ffmpeg, args, { encoding: 'utf8' });
  if (r.status !== 0) {
    const why = r.error ? r.error.message : (r.stderr || `exit code ${r.status}`).trim().split('\n')[0];
    throw new InputError(`${ffmpeg} could not make the sample video ${path.basename(file)} (${why}); run npm ci or set LWM_FFMPEG to a full ffmpeg build`);
  }
}

function writeJsonl(file: string, records: readonly object[]): void {
  fs.writeFileSync(file, records.map((r) => JSON.stringify(r)).join('\n') + '\n');
}

/** Train passkeys skip the eval ones, so a correct eval answer cannot be recalled from training. */
function trainPasskeys(o: Required<Omit<DefaultDataOptions, 'onEvent'>>, evalSet: readonly PasskeyRecord[]): PasskeyRecord[] {
  const held = new Set(evalSet.map((r) => r.passkey));
  const rand = mulberry32(o.seed);
  const out: PasskeyRecord[] = [];
  while (out.length < o.passkeyExamples) {
    const r = passkeyExample(rand, { targetTokens: o.passkeyTokens, digits: PASSKEY_DIGITS });
    if (!held.has(r.passkey)) out.push(r);
  }
  return out;
}

/**
 * Copies the VQGAN codes of a folder being replaced: the videos and the VQGAN come out byte-identical,
 * so a rebuild for another seed or length skips the encoding (the cache is keyed by content).
 */
function seedCodesCache(from: string, to: string): void {
  if (!fs.existsSync(from)) return;
  fs.mkdirSync(to, { recursive: true });
  for (const name of fs.readdirSync(from)) {
    if (/^[0-9a-f]{64}\.safetensors$/.test(name)) fs.copyFileSync(path.join(from, name), path.join(to, name));
  }
}

async function build(tmp: string, o: Required<Omit<DefaultDataOptions, 'onEvent'>>, ffmpeg: string, emit: (e: DefaultDataEvent) => void, finalDir: string): Promise<Info> {
  const source = path.join(tmp, 'source');
  fs.mkdirSync(path.join(source, 'videos'), { recursive: true });
  emit({ type: 'default-data', stage: 'media', dir: finalDir });
  for (const v of VIDEOS) makeVideo(ffmpeg, path.join(source, 'videos', v.file), v.source, v.frames);

  const evalSet = passkeyDataset({ count: o.evalExamples, seed: (o.seed ^ 0x5bd1e995) >>> 0, targetTokens: o.passkeyTokens, digits: PASSKEY_DIGITS });
  const train = trainPasskeys(o, evalSet);
  const videoLines = VIDEOS.flatMap((v) => [
    { fields: '[vision],caption', vision: `videos/${v.file}`, caption: v.caption },
    { fields: '[vision+question],answer', vision: `videos/${v.file}`, question: v.question, answer: v.answer },
  ]);
  const textLines = TEXT_LINES.map((text) => ({ text }));
  writeJsonl(path.join(source, 'manifest.jsonl'), [...train, ...textLines, ...videoLines]);
  writeJsonl(path.join(source, 'eval.jsonl'), evalSet);

  emit({ type: 'default-data', stage: 'vqgan', dir: finalDir });
  const config = vqganConfig({ ...VQGAN_TINY, numGroups: 8 });
  const params = initVqganParams(config, VQGAN_SEED);
  try {
    saveVqgan(path.join(source, 'vqgan'), { config, params });
  } finally {
    for (const t of params.values()) t.dispose();
  }

  emit({ type: 'default-data', stage: 'prepare', dir: finalDir });
  seedCodesCache(path.join(finalDir, 'prepared', CACHE_DIR), path.join(tmp, 'prepared', CACHE_DIR));
  const r = await prepareDataset({
    manifest: path.join(source, 'manifest.jsonl'),
    out: path.join(tmp, 'prepared'),
    vqgan: path.join(source, 'vqgan'),
    sampling: { maxFrames: MAX_FRAMES },
    seqLen: o.seqLen,
    // Name files where they will be, not in the build folder that is about to be renamed.
    onEvent: (e) => emit('file' in e ? { ...e, file: path.join(finalDir, path.relative(tmp, e.file)) } : e),
  });
  const counts: DefaultDataCounts = {
    passkeyExamples: train.length,
    textExamples: textLines.length,
    videoExamples: videoLines.length,
    videos: VIDEOS.length,
    evalExamples: evalSet.length,
    passkeyTokens: o.passkeyTokens,
  };
  const info: Info = { format: DEFAULT_DATA_FORMAT, settings: settingsOf(o), stats: r.stats, counts };
  fs.writeFileSync(path.join(tmp, DEFAULT_DATA_INFO_FILE), JSON.stringify(info, null, 2) + '\n');
  return info;
}

/**
 * Builds the built-in training set in DIR, or reuses DIR when it already holds one made with the
 * same settings. Deterministic for a seed with a given ffmpeg; works offline.
 */
export async function ensureDefaultDataset(dir: string, opts: DefaultDataOptions): Promise<DefaultData> {
  checkInt('--seq-len', opts.seqLen, 64);
  checkInt('--seed', opts.seed, 0);
  const o = {
    seqLen: opts.seqLen,
    seed: opts.seed,
    passkeyExamples: opts.passkeyExamples ?? 1024,
    evalExamples: opts.evalExamples ?? 64,
    passkeyTokens: opts.passkeyTokens ?? Math.min(256, opts.seqLen),
  };
  checkInt('passkey examples', o.passkeyExamples, 1);
  checkInt('eval examples', o.evalExamples, 1);
  checkInt('passkey tokens', o.passkeyTokens, 64);
  const emit = (e: DefaultDataEvent): void => opts.onEvent?.(e);
  const target = path.resolve(dir);
  const settings = settingsOf(o);

  const existing = readFinished(target, settings);
  if (existing) {
    emit({ type: 'default-data', stage: 'reuse', dir: target });
    return result(target, existing, true);
  }
  checkReplaceable(target);
  const ff = findFfmpeg();
  if (!ff) throw new InputError('ffmpeg not found, and the built-in training set needs it to make its sample videos; run npm ci (installs @ffmpeg-installer/ffmpeg) or set LWM_FFMPEG');

  const parent = path.dirname(target);
  fs.mkdirSync(parent, { recursive: true });
  removeStaleBuilds(target);
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmp = path.join(parent, `.${path.basename(target)}.tmp-${tag}`);
  fs.mkdirSync(tmp);
  try {
    emit({ type: 'default-data', stage: 'build', dir: target });
    const info = await build(tmp, o, ff.path, emit, target);
    if (fs.existsSync(target)) {
      // Another process may have finished the same build meanwhile: use its folder.
      const theirs = readFinished(target, settings);
      if (theirs) {
        fs.rmSync(tmp, { recursive: true, force: true });
        emit({ type: 'default-data', stage: 'reuse', dir: target });
        return result(target, theirs, true);
      }
      checkReplaceable(target);
      swapDirectory(tmp, target, tag);
    } else {
      try {
        fs.renameSync(tmp, target);
      } catch (e) {
        const theirs = readFinished(target, settings);
        if (!theirs) throw e;
        fs.rmSync(tmp, { recursive: true, force: true });
        return result(target, theirs, true);
      }
    }
    emit({ type: 'default-data', stage: 'done', dir: target });
    return result(target, info, false);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
