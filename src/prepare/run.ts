import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, InputError, LwmError } from '../../ops/errors.js';
import type { Vqgan } from '../../models/vqgan/model.js';
import { processExample } from '../../data/examples.js';
import { packDocuments, type LossWeighting, type PackedRows } from '../../data/packing.js';
import { defaultTokenizer, type Tokenizer } from '../../data/tokenizer.js';
import { TOKENS_PER_FRAME } from '../../data/visionTokens.js';
import { sha256OfFile } from '../checkpoint/files.js';
import { loadVqgan, readVqganConfig, vqganWeightsHash } from '../checkpoint/vqgan.js';
import { CodesCache, codesCacheKey, describeSampling, encodeVisionFile, removeStaleTemporaries, type Sampling, type VisionCodesResult } from './codes.js';
import {
  CACHE_DIR,
  PREPARED_FORMAT,
  PREPARED_INFO_FILE,
  PREPARED_VERSION,
  ROWS_DIR,
  TOKENS_DIR,
  writePreparedInfo,
  writeRowShard,
  writeTokenShard,
  type PreparedInfo,
  type PreparedStats,
  type StoredExample,
} from './format.js';
import { probeVisionFiles, readManifest, type Manifest, type ManifestEntry, type VisionFile } from './manifest.js';

export interface PrepareOptions {
  manifest: string;
  /** Output folder (not needed for a stats-only run). */
  out?: string;
  /** VQGAN folder; required when the manifest has images or videos. */
  vqgan?: string;
  sampling: Sampling;
  seqLen: number;
  weighting?: LossWeighting;
  /** Rows per loss-normalisation group (see packDocuments). Default 1. */
  batchRows?: number;
  packing?: 'ffd' | 'greedy';
  fields?: string;
  tokenizer?: Tokenizer;
  /** Names the tokenizer in prepare.json (default "llama"). */
  tokenizerName?: string;
  skipBad?: boolean;
  allowOutsidePaths?: boolean;
  /** Codes cache folder (default OUT/cache). */
  cacheDir?: string;
  /** Replace a finished output made from other inputs. */
  overwrite?: boolean;
  examplesPerShard?: number;
  /** Approximate size of a rows shard. */
  rowShardBytes?: number;
  onEvent?: (e: PrepareEvent) => void;
}

export type PrepareEvent =
  | { type: 'skip'; line: number; message: string }
  | { type: 'checked'; files: number; frames: number }
  | { type: 'frames'; done: number; total: number; encoded: number; encodeSeconds: number; file: string }
  | { type: 'file'; index: number; files: number; file: string; frames: number; cached: boolean; done: number; total: number; encoded: number; encodeSeconds: number }
  | { type: 'write'; what: string };

export interface PrepareResult {
  info: PreparedInfo;
  stats: PreparedStats;
  /** Vision files whose codes came from the cache. */
  cachedFiles: number;
  /** Frames encoded by the VQGAN in this run and the seconds it took. */
  encodedFrames: number;
  encodeSeconds: number;
  /** Absolute paths of the images and videos used, in manifest order. */
  visionFiles: string[];
}

const OUT_ENTRIES = new Set([PREPARED_INFO_FILE, TOKENS_DIR, ROWS_DIR, CACHE_DIR]);

function checkOptions(o: PrepareOptions): void {
  if (!Number.isInteger(o.seqLen) || o.seqLen < 2) throw new ConfigError(`--seq-len must be an integer >= 2, got ${o.seqLen}`);
  const s = o.sampling;
  if ('fps' in s && !(s.fps > 0 && Number.isFinite(s.fps))) throw new ConfigError(`--fps must be a positive number, got ${s.fps}`);
  if ('maxFrames' in s && !(Number.isInteger(s.maxFrames) && s.maxFrames >= 1)) throw new ConfigError(`--max-frames must be a positive integer, got ${s.maxFrames}`);
  const br = o.batchRows ?? 1;
  if (!Number.isInteger(br) || br < 1) throw new ConfigError(`--batch-rows must be a positive integer, got ${br}`);
  const eps = o.examplesPerShard ?? 1024;
  if (!Number.isInteger(eps) || eps < 1) throw new ConfigError(`examples per shard must be a positive integer, got ${eps}`);
}

