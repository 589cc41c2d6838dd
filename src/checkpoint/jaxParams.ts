import * as fs from 'node:fs';
import { CheckpointError } from '../../ops/index.js';
import { readTensorF32 } from './safetensors.js';

/** Jax dtype names of the float weights, as safetensors dtypes (the same bytes). */
export const JAX_STORAGE: Readonly<Record<string, 'F32' | 'F16' | 'BF16'>> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' };

/**
 * LWM's Jax StreamingCheckpointer files (lwm-spec 8.2): a bare sequence of msgpack records
 * [key path, bin(flax to_bytes(array))]. Only headers are parsed here; tensor bytes stay in the
 * file and are read later from their offsets, so a 2.9 GB record never enters memory whole.
 */
export interface JaxRecord {
  key: string[];
  /** numpy dtype name: 'bfloat16', 'float32', 'float16', ... */
  dtype: string;
  shape: number[];
  /** Where the record starts and how long it is. */
  recordOffset: number;
  recordLength: number;
  /** The raw little-endian element bytes: one part, or one per chunk of a chunked array. */
  parts: { offset: number; length: number }[];
}

const ITEM_SIZE: Readonly<Record<string, number>> = { bfloat16: 2, float16: 2, float32: 4, int32: 4, uint32: 4, int8: 1, uint8: 1, bool: 1 };

/** Reads msgpack headers at a file position; small values only (payloads are skipped). */
class Cursor {
  private readonly small = Buffer.alloc(9);

  constructor(
    private readonly fd: number,
    readonly size: number,
    readonly file: string,
    public pos = 0,
  ) {}

  private read(n: number): Buffer {
    if (this.pos + n > this.size) throw new CheckpointError(`${this.file}: truncated at byte ${this.pos} (needs ${n} more of ${this.size}); the file is incomplete, download or copy it again`);
    const b = n <= this.small.length ? this.small : Buffer.alloc(n);
    fs.readSync(this.fd, b, 0, n, this.pos);
    this.pos += n;
    return b;
  }

  u8(): number {
    return this.read(1).readUInt8(0);
  }

  uint(n: 1 | 2 | 4 | 8): number {
    const b = this.read(n);
    if (n === 1) return b.readUInt8(0);
    if (n === 2) return b.readUInt16BE(0);
    if (n === 4) return b.readUInt32BE(0);
    const v = b.readBigUInt64BE(0);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CheckpointError(`${this.file}: a length of ${v} at byte ${this.pos - 8} cannot be right; the file is corrupt`);
    return Number(v);
  }

  text(n: number): string {
    return this.read(n).toString('utf8', 0, n);
  }

  skip(n: number): void {
    if (this.pos + n > this.size) throw new CheckpointError(`${this.file}: truncated at byte ${this.pos} (a ${n}-byte payload runs past the end of the ${this.size}-byte file); download or copy it again`);
    this.pos += n;
  }

  fail(what: string, at = this.pos): never {
    throw new CheckpointError(`${this.file}: not an LWM Jax params file (${what} at byte ${at})`);
  }
}

type Header = { t: 'array'; n: number } | { t: 'map'; n: number } | { t: 'str'; n: number } | { t: 'bin'; n: number } | { t: 'ext'; n: number; type: number } | { t: 'int'; v: number } | { t: 'bool'; v: boolean } | { t: 'nil' };

