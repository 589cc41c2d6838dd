import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../../ops/errors.js';
import { bf16ToF32, BYTES_PER_ELEMENT, f16ToF32, f32ToBf16, f32ToF16, type StorageDtype } from './dtype.js';
import { WrittenRanges } from './files.js';

/**
 * safetensors: 8-byte little-endian header length, a JSON header {name: {dtype, shape,
 * data_offsets: [begin, end]}, "__metadata__": {...}}, then the raw little-endian tensor bytes.
 * Tensors are read from their file offsets, so a multi-GB shard is never held in one buffer.
 */

export interface TensorEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute byte offset of the data in the file. */
  offset: number;
  byteLength: number;
}

export interface SafetensorsHeader {
  file: string;
  tensors: Map<string, TensorEntry>;
  metadata: Record<string, string>;
}

const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const READ_CHUNK = 64 * 1024 * 1024;

export function readSafetensorsHeader(file: string): SafetensorsHeader {
  const fd = openForRead(file);
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw corrupt(file, `file is ${size} bytes, too short to hold a header`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > size) {
      throw corrupt(file, `header length ${headerLen} does not fit in a ${size}-byte file`);
    }
    const headerBuf = Buffer.alloc(headerLen);
    fs.readSync(fd, headerBuf, 0, headerLen, 8);
    let json: unknown;
    try {
      json = JSON.parse(headerBuf.toString('utf8'));
    } catch {
      throw corrupt(file, 'header is not valid JSON');
    }
    if (!json || typeof json !== 'object' || Array.isArray(json)) throw corrupt(file, 'header is not a JSON object');
    const dataStart = 8 + headerLen;
    const tensors = new Map<string, TensorEntry>();
    let metadata: Record<string, string> = {};
    for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
      if (name === '__metadata__') {
        metadata = (value ?? {}) as Record<string, string>;
        continue;
      }
      const entry = parseEntry(file, name, value, dataStart);
      if (entry.offset + entry.byteLength > size) {
        throw new CheckpointError(
          `${file}: truncated: tensor '${name}' ends at byte ${entry.offset + entry.byteLength} but the file has ${size} bytes; re-download or re-convert it`,
        );
      }
      tensors.set(name, entry);
    }
    return { file, tensors, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

function parseEntry(file: string, name: string, value: unknown, dataStart: number): TensorEntry {
  const v = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (!v || typeof v.dtype !== 'string' || !Array.isArray(v.shape) || !Array.isArray(v.data_offsets) || v.data_offsets.length !== 2) {
    throw corrupt(file, `entry '${name}' lacks dtype, shape or data_offsets`);
  }
  const shape = v.shape as unknown[];
  if (!shape.every((d) => Number.isInteger(d) && (d as number) >= 0)) throw corrupt(file, `entry '${name}' has an invalid shape ${JSON.stringify(shape)}`);
  const [begin, end] = v.data_offsets as unknown[];
  if (!Number.isInteger(begin) || !Number.isInteger(end) || (end as number) < (begin as number) || (begin as number) < 0) {
    throw corrupt(file, `entry '${name}' has invalid data_offsets ${JSON.stringify(v.data_offsets)}`);
  }
  const byteLength = (end as number) - (begin as number);
  const itemSize = ITEM_SIZES[v.dtype];
  const count = (shape as number[]).reduce((a, b) => a * b, 1);
  if (itemSize !== undefined && count * itemSize !== byteLength) {
    throw corrupt(file, `entry '${name}' (${v.dtype} [${shape.join(', ')}]) should take ${count * itemSize} bytes but data_offsets span ${byteLength}`);
  }
  return { name, dtype: v.dtype, shape: shape as number[], offset: dataStart + (begin as number), byteLength };
}

const ITEM_SIZES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** Reads one float tensor, widened to float32. */
export function readTensorF32(entry: TensorEntry, file: string): Float32Array {
  const dtype = entry.dtype as StorageDtype;
  if (!(dtype in BYTES_PER_ELEMENT)) {
    throw new CheckpointError(`${file}: tensor '${entry.name}' has dtype ${entry.dtype}; lwm reads F32, F16 and BF16 weights`);
  }
  const count = entry.byteLength / BYTES_PER_ELEMENT[dtype];
  const out = new Float32Array(count);
  const fd = openForRead(file);
  try {
    if (dtype === 'F32') {
      readFully(fd, new Uint8Array(out.buffer), entry.offset, file);
    } else {
      // Widen chunk by chunk so a half-precision tensor never needs a second full-size buffer.
      const chunkElems = READ_CHUNK / 2;
      const raw = new Uint16Array(Math.min(count, chunkElems));
      for (let start = 0; start < count; start += chunkElems) {
        const n = Math.min(chunkElems, count - start);
        const view = raw.subarray(0, n);
        readFully(fd, new Uint8Array(view.buffer, 0, n * 2), entry.offset + start * 2, file);
        const dst = out.subarray(start, start + n);
        if (dtype === 'BF16') bf16ToF32(view, dst);
        else f16ToF32(view, dst);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/**
 * Reads one integer tensor as int32: I32 as stored; I16, I8, U8 and BOOL widened (token rows,
 * masks). Float dtypes are refused: use readTensorF32.
 */
export function readTensorI32(entry: TensorEntry, file: string): Int32Array {
  const count = entryCount(entry);
  if (entry.dtype === 'I32') {
    const out = new Int32Array(count);
    readEntryBytes(entry, file, new Uint8Array(out.buffer));
    return out;
  }
  const widen: Record<string, (b: ArrayBuffer) => ArrayLike<number>> = {
    I16: (b) => new Int16Array(b),
    I8: (b) => new Int8Array(b),
    U8: (b) => new Uint8Array(b),
    BOOL: (b) => new Uint8Array(b),
  };
  const make = widen[entry.dtype];
  if (!make) throw new CheckpointError(`${file}: tensor '${entry.name}' has dtype ${entry.dtype}; readTensorI32 reads I32, I16, I8, U8 and BOOL`);
  const raw = new Uint8Array(entry.byteLength);
  readEntryBytes(entry, file, raw);
  return Int32Array.from(make(raw.buffer));
}

/** The raw bit patterns of a BF16 tensor (a bf16 model keeps them as they are: no widening). */
export function readTensorBf16(entry: TensorEntry, file: string): Uint16Array {
  if (entry.dtype !== 'BF16') throw new CheckpointError(`${file}: tensor '${entry.name}' has dtype ${entry.dtype}; readTensorBf16 reads BF16`);
  const out = new Uint16Array(entryCount(entry));
  readEntryBytes(entry, file, new Uint8Array(out.buffer));
  return out;
}

/** Reads one U8 or BOOL tensor as bytes (BOOL: 0 or 1). */
export function readTensorU8(entry: TensorEntry, file: string): Uint8Array {
  if (entry.dtype !== 'U8' && entry.dtype !== 'BOOL') {
    throw new CheckpointError(`${file}: tensor '${entry.name}' has dtype ${entry.dtype}; readTensorU8 reads U8 and BOOL`);
  }
  const out = new Uint8Array(entryCount(entry));
  readEntryBytes(entry, file, out);
  return out;
}

function entryCount(entry: TensorEntry): number {
  return entry.shape.reduce((a, b) => a * b, 1);
}

function readEntryBytes(entry: TensorEntry, file: string, dst: Uint8Array): void {
  if (dst.length !== entry.byteLength) {
    throw new CheckpointError(`${file}: tensor '${entry.name}' (${entry.dtype} [${entry.shape.join(', ')}]) spans ${entry.byteLength} bytes, expected ${dst.length}`);
  }
  const fd = openForRead(file);
  try {
    readFully(fd, dst, entry.offset, file);
  } finally {
    fs.closeSync(fd);
  }
}

function readFully(fd: number, dst: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < dst.length) {
    const n = fs.readSync(fd, dst, done, Math.min(READ_CHUNK, dst.length - done), position + done);
    if (n === 0) throw new CheckpointError(`${file}: unexpected end of file at byte ${position + done}; the file is truncated`);
    done += n;
  }
}

function openForRead(file: string): number {
  try {
    return fs.openSync(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CheckpointError(code === 'ENOENT' ? `${file}: no such file` : `${file}: cannot open (${code ?? String(e)})`);
  }
}

function corrupt(file: string, what: string): CheckpointError {
  return new CheckpointError(`${file}: not a valid safetensors file: ${what}`);
}

/** Dtypes the writer can store. F32/F16/BF16 take a Float32Array, I32 an Int32Array, U8 and BOOL (0/1) a Uint8Array. */
export type WriteDtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'U8' | 'BOOL';

const WRITE_ITEM_SIZES: Readonly<Record<WriteDtype, number>> = { F32: 4, F16: 2, BF16: 2, I32: 4, U8: 1, BOOL: 1 };

export interface TensorToWrite {
  name: string;
  shape: number[];
  /** Called once, when the tensor is written, so a large model is never all in memory twice. */
  data: () => Float32Array | Int32Array | Uint8Array;
  /** This tensor's stored dtype, overriding the file's (e.g. I32 token rows next to F32 values). */
  dtype?: WriteDtype;
}

function tensorBytes(t: TensorToWrite, fileDtype: WriteDtype): number {
  const dtype = t.dtype ?? fileDtype;
  const size = WRITE_ITEM_SIZES[dtype];
  if (size === undefined) throw new CheckpointError(`writeSafetensors: '${t.name}' has dtype ${String(dtype)}; the writer stores ${Object.keys(WRITE_ITEM_SIZES).join(', ')}`);
  return t.shape.reduce((a, b) => a * b, 1) * size;
}

function encodeTensor(t: TensorToWrite, dtype: WriteDtype, data: Float32Array | Int32Array | Uint8Array): Uint8Array {
  const need = dtype === 'I32' ? Int32Array : dtype === 'U8' || dtype === 'BOOL' ? Uint8Array : Float32Array;
  if (!(data instanceof need)) {
    throw new CheckpointError(`writeSafetensors: '${t.name}' is stored as ${dtype}, which needs a ${need.name}, but data() returned a ${data.constructor.name}`);
  }
  if (dtype === 'BOOL' && data.some((v) => v > 1)) throw new CheckpointError(`writeSafetensors: '${t.name}' is stored as BOOL but holds values other than 0 and 1`);
  if (dtype === 'BF16' || dtype === 'F16') {
    const half = new Uint16Array(data.length);
    (dtype === 'BF16' ? f32ToBf16 : f32ToF16)(data as Float32Array, half);
    return new Uint8Array(half.buffer);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

export interface WriteOptions {
  /** Called after each tensor's bytes are written (progress). */
  onWrite?: (bytes: number) => void;
  /** Read the finished file back and compare every tensor's sha256 with what was written. */
  verify?: boolean;
}

/**
 * Writes one safetensors file atomically: to a temporary name first, renamed into place only
 * when complete, so a crash never leaves a half-written checkpoint under the real name.
 */
export function writeSafetensors(file: string, tensors: TensorToWrite[], dtype: WriteDtype, metadata: Record<string, string> = {}, opts: WriteOptions = {}): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const bytes = tensorBytes(t, dtype);
    header[t.name] = { dtype: t.dtype ?? dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let headerJson = JSON.stringify(header);
  // Pad with spaces so tensor data starts 8-byte aligned (readers may map it directly).
  headerJson += ' '.repeat((8 - ((8 + Buffer.byteLength(headerJson)) % 8)) % 8);
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  const dataStart = 8 + Buffer.byteLength(headerJson);
  const ranges = opts.verify ? new WrittenRanges() : undefined;
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(headerJson)));
    fs.writeSync(fd, len);
    fs.writeSync(fd, headerJson);
    let at = dataStart;
    for (const t of tensors) {
      const data = t.data();
      const expected = t.shape.reduce((a, b) => a * b, 1);
      if (data.length !== expected) throw new CheckpointError(`writeSafetensors: '${t.name}' has ${data.length} values, its shape [${t.shape.join(', ')}] needs ${expected}`);
      const bytes = encodeTensor(t, t.dtype ?? dtype, data);
      ranges?.begin(t.name, at);
      ranges?.update(bytes);
      writeAll(fd, bytes);
      at += bytes.length;
      opts.onWrite?.(bytes.length);
    }
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  try {
    ranges?.verify(tmp, dataStart + offset);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.renameSync(tmp, file);
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += fs.writeSync(fd, bytes, done, Math.min(READ_CHUNK, bytes.length - done));
}

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';
/** Hugging Face's default shard limit; also keeps every shard under Node's 4 GiB buffer limits. */
export const DEFAULT_MAX_SHARD_BYTES = 2_000_000_000;

/**
 * Writes `model.safetensors`, or Hugging Face-style shards `model-0000i-of-0000n.safetensors`
 * plus `model.safetensors.index.json` when the total exceeds maxShardBytes. Returns the files written.
 */
export function writeSafetensorsSharded(
  dir: string,
  tensors: TensorToWrite[],
  dtype: WriteDtype,
  opts: { maxShardBytes?: number; metadata?: Record<string, string> } & WriteOptions = {},
): string[] {
  const max = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  const shards: TensorToWrite[][] = [[]];
  let current = 0;
  let total = 0;
  for (const t of tensors) {
    const bytes = tensorBytes(t, dtype);
    if (current > 0 && current + bytes > max) {
      shards.push([]);
      current = 0;
    }
    shards[shards.length - 1]!.push(t);
    current += bytes;
    total += bytes;
  }
  fs.mkdirSync(dir, { recursive: true });
  const metadata = { format: 'pt', ...opts.metadata };
  if (shards.length === 1) {
    writeSafetensors(path.join(dir, SINGLE_FILE), tensors, dtype, metadata, opts);
    fs.rmSync(path.join(dir, INDEX_FILE), { force: true });
    return [SINGLE_FILE];
  }
  const n = shards.length;
  const pad = (i: number) => String(i).padStart(5, '0');
  const names = shards.map((_, i) => `model-${pad(i + 1)}-of-${pad(n)}.safetensors`);
  const weightMap: Record<string, string> = {};
  shards.forEach((shard, i) => {
    writeSafetensors(path.join(dir, names[i]!), shard, dtype, metadata, opts);
    for (const t of shard) weightMap[t.name] = names[i]!;
  });
  // The index goes last: a reader never finds an index that points at a missing shard.
  writeFileAtomic(path.join(dir, INDEX_FILE), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + '\n');
  fs.rmSync(path.join(dir, SINGLE_FILE), { force: true });
  return [...names, INDEX_FILE];
}

/** Writes a small file under a temporary name, flushes it to disk, and renames it into place. */
export function writeFileAtomic(file: string, text: string | Uint8Array): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    writeAll(fd, typeof text === 'string' ? Buffer.from(text) : text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** Where each tensor of a model folder lives: from the index if there is one, else model.safetensors. */
export function readWeightIndex(dir: string): Map<string, TensorEntry & { file: string }> {
  const indexPath = path.join(dir, INDEX_FILE);
  let files: string[];
  if (fs.existsSync(indexPath)) {
    let index: { weight_map?: Record<string, string> };
    try {
      index = JSON.parse(fs.readFileSync(indexPath, 'utf8'));
    } catch {
      throw new CheckpointError(`${indexPath}: not valid JSON; re-download or re-convert the model`);
    }
    if (!index.weight_map || typeof index.weight_map !== 'object') throw new CheckpointError(`${indexPath}: has no weight_map`);
    files = [...new Set(Object.values(index.weight_map))];
  } else if (fs.existsSync(path.join(dir, SINGLE_FILE))) {
    files = [SINGLE_FILE];
  } else {
    const any = fs.readdirSync(dir).filter((f) => f.endsWith('.safetensors'));
    if (any.length === 0) {
      const bins = fs.readdirSync(dir).filter((f) => f.endsWith('.bin') || f === 'params');
      const hint = bins.length ? ` (found ${bins.join(', ')}: convert it first with \`lwm convert ${dir} OUTDIR\`)` : '';
      throw new CheckpointError(`${dir}: no safetensors weights${hint}`);
    }
    files = any.sort();
  }
  const out = new Map<string, TensorEntry & { file: string }>();
  for (const f of files) {
    const file = path.join(dir, f);
    for (const [name, entry] of readSafetensorsHeader(file).tensors) out.set(name, { ...entry, file });
  }
  return out;
}