/** Everything besides file contents that the output depends on (stored in prepare.json). */
function inputsOf(o: PrepareOptions, manifestSha: string, vqganSha: string | null): Record<string, unknown> {
  return {
    manifest: { name: path.basename(o.manifest), sha256: manifestSha },
    vqgan_sha256: vqganSha,
    sampling: describeSampling(o.sampling),
    seq_len: o.seqLen,
    packing: o.packing ?? 'ffd',
    weighting: o.weighting ?? { mode: 'lwm' },
    batch_rows: o.batchRows ?? 1,
    fields: o.fields ?? null,
    tokenizer: o.tokenizerName ?? 'llama',
    allow_outside_paths: o.allowOutsidePaths ?? false,
    skip_bad: o.skipBad ?? false,
    examples_per_shard: o.examplesPerShard ?? 1024,
  };
}

/** Refuses an output folder that is not ours, or a finished one made from other inputs (unless overwrite). */
function checkOutDir(out: string, inputs: Record<string, unknown>, overwrite: boolean): void {
  if (!fs.existsSync(out)) return;
  if (!fs.statSync(out).isDirectory()) throw new InputError(`${out}: exists and is not a folder; choose another --out`);
  const foreign = fs.readdirSync(out).filter((n) => !OUT_ENTRIES.has(n) && !n.startsWith(`${PREPARED_INFO_FILE}.tmp-`));
  if (foreign.length > 0) {
    throw new InputError(`${out}: holds other files (${foreign.slice(0, 3).join(', ')}); lwm prepare writes only into an empty folder or its own output, choose another --out`);
  }
  const infoFile = path.join(out, PREPARED_INFO_FILE);
  if (!fs.existsSync(infoFile) || overwrite) return;
  let old: Record<string, unknown> | null = null;
  try {
    old = JSON.parse(fs.readFileSync(infoFile, 'utf8'))?.inputs ?? null;
  } catch {
    return; // damaged: it is rewritten
  }
  if (JSON.stringify(old) !== JSON.stringify(inputs)) {
    throw new InputError(`${out}: holds a dataset prepared from other inputs or settings; pass --overwrite to replace it, or choose another --out`);
  }
}

function removeStaleShards(dir: string, prefix: string, keep: number): void {
  if (!fs.existsSync(dir)) return;
  for (const name of fs.readdirSync(dir)) {
    const m = new RegExp(`^${prefix}-(\\d{5})\\.safetensors$`).exec(name);
    if (m && Number(m[1]) >= keep) fs.rmSync(path.join(dir, name), { force: true });
  }
}

function toStored(e: { tokens: number[]; visionMask: boolean[]; lossMask: number[]; line: number }): StoredExample {
  return { tokens: Int32Array.from(e.tokens), visionMask: Uint8Array.from(e.visionMask, (b) => (b ? 1 : 0)), lossMask: Uint8Array.from(e.lossMask), line: e.line };
}

function statsOf(docs: readonly StoredExample[], packed: PackedRows, files: readonly VisionFile[], skipped: number): PreparedStats {
  let visionTokens = 0;
  for (const d of docs) for (const v of d.visionMask) visionTokens += v;
  return {
    examples: docs.length,
    skipped,
    visionFiles: files.length,
    frames: files.reduce((s, f) => s + f.frames, 0),
    tokens: packed.tokens,
    visionTokens,
    textTokens: packed.tokens - visionTokens,
    rows: packed.rows,
    seqLen: packed.seqLen,
    paddingTokens: packed.paddingTokens,
    paddingWaste: packed.paddingWaste,
  };
}

function pack(docs: readonly StoredExample[], o: PrepareOptions): PackedRows {
  return packDocuments(docs, { seqLen: o.seqLen, strategy: o.packing ?? 'ffd', weighting: o.weighting ?? { mode: 'lwm' }, batchRows: o.batchRows ?? 1 });
}

function toExample(e: ManifestEntry, o: PrepareOptions, tok: Tokenizer, codesOf: (abs: string) => VisionCodesResult['codes'], manifestDir: string): StoredExample {
  return toStored(
    processExample(e.record, {
      tokenizer: tok,
      fields: e.fields,
      baseDir: manifestDir,
      allowOutsidePaths: true, // checked when the manifest was read
      source: o.manifest,
      visionCodes: (abs) => codesOf(abs),
    }),
  );
}

/** Lays out tokens without a vocabulary: finds missing or mistyped fields before any encoding. */
const CHECK_TOKENIZER: Tokenizer = {
  vocabSize: 1,
  bosId: 0,
  eosId: 0,
  unkId: 0,
  source: 'check',
  encode: () => [],
  decode: () => '',
  idToPiece: () => '',
};

