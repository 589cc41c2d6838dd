import * as fs from 'node:fs';
import type { LlamaConfig } from '../../models/index.js';

/**
 * A streaming writer of LWM Jax StreamingCheckpointer files (lwm-spec 8.2), for tests and the
 * convert bench. Headers are computed from lengths alone, so tensor bytes are produced piece by
 * piece and a 2.9 GB record never exists in memory.
 */
export interface JaxParamsRecord {
  key: readonly string[];
  dtype: 'bfloat16' | 'float16' | 'float32';
  shape: readonly number[];
  /** Puts the C-order little-endian bytes [offset, offset + out.length) of the tensor into out. */
  fill(offset: number, out: Uint8Array): void;
}

export interface WriteJaxParamsOptions {
  /** flax's MAX_CHUNK_SIZE: arrays of strictly more bytes are chunked. Tests lower it. */
  maxChunkBytes?: number;
  /** Bytes handed to fill() at a time. */
  pieceBytes?: number;
}

const ITEM_SIZE = { bfloat16: 2, float16: 2, float32: 4 } as const;
export const FLAX_MAX_CHUNK_BYTES = 2 ** 30;

/** Either header bytes or a span of the tensor's raw bytes, which fill() produces when written. */
type Segment = Buffer | { raw: number; length: number };

/** msgpack-python's choice of the shortest form for each header (flax writes through it). */
function lengthHeader(n: number, fix: [number, number] | null, forms: [number, 1 | 2 | 4][]): Buffer {
  if (fix && n <= fix[1]) return Buffer.from([fix[0] | n]);
  for (const [tag, bytes] of forms) {
    if (n < 2 ** (8 * bytes)) {
      const b = Buffer.alloc(1 + bytes);
      b[0] = tag;
      b.writeUIntBE(n, 1, bytes);
      return b;
    }
  }
  throw new Error(`msgpack: length ${n} too large`);
}

const arrayHeader = (n: number) => lengthHeader(n, [0x90, 15], [[0xdc, 2], [0xdd, 4]]);
const mapHeader = (n: number) => lengthHeader(n, [0x80, 15], [[0xde, 2], [0xdf, 4]]);
const binHeader = (n: number) => lengthHeader(n, null, [[0xc4, 1], [0xc5, 2], [0xc6, 4]]);

function str(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([lengthHeader(b.length, [0xa0, 31], [[0xd9, 1], [0xda, 2], [0xdb, 4]]), b]);
}

function uint(v: number): Buffer {
  if (!Number.isSafeInteger(v) || v < 0) throw new Error(`msgpack: ${v} is not a non-negative integer`);
  if (v <= 0x7f) return Buffer.from([v]);
  for (const [tag, bytes] of [[0xcc, 1], [0xcd, 2], [0xce, 4]] as const) {
    if (v < 2 ** (8 * bytes)) {
      const b = Buffer.alloc(1 + bytes);
      b[0] = tag;
      b.writeUIntBE(v, 1, bytes);
      return b;
    }
  }
  const b = Buffer.alloc(9);
  b[0] = 0xcf;
  b.writeBigUInt64BE(BigInt(v), 1);
  return b;
}

function extHeader(n: number, type: number): Buffer {
  const fixed = [1, 2, 4, 8, 16].indexOf(n);
  const head = fixed >= 0 ? Buffer.from([0xd4 + fixed]) : lengthHeader(n, null, [[0xc7, 1], [0xc8, 2], [0xc9, 4]]);
  return Buffer.concat([head, Buffer.from([type & 0xff])]);
}

const total = (segs: Segment[]) => segs.reduce((a, s) => a + s.length, 0);

/** flax _ndarray_to_bytes: ext 1 ([shape, dtype, bin(raw)]) over raw bytes [raw, raw + length). */
function ndarray(shape: readonly number[], dtype: string, raw: number, length: number): Segment[] {
  const inner: Segment[] = [Buffer.concat([Buffer.from([0x93]), arrayHeader(shape.length), ...shape.map(uint), str(dtype), binHeader(length)]), { raw, length }];
  return [extHeader(total(inner), 1), ...inner];
}

/** flax _chunk: the flat array cut into maxChunkBytes / itemsize elements, keys in flax's dict order. */
function chunked(rec: JaxParamsRecord, elements: number, maxChunkBytes: number): Segment[] {
  const item = ITEM_SIZE[rec.dtype];
  const per = Math.max(1, Math.floor(maxChunkBytes / item));
  const count = Math.ceil(elements / per);
  const segs: Segment[] = [mapHeader(3), str('__msgpack_chunked_array__'), Buffer.from([0xc3]), str('shape'), mapHeader(rec.shape.length)];
  rec.shape.forEach((d, i) => segs.push(str(String(i)), uint(d)));
  segs.push(str('chunks'), mapHeader(count));
  for (let i = 0; i < count; i++) {
    const n = Math.min(per, elements - i * per);
    segs.push(str(String(i)), ...ndarray([n], rec.dtype, i * per * item, n * item));
  }
  return segs;
}

/** One record: [key path, bin(to_bytes(array))]. */
function recordSegments(rec: JaxParamsRecord, maxChunkBytes: number): Segment[] {
  const elements = rec.shape.reduce((a, b) => a * b, 1);
  const bytes = elements * ITEM_SIZE[rec.dtype];
  const payload = bytes > maxChunkBytes ? chunked(rec, elements, maxChunkBytes) : ndarray(rec.shape, rec.dtype, 0, bytes);
  return [Buffer.concat([Buffer.from([0x92]), arrayHeader(rec.key.length), ...rec.key.map(str), binHeader(total(payload))]), ...payload];
}