function header(c: Cursor): Header {
  const at = c.pos;
  const b = c.u8();
  if (b <= 0x7f) return { t: 'int', v: b };
  if (b >= 0x80 && b <= 0x8f) return { t: 'map', n: b & 0x0f };
  if (b >= 0x90 && b <= 0x9f) return { t: 'array', n: b & 0x0f };
  if (b >= 0xa0 && b <= 0xbf) return { t: 'str', n: b & 0x1f };
  switch (b) {
    case 0xc0: return { t: 'nil' };
    case 0xc2: return { t: 'bool', v: false };
    case 0xc3: return { t: 'bool', v: true };
    case 0xc4: return { t: 'bin', n: c.uint(1) };
    case 0xc5: return { t: 'bin', n: c.uint(2) };
    case 0xc6: return { t: 'bin', n: c.uint(4) };
    case 0xc7: { const n = c.uint(1); return { t: 'ext', n, type: (c.u8() << 24) >> 24 }; }
    case 0xc8: { const n = c.uint(2); return { t: 'ext', n, type: (c.u8() << 24) >> 24 }; }
    case 0xc9: { const n = c.uint(4); return { t: 'ext', n, type: (c.u8() << 24) >> 24 }; }
    case 0xcc: return { t: 'int', v: c.uint(1) };
    case 0xcd: return { t: 'int', v: c.uint(2) };
    case 0xce: return { t: 'int', v: c.uint(4) };
    case 0xcf: return { t: 'int', v: c.uint(8) };
    case 0xd4: return { t: 'ext', n: 1, type: (c.u8() << 24) >> 24 };
    case 0xd5: return { t: 'ext', n: 2, type: (c.u8() << 24) >> 24 };
    case 0xd6: return { t: 'ext', n: 4, type: (c.u8() << 24) >> 24 };
    case 0xd7: return { t: 'ext', n: 8, type: (c.u8() << 24) >> 24 };
    case 0xd8: return { t: 'ext', n: 16, type: (c.u8() << 24) >> 24 };
    case 0xd9: return { t: 'str', n: c.uint(1) };
    case 0xda: return { t: 'str', n: c.uint(2) };
    case 0xdb: return { t: 'str', n: c.uint(4) };
    case 0xdc: return { t: 'array', n: c.uint(2) };
    case 0xdd: return { t: 'array', n: c.uint(4) };
    case 0xde: return { t: 'map', n: c.uint(2) };
    case 0xdf: return { t: 'map', n: c.uint(4) };
    default: return c.fail(`msgpack byte 0x${b.toString(16)}`, at);
  }
}

function expect<T extends Header['t']>(c: Cursor, t: T, what: string): Extract<Header, { t: T }> {
  const at = c.pos;
  const h = header(c);
  if (h.t !== t) c.fail(`${what}: expected a msgpack ${t}, found ${h.t}`, at);
  return h as Extract<Header, { t: T }>;
}

const str = (c: Cursor, what: string) => c.text(expect(c, 'str', what).n);
const int = (c: Cursor, what: string) => expect(c, 'int', what).v;

/** ext type 1: [shape, dtype name, bin raw]; returns the raw bytes' place. */
function ndarray(c: Cursor, end: number): { dtype: string; shape: number[]; part: { offset: number; length: number } } {
  const e = expect(c, 'ext', 'array payload');
  if (e.type !== 1 && e.type !== 3) c.fail(`ext type ${e.type} (flax writes arrays as ext 1)`);
  if (expect(c, 'array', 'array payload').n !== 3) c.fail('an array payload of other than [shape, dtype, data]');
  const shape = Array.from({ length: expect(c, 'array', 'shape').n }, () => int(c, 'shape entry'));
  const dtype = str(c, 'dtype');
  const raw = expect(c, 'bin', 'array data');
  const part = { offset: c.pos, length: raw.n };
  c.skip(raw.n);
  if (c.pos > end) c.fail('an array running past its record');
  const size = ITEM_SIZE[dtype];
  if (size === undefined) c.fail(`dtype '${dtype}'`);
  if (shape.reduce((a, b) => a * b, 1) * size !== raw.n) c.fail(`${raw.n} data bytes for ${dtype} shape [${shape}]`);
  return { dtype, shape, part };
}