async function readChecked(o: PrepareOptions, onSkip: (line: number, message: string) => void): Promise<{ manifest: Manifest; files: VisionFile[]; entries: ManifestEntry[] }> {
  const mopts = { fields: o.fields, allowOutsidePaths: o.allowOutsidePaths, sampling: o.sampling, onBad: o.skipBad ? onSkip : undefined };
  const manifest = readManifest(o.manifest, mopts);
  const probed = await probeVisionFiles(manifest, mopts);
  const frames = new Map(probed.files.map((f) => [f.abs, f.frames]));
  const dir = path.dirname(path.resolve(o.manifest));
  const entries = probed.entries.filter((e) => {
    try {
      toExample(e, o, CHECK_TOKENIZER, (abs) => new Int32Array((frames.get(abs) ?? 0) * TOKENS_PER_FRAME), dir);
      return true;
    } catch (err) {
      if (!(err instanceof LwmError) || !o.skipBad) throw err;
      onSkip(e.record.line, err.message);
      manifest.skippedLines.push(e.record.line);
      return false;
    }
  });
  manifest.skippedLines.sort((a, b) => a - b);
  const used = new Set(entries.flatMap((e) => e.visionFiles));
  return { manifest, files: probed.files.filter((f) => used.has(f.abs)), entries };
}

/**
 * Dry run (--stats): reads and probes everything, lays out tokens with placeholder codes and packs
 * them, so frames, tokens, rows and padding are exact without a VQGAN or any output.
 */
export async function prepareStats(o: PrepareOptions): Promise<PreparedStats> {
  checkOptions(o);
  const tok = o.tokenizer ?? defaultTokenizer();
  const { manifest, files, entries } = await readChecked(o, (line, message) => o.onEvent?.({ type: 'skip', line, message }));
  const frames = new Map(files.map((f) => [f.abs, f.frames]));
  const dir = path.dirname(path.resolve(o.manifest));
  const docs = entries.map((e) => toExample(e, o, tok, (abs) => new Int32Array((frames.get(abs) ?? 0) * TOKENS_PER_FRAME), dir));
  return statsOf(docs, pack(docs, o), files, manifest.skippedLines.length);
}

/**
 * `lwm prepare`: manifest -> VQGAN codes (cached per file) -> token shards -> packed row shards ->
 * prepare.json. Rerunning after a kill reuses every cached file and writes the same bytes.
 */
