import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError, InputError } from '../../ops/errors.js';
import { ROW_FIELDS, type PackedRow, type RowField, type RowSource } from '../../data/batches.js';
import type { PackedRows } from '../../data/packing.js';
import { sha256OfFile } from '../checkpoint/files.js';
import { readSafetensorsHeader, readTensorF32, readTensorI32, readTensorU8, writeFileAtomic, writeSafetensors, type SafetensorsHeader, type TensorToWrite } from '../checkpoint/safetensors.js';

/**
 * The folder `lwm prepare` writes:
 *
 *   OUT/prepare.json              written last: settings, stats and the shard list with sha256 of each
 *                                 file. A folder without it is unfinished and is never read.
 *   OUT/tokens/tokens-NNNNN.safetensors   examples in manifest order: `tokens` I32 [N], `vision_mask` U8 [N],
 *                                 `loss_mask` U8 [N] (of each token itself), `offsets` I32 [E+1], `lines` I32 [E]
 *   OUT/rows/rows-NNNNN.safetensors       packed rows, each field [rows, seqLen]: input_tokens, target_tokens,
 *                                 segment_ids, positions (I32), input/target_vision_mask (U8), loss_mask,
 *                                 loss_weights (F32)
 *   OUT/cache/<key>.safetensors   VQGAN codes of one image or video (`codes` I32 [T,16,16], `frame_indices`
 *                                 I32 [T]), keyed by file content, sampling and VQGAN weights
 *
 * Every file is written under a temporary name and renamed into place, so a killed run leaves only
 * whole files (and temporaries that the next run deletes).
 */

export const PREPARED_FORMAT = 'lwm-prepared';
export const PREPARED_VERSION = '1';
export const PREPARED_INFO_FILE = 'prepare.json';
export const TOKENS_DIR = 'tokens';
export const ROWS_DIR = 'rows';
export const CACHE_DIR = 'cache';

export interface ShardEntry {
  file: string;
  sha256: string;
  bytes: number;
}

export interface PreparedStats {
  examples: number;
  skipped: number;
  visionFiles: number;
  frames: number;
  tokens: number;
  visionTokens: number;
  textTokens: number;
  rows: number;
  seqLen: number;
  paddingTokens: number;
  /** paddingTokens / (rows * seqLen). */
  paddingWaste: number;
}

/** The content of prepare.json. */
export interface PreparedInfo {
  format: typeof PREPARED_FORMAT;
  version: typeof PREPARED_VERSION;
  /** Everything the output depends on besides the files themselves; a rerun with other inputs refuses to mix. */
  inputs: Record<string, unknown>;
  stats: PreparedStats;
  /** Lines of the manifest that were skipped (with --skip-bad). */
  skippedLines: number[];
  tokenShards: (ShardEntry & { examples: number })[];
  rowShards: (ShardEntry & { rows: number })[];
}


export function shardName(prefix: string, i: number): string {
  return `${prefix}-${String(i).padStart(5, '0')}.safetensors`;
}

function entry(dir: string, rel: string): ShardEntry {
  const file = path.join(dir, rel);
  return { file: rel, sha256: sha256OfFile(file), bytes: fs.statSync(file).size };
}

/** One processed example as stored in a token shard. */
export interface StoredExample {
  tokens: Int32Array;
  visionMask: Uint8Array;
  lossMask: Uint8Array;
  line: number;
}