/** flax's chunked form of an array over 2^30 bytes: {__msgpack_chunked_array__, shape: {"0":..}, chunks: {"0": ext1, ..}}. */
function chunked(c: Cursor, entries: number, end: number): { dtype: string; shape: number[]; parts: { offset: number; length: number }[] } {
  let shape: number[] | null = null;
  let chunks: { dtype: string; part: { offset: number; length: number } }[] | null = null;
  for (let i = 0; i < entries; i++) {
    const k = str(c, 'chunked-array key');
    if (k === '__msgpack_chunked_array__') expect(c, 'bool', k);
    else if (k === 'shape') {
      const n = expect(c, 'map', 'chunked shape').n;
      const dims: number[] = [];
      for (let j = 0; j < n; j++) dims[Number(str(c, 'shape key'))] = int(c, 'shape value');
      shape = dims;
    } else if (k === 'chunks') {
      const n = expect(c, 'map', 'chunks').n;
      const list: { dtype: string; part: { offset: number; length: number } }[] = [];
      for (let j = 0; j < n; j++) {
        const idx = Number(str(c, 'chunk key'));
        const a = ndarray(c, end);
        list[idx] = { dtype: a.dtype, part: a.part };
      }
      chunks = list;
    } else c.fail(`chunked-array key '${k}'`);
  }
  if (!shape || !chunks || chunks.some((x) => !x) || shape.some((x) => x === undefined)) c.fail('an incomplete chunked array');
  const dtype = chunks[0]!.dtype;
  const total = chunks.reduce((a, x) => a + x.part.length, 0);
  if (chunks.some((x) => x.dtype !== dtype) || shape.reduce((a, b) => a * b, 1) * ITEM_SIZE[dtype]! !== total) c.fail(`chunks that do not make shape [${shape}]`);
  return { dtype, shape, parts: chunks.map((x) => x.part) };
}

/** Every record's key, dtype, shape and byte ranges, reading headers only. */
export function scanJaxParams(file: string): JaxRecord[] {
  if (!fs.existsSync(file)) throw new CheckpointError(`${file}: no such file; give the path of an LWM Jax params file`);
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) throw new CheckpointError(`${file}: the file is empty`);
    const c = new Cursor(fd, size, file);
    const out: JaxRecord[] = [];
    while (c.pos < size) {
      const recordOffset = c.pos;
      if (expect(c, 'array', 'record').n !== 2) c.fail('a record of other than [key, value]', recordOffset);
      const key = Array.from({ length: expect(c, 'array', 'key').n }, () => str(c, 'key component'));
      const bin = expect(c, 'bin', 'record value');
      const end = c.pos + bin.n;
      if (end > size) c.skip(bin.n);
      const at = c.pos;
      const h = header(c);
      let rec: { dtype: string; shape: number[]; parts: { offset: number; length: number }[] };
      if (h.t === 'map') rec = chunked(c, h.n, end);
      else {
        c.pos = at;
        const a = ndarray(c, end);
        rec = { dtype: a.dtype, shape: a.shape, parts: [a.part] };
      }
      if (c.pos !== end) c.fail(`a value of ${bin.n} bytes whose array ends at ${c.pos - recordOffset}`, recordOffset);
      out.push({ key, ...rec, recordOffset, recordLength: end - recordOffset });
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** One record's values as float32 (bf16, f16 or f32 on disk), read part by part. */
export function readJaxTensorF32(file: string, rec: JaxRecord): Float32Array {
  return readJaxSliceF32(file, rec, 0, rec.shape.reduce((a, b) => a * b, 1));
}

/**
 * `count` values from element `start` of a record (e.g. one layer of a scanned, stacked tensor),
 * reading only those bytes, across chunk boundaries.
 */
export function readJaxSliceF32(file: string, rec: JaxRecord, start: number, count: number): Float32Array {
  const dtype = JAX_STORAGE[rec.dtype];
  if (!dtype) throw new CheckpointError(`${file}: '${rec.key.join('/')}' is ${rec.dtype}; weights are read as bfloat16, float16 or float32`);
  const size = ITEM_SIZE[rec.dtype]!;
  const pieces: Float32Array[] = [];
  let skip = start * size;
  let want = count * size;
  for (const p of rec.parts) {
    if (want === 0) break;
    if (skip >= p.length) {
      skip -= p.length;
      continue;
    }
    const n = Math.min(p.length - skip, want);
    pieces.push(readTensorF32({ name: rec.key.join('/'), dtype, shape: [n / size], offset: p.offset + skip, byteLength: n }, file));
    want -= n;
    skip = 0;
  }
  if (want > 0) throw new CheckpointError(`${file}: '${rec.key.join('/')}' holds fewer than ${start + count} values`);
  if (pieces.length === 1) return pieces[0]!;
  const out = new Float32Array(count);
  let o = 0;
  for (const piece of pieces) (out.set(piece, o), (o += piece.length));
  return out;
}