export async function prepareDataset(o: PrepareOptions): Promise<PrepareResult> {
  checkOptions(o);
  if (!o.out) throw new ConfigError('give --out DIR for the prepared dataset');
  const out = path.resolve(o.out);
  const emit = (e: PrepareEvent): void => o.onEvent?.(e);
  const tok = o.tokenizer ?? defaultTokenizer();
  const { manifest, files, entries } = await readChecked(o, (line, message) => emit({ type: 'skip', line, message }));
  if (entries.length === 0) throw new InputError(`${o.manifest}: every line was skipped; nothing to prepare`);
  let vqgan: Vqgan | null = null;
  let vqganSha: string | null = null;
  if (files.length > 0) {
    if (!o.vqgan) throw new ConfigError(`${o.manifest} has images or videos; pass --vqgan DIR (a VQGAN folder, e.g. from lwm convert)`);
    readVqganConfig(o.vqgan);
    vqganSha = vqganWeightsHash(o.vqgan);
  }
  const inputs = inputsOf(o, createHash('sha256').update(manifest.text).digest('hex'), vqganSha);
  checkOutDir(out, inputs, o.overwrite ?? false);
  const frameTotal = files.reduce((s, f) => s + f.frames, 0);
  emit({ type: 'checked', files: files.length, frames: frameTotal });

  fs.mkdirSync(path.join(out, TOKENS_DIR), { recursive: true });
  fs.mkdirSync(path.join(out, ROWS_DIR), { recursive: true });
  // From here the folder is unfinished until prepare.json is written again.
  fs.rmSync(path.join(out, PREPARED_INFO_FILE), { force: true });
  const cache = new CodesCache(path.resolve(o.cacheDir ?? path.join(out, CACHE_DIR)));
  for (const d of [out, path.join(out, TOKENS_DIR), path.join(out, ROWS_DIR), cache.dir]) removeStaleTemporaries(d);

  // Codes are kept only until the last example that uses them is laid out.
  const uses = new Map<string, number>();
  for (const e of entries) for (const f of e.visionFiles) uses.set(f, (uses.get(f) ?? 0) + 1);
  const codes = new Map<string, Int32Array>();
  const byPath = new Map(files.map((f, i) => [f.abs, { ...f, index: i }]));
  let done = 0;
  let encoded = 0;
  let encodeSeconds = 0;
  let cachedFiles = 0;
  const failed = new Set<string>();
  const encodeOne = async (abs: string): Promise<void> => {
    const f = byPath.get(abs)!;
    if (failed.has(abs)) throw new InputError(`${abs}: could not be decoded (see the earlier warning)`);
    const key = codesCacheKey(sha256OfFile(abs), f.kind, o.sampling, vqganSha!);
    let r = cache.get(key);
    const cached = r !== null;
    if (!r) {
      if (!vqgan) vqgan = loadVqgan(o.vqgan!);
      const t0 = performance.now();
      let base = 0;
      try {
        r = await encodeVisionFile(abs, vqgan, o.sampling, (n) => {
          base += n;
          emit({ type: 'frames', done: done + base, total: frameTotal, encoded: encoded + base, encodeSeconds: encodeSeconds + (performance.now() - t0) / 1000, file: abs });
        });
      } catch (err) {
        if (err instanceof LwmError) throw new InputError(`${abs}: ${err.message.startsWith(abs) ? err.message.slice(abs.length + 2) : err.message}`);
        throw err;
      }
      encodeSeconds += (performance.now() - t0) / 1000;
      encoded += r.frameIndices.length;
      cache.put(key, r, { format: PREPARED_FORMAT, content: 'vqgan-codes', vqgan_sha256: vqganSha! });
    } else cachedFiles++;
    if (r.frameIndices.length !== f.frames) {
      throw new InputError(`${abs}: decoded ${r.frameIndices.length} frames where probing promised ${f.frames}; the file may be truncated, re-encode it`);
    }
    done += f.frames;
    codes.set(abs, r.codes);
    emit({ type: 'file', index: f.index + 1, files: files.length, file: abs, frames: f.frames, cached, done, total: frameTotal, encoded, encodeSeconds });
  };

  const perShard = o.examplesPerShard ?? 1024;
  const docs: StoredExample[] = [];
  const tokenShards: PreparedInfo['tokenShards'] = [];
  const manifestDir = path.dirname(path.resolve(o.manifest));
  let shard: StoredExample[] = [];
  const flushShard = (): void => {
    if (shard.length === 0) return;
    tokenShards.push(writeTokenShard(out, tokenShards.length, shard));
    shard = [];
  };
  try {
    for (const e of entries) {
      let doc: StoredExample;
      try {
        for (const abs of e.visionFiles) if (!codes.has(abs)) await encodeOne(abs);
        doc = toExample(e, o, tok, (abs) => codes.get(abs)!, manifestDir);
      } catch (err) {
        // Only decoding can still fail here (a file that probed well but is truncated inside).
        if (!(err instanceof LwmError) || !o.skipBad) throw err instanceof LwmError ? new InputError(`${o.manifest}:${e.record.line}: ${err.message}`) : err;
        emit({ type: 'skip', line: e.record.line, message: `${o.manifest}:${e.record.line}: ${err.message}` });
        manifest.skippedLines.push(e.record.line);
        for (const abs of e.visionFiles) if (!codes.has(abs)) failed.add(abs);
        continue;
      } finally {
        for (const abs of e.visionFiles) {
          const left = uses.get(abs)! - 1;
          uses.set(abs, left);
          if (left === 0) codes.delete(abs);
        }
      }
      docs.push(doc);
      shard.push(doc);
      if (shard.length === perShard) flushShard();
    }
    flushShard();
  } finally {
    (vqgan as Vqgan | null)?.dispose();
  }
  removeStaleShards(path.join(out, TOKENS_DIR), 'tokens', tokenShards.length);

  emit({ type: 'write', what: 'packed rows' });
  const packed = pack(docs, o);
  const rowBytes = o.seqLen * (4 * 4 + 2 + 2 * 4);
  const rowsPerShard = Math.max(1, Math.floor((o.rowShardBytes ?? 64 * 2 ** 20) / rowBytes));
  const rowShards: PreparedInfo['rowShards'] = [];
  for (let r = 0; r < packed.rows; r += rowsPerShard) rowShards.push(writeRowShard(out, rowShards.length, packed, r, Math.min(packed.rows, r + rowsPerShard)));
  removeStaleShards(path.join(out, ROWS_DIR), 'rows', rowShards.length);

  manifest.skippedLines.sort((a, b) => a - b);
  const stats = statsOf(docs, packed, files.filter((f) => !failed.has(f.abs)), manifest.skippedLines.length);
  const info: PreparedInfo = { format: PREPARED_FORMAT, version: PREPARED_VERSION, inputs, stats, skippedLines: manifest.skippedLines, tokenShards, rowShards };
  writePreparedInfo(out, info);
  return { info, stats, cachedFiles, encodedFrames: encoded, encodeSeconds, visionFiles: files.filter((f) => !failed.has(f.abs)).map((f) => f.abs) };
}