/** Writes examples to OUT/tokens/tokens-<index>; returns its entry for prepare.json. */
export function writeTokenShard(outDir: string, index: number, examples: readonly StoredExample[]): ShardEntry & { examples: number } {
  const total = examples.reduce((s, e) => s + e.tokens.length, 0);
  const tokens = new Int32Array(total);
  const vision = new Uint8Array(total);
  const loss = new Uint8Array(total);
  const offsets = new Int32Array(examples.length + 1);
  const lines = new Int32Array(examples.length);
  let o = 0;
  examples.forEach((e, i) => {
    tokens.set(e.tokens, o);
    vision.set(e.visionMask, o);
    loss.set(e.lossMask, o);
    o += e.tokens.length;
    offsets[i + 1] = o;
    lines[i] = e.line;
  });
  const rel = path.join(TOKENS_DIR, shardName('tokens', index));
  writeSafetensors(
    path.join(outDir, rel),
    [
      { name: 'tokens', shape: [total], data: () => tokens, dtype: 'I32' },
      { name: 'vision_mask', shape: [total], data: () => vision, dtype: 'U8' },
      { name: 'loss_mask', shape: [total], data: () => loss, dtype: 'U8' },
      { name: 'offsets', shape: [examples.length + 1], data: () => offsets, dtype: 'I32' },
      { name: 'lines', shape: [examples.length], data: () => lines, dtype: 'I32' },
    ],
    'I32',
    { format: PREPARED_FORMAT, content: 'tokens' },
  );
  return { ...entry(outDir, rel), examples: examples.length };
}

function tensor(h: SafetensorsHeader, name: string, shape?: number[]) {
  const e = h.tensors.get(name);
  if (!e) throw new CheckpointError(`${h.file}: tensor '${name}' is missing; rerun lwm prepare`);
  if (shape && (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i]))) {
    throw new CheckpointError(`${h.file}: tensor '${name}' has shape [${e.shape.join(', ')}], expected [${shape.join(', ')}]; rerun lwm prepare`);
  }
  return e;
}

/** Reads a token shard back into examples. */
export function readTokenShard(file: string): StoredExample[] {
  const h = readSafetensorsHeader(file);
  const offsets = readTensorI32(tensor(h, 'offsets'), file);
  const n = offsets.length - 1;
  const total = offsets[n] ?? 0;
  const tokens = readTensorI32(tensor(h, 'tokens', [total]), file);
  const vision = readTensorU8(tensor(h, 'vision_mask', [total]), file);
  const loss = readTensorU8(tensor(h, 'loss_mask', [total]), file);
  const lines = readTensorI32(tensor(h, 'lines', [n]), file);
  return Array.from({ length: n }, (_, i) => {
    const a = offsets[i] as number;
    const b = offsets[i + 1] as number;
    return { tokens: tokens.subarray(a, b), visionMask: vision.subarray(a, b), lossMask: loss.subarray(a, b), line: lines[i] as number };
  });
}

const SNAKE: Readonly<Record<RowField, string>> = {
  inputTokens: 'input_tokens',
  targetTokens: 'target_tokens',
  segmentIds: 'segment_ids',
  positions: 'positions',
  inputVisionMask: 'input_vision_mask',
  targetVisionMask: 'target_vision_mask',
  lossMask: 'loss_mask',
  lossWeights: 'loss_weights',
};
const DTYPE: Readonly<Record<RowField, 'I32' | 'U8' | 'F32'>> = {
  inputTokens: 'I32',
  targetTokens: 'I32',
  segmentIds: 'I32',
  positions: 'I32',
  inputVisionMask: 'U8',
  targetVisionMask: 'U8',
  lossMask: 'F32',
  lossWeights: 'F32',
};

/** Writes rows [start, end) of a packed set to OUT/rows/rows-<index>. */
export function writeRowShard(outDir: string, index: number, packed: PackedRows, start: number, end: number): ShardEntry & { rows: number } {
  const L = packed.seqLen;
  const rel = path.join(ROWS_DIR, shardName('rows', index));
  const tensors: TensorToWrite[] = ROW_FIELDS.map((f) => ({
    name: SNAKE[f],
    shape: [end - start, L],
    data: () => packed[f].subarray(start * L, end * L),
    dtype: DTYPE[f],
  }));
  writeSafetensors(path.join(outDir, rel), tensors, 'I32', { format: PREPARED_FORMAT, content: 'rows' });
  return { ...entry(outDir, rel), rows: end - start };
}

function readRowShard(file: string, rows: number, seqLen: number): PackedRow {
  const h = readSafetensorsHeader(file);
  const out: Partial<Record<RowField, Int32Array | Uint8Array | Float32Array>> = {};
  for (const f of ROW_FIELDS) {
    const e = tensor(h, SNAKE[f], [rows, seqLen]);
    if (e.dtype !== DTYPE[f]) throw new CheckpointError(`${file}: tensor '${SNAKE[f]}' is ${e.dtype}, expected ${DTYPE[f]}; rerun lwm prepare`);
    out[f] = DTYPE[f] === 'I32' ? readTensorI32(e, file) : DTYPE[f] === 'U8' ? readTensorU8(e, file) : readTensorF32(e, file);
  }
  return out as PackedRow;
}