function writeAll(fd: number, b: Uint8Array): void {
  for (let o = 0; o < b.length; ) o += fs.writeSync(fd, b, o, b.length - o);
}

/** Writes the records in the given order; returns the file's size. */
export function writeJaxParams(file: string, records: Iterable<JaxParamsRecord>, opts: WriteJaxParamsOptions = {}): number {
  const maxChunkBytes = opts.maxChunkBytes ?? FLAX_MAX_CHUNK_BYTES;
  const piece = new Uint8Array(opts.pieceBytes ?? 4 << 20);
  const fd = fs.openSync(file, 'w');
  let size = 0;
  try {
    for (const rec of records) {
      for (const s of recordSegments(rec, maxChunkBytes)) {
        if (Buffer.isBuffer(s)) writeAll(fd, s);
        else {
          for (let o = 0; o < s.length; o += piece.length) {
            const out = piece.subarray(0, Math.min(piece.length, s.length - o));
            rec.fill(s.raw + o, out);
            writeAll(fd, out);
          }
        }
        size += s.length;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return size;
}

// Bound once: under jest's vm context a global lookup in this hot loop costs about a microsecond.
const imul = Math.imul;

/**
 * bf16 bits of elements 2p (low half) and 2p + 1 (high half): a counter hash, so any slice can
 * be regenerated without the ones before it, and one hash serves two elements. Sign and mantissa
 * are random; magnitudes are kept in [2^-8, 1), so every value is finite, normal and survives a
 * bf16/f32 round trip exactly.
 */
export function bf16PairBits(seed: number, p: number): number {
  let h = imul((p >>> 0) ^ seed, 0x9e3779b1) ^ ((p / 4294967296) | 0);
  h ^= h >>> 16;
  h = imul(h, 0x85ebca77);
  h ^= h >>> 13;
  // Exponent 119 + 3 random bits in each half; the adds cannot carry into the other half.
  return ((h & 0x807f807f) | ((((h >>> 7) & 0x00070007) + 0x00770077) << 7)) >>> 0;
}

export const bf16Bits = (seed: number, i: number) => (bf16PairBits(seed, (i - (i % 2)) / 2) >>> (16 * (i % 2))) & 0xffff;

/** A bf16 record whose values are bf16Bits(seed, i); writes assume a little-endian host, as flax does. */
export function randomBf16Record(key: string, shape: readonly number[], seed: number): JaxParamsRecord {
  return {
    key: key.split('/'),
    dtype: 'bfloat16',
    shape,
    fill(offset, out) {
      if (offset % 4 === 0 && out.length % 4 === 0 && out.byteOffset % 4 === 0) {
        const u32 = new Uint32Array(out.buffer, out.byteOffset, out.length / 4);
        const p0 = offset / 4;
        for (let j = 0; j < u32.length; j++) u32[j] = bf16PairBits(seed, p0 + j);
        return;
      }
      // Odd pieces only occur in tests (tiny chunk and piece sizes); speed does not matter there.
      if (offset % 2 !== 0 || out.length % 2 !== 0) throw new Error('bf16 pieces must be whole elements');
      for (let j = 0; j < out.length / 2; j++) {
        const v = bf16Bits(seed, offset / 2 + j);
        out[2 * j] = v & 0xff;
        out[2 * j + 1] = v >>> 8;
      }
    },
  };
}

/** A record whose raw bytes are already in memory (small tensors, fixtures). */
export function bufferRecord(key: string, dtype: JaxParamsRecord['dtype'], shape: readonly number[], bytes: Uint8Array): JaxParamsRecord {
  return { key: key.split('/'), dtype, shape, fill: (offset, out) => out.set(bytes.subarray(offset, offset + out.length)) };
}

/** Key and shape of every record of a scanned LWM `params` file (Flax kernels are (in, out)). */
export function scannedLwmShapes(c: Readonly<LlamaConfig>): [string, number[]][] {
  const e = c.hiddenSize;
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  const L = c.numLayers;
  const layer = `transformer/h/scan_decoder`;
  const out: [string, number[]][] = [
    ['lm_head/kernel', [e, c.vocabSize]],
    [`${layer}/attention/wk/kernel`, [L, e, kv]],
    [`${layer}/attention/wo/kernel`, [L, q, e]],
    [`${layer}/attention/wq/kernel`, [L, e, q]],
    [`${layer}/attention/wv/kernel`, [L, e, kv]],
    [`${layer}/attention_norm/kernel`, [L, e]],
    [`${layer}/feed_forward/w1/kernel`, [L, e, c.intermediateSize]],
    [`${layer}/feed_forward/w2/kernel`, [L, c.intermediateSize, e]],
    [`${layer}/feed_forward/w3/kernel`, [L, e, c.intermediateSize]],
    [`${layer}/ffn_norm/kernel`, [L, e]],
    ['transformer/ln_f/kernel', [e]],
    ['transformer/wte/embedding', [c.vocabSize, e]],
  ];
  if (c.visionVocabSize > 0) out.push(['transformer/vte/embedding', [c.visionVocabSize, e]], ['vision_head/kernel', [e, c.visionVocabSize]]);
  // A jitted flax tree is in sorted key order, as the released files most likely are.
  return out.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Per-record seed, so records differ from each other and from other seeds. */
export const recordSeed = (seed: number, index: number) => Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2f) ^ Math.imul(index + 1, 0x165667b1);

/** The records of a scanned LWM params file for config c (7B: ~13.5 GB), with random bf16 values. */
export function scannedLwmRecords(c: Readonly<LlamaConfig>, seed: number): JaxParamsRecord[] {
  return scannedLwmShapes(c).map(([key, shape], i) => randomBf16Record(key, shape, recordSeed(seed, i)));
}