/** Writes prepare.json atomically (the folder's completion mark). */
export function writePreparedInfo(outDir: string, info: PreparedInfo): void {
  writeFileAtomic(path.join(outDir, PREPARED_INFO_FILE), JSON.stringify(info, null, 2) + '\n');
}

export function readPreparedInfo(dir: string): PreparedInfo {
  const file = path.join(dir, PREPARED_INFO_FILE);
  if (!fs.existsSync(dir)) throw new InputError(`${dir}: no such folder; run lwm prepare first`);
  if (!fs.existsSync(file)) {
    throw new InputError(`${dir}: no ${PREPARED_INFO_FILE}, so this is not a finished lwm prepare output (an interrupted run?); run lwm prepare again`);
  }
  let j: PreparedInfo;
  try {
    j = JSON.parse(fs.readFileSync(file, 'utf8')) as PreparedInfo;
  } catch (e) {
    throw new CheckpointError(`${file}: not valid JSON (${(e as Error).message.split('\n')[0]}); rerun lwm prepare`);
  }
  if (j?.format !== PREPARED_FORMAT || j.version !== PREPARED_VERSION) {
    throw new CheckpointError(`${file}: not an ${PREPARED_FORMAT} v${PREPARED_VERSION} file; rerun lwm prepare with this version of lwm`);
  }
  return j;
}

/** Packed rows of a prepared folder, read one shard at a time (the last one read is kept). */
export class PreparedRows implements RowSource {
  readonly rows: number;
  readonly seqLen: number;
  private readonly starts: number[] = [];
  private cached: { shard: number; data: PackedRow } | null = null;

  constructor(
    readonly dir: string,
    readonly info: PreparedInfo,
  ) {
    this.seqLen = info.stats.seqLen;
    let n = 0;
    for (const s of info.rowShards) {
      const file = path.join(dir, s.file);
      if (!fs.existsSync(file)) throw new CheckpointError(`${file}: missing; the prepared folder is incomplete, rerun lwm prepare`);
      if (fs.statSync(file).size !== s.bytes) throw new CheckpointError(`${file}: is ${fs.statSync(file).size} bytes, prepare.json says ${s.bytes}; rerun lwm prepare`);
      this.starts.push(n);
      n += s.rows;
    }
    this.rows = n;
  }

  row(i: number): PackedRow {
    if (!Number.isInteger(i) || i < 0 || i >= this.rows) throw new InputError(`row ${i} is out of range for ${this.rows} packed rows`);
    let s = this.starts.length - 1;
    while ((this.starts[s] as number) > i) s--;
    if (this.cached?.shard !== s) {
      const meta = this.info.rowShards[s]!;
      this.cached = { shard: s, data: readRowShard(path.join(this.dir, meta.file), meta.rows, this.seqLen) };
    }
    const L = this.seqLen;
    const a = (i - (this.starts[s] as number)) * L;
    const d = this.cached.data;
    const out: Partial<PackedRow> = {};
    for (const f of ROW_FIELDS) (out as Record<string, unknown>)[f] = d[f].subarray(a, a + L);
    return out as PackedRow;
  }

  /** Recomputes every shard's sha256 against prepare.json (reads the whole dataset). */
  verify(): void {
    for (const s of [...this.info.rowShards, ...this.info.tokenShards]) {
      const got = sha256OfFile(path.join(this.dir, s.file));
      if (got !== s.sha256) throw new CheckpointError(`${path.join(this.dir, s.file)}: content does not match prepare.json (sha256 ${got.slice(0, 12)}…); rerun lwm prepare`);
    }
  }
}

/** Opens a finished `lwm prepare` folder as a RowSource for BatchIterator. */
export function openPrepared(dir: string): PreparedRows {
  return new PreparedRows(dir, readPreparedInfo(dir));
}
