import * as fs from 'node:fs';
import * as path from 'node:path';
import llamaTokenizer from 'llama-tokenizer-js';
import { CheckpointError, ConfigError } from '../../ops/errors.js';
import type { LlamaConfig } from '../../models/config.js';
import { DEFAULT_TOKENIZER_SOURCE, loadTokenizer, type Tokenizer } from '../../data/tokenizer.js';
import { f32ToBf16, f32ToF16 } from './dtype.js';
import { WrittenRanges } from './files.js';
import { readModelConfig, safetensorsSource } from './modelDir.js';
import type { ModelSource } from './source.js';

/**
 * GGUF v3 export, so llama.cpp (and what is built on it) can run lwm checkpoints as its `llama`
 * architecture. Layout: magic, version, tensor count, metadata key/values, tensor infos, padding to
 * `general.alignment`, then each tensor's data at an aligned offset. All little-endian.
 */

export type GgufDtype = 'F32' | 'F16' | 'BF16';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_ALIGNMENT = 32;

export const GgufValueType = { UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12 } as const;
export const GgmlType = { F32: 0, F16: 1, BF16: 30 } as const;
/** llama.cpp's `llama_ftype`: what most of the file's tensors are stored as. */
export const GgufFileType = { F32: 0, F16: 1, BF16: 32 } as const;
/** llama.cpp's `llama_token_type` (SentencePiece piece kinds). */
export const GgufTokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export type Scalar = number | boolean | string;
export type Value = Scalar | Scalar[];
type Entry = { type: number; itemType?: number; value: Value };

const SCORE_UNUSED = -1000;
const BYTE_PIECE = /^<0x[0-9A-Fa-f]{2}>$/;

/**
 * Writes `outFile` as GGUF from a model folder (config.json + safetensors). Tensors are read, converted
 * and written one at a time; the file appears under its name only once complete.
 * 1-D (norm) weights stay F32 whatever `dtype` is, as llama.cpp's own converter does.
 */
export function writeGguf(modelDir: string, outFile: string, opts: GgufWriteOptions = {}): void {
  if (opts.dtype !== undefined && !(opts.dtype in GgmlType)) throw new ConfigError(`writeGguf: dtype must be F32, F16 or BF16, got ${JSON.stringify(opts.dtype)}`);
  // Refused on config.json alone, before any weight is read.
  refuseVision(readModelConfig(modelDir), modelDir);
  writeGgufFrom(safetensorsSource(modelDir), outFile, opts);
}

function refuseVision(c: LlamaConfig, name: string): void {
  if (c.visionVocabSize > 0) {
    throw new CheckpointError(
      `${name}: is an LWM vision-language model (vision_vocab_size ${c.visionVocabSize}); GGUF export supports text models only, since llama.cpp has no LWM vision architecture (try --text-only with --to hf)`,
    );
  }
}

export interface GgufWriteOptions {
  dtype?: GgufDtype;
  /** Called after each tensor's bytes are written (progress). */
  onWrite?: (bytes: number) => void;
  /** Read the finished file back and compare every tensor's sha256 with what was written. */
  verify?: boolean;
}

/** GGUF from any model source (a model folder, a PyTorch or Jax checkpoint being converted). */
export function writeGgufFrom(src: ModelSource, outFile: string, opts: GgufWriteOptions = {}): void {
  const dtype = opts.dtype ?? 'F32';
  if (!(dtype in GgmlType)) throw new ConfigError(`writeGguf: dtype must be F32, F16 or BF16, got ${JSON.stringify(dtype)}`);
  refuseVision(src.config, src.name);
  const tensors = planTensors(src, dtype);
  const header = new ByteWriter();
  const meta = metadata(src, dtype);
  header.u32(GGUF_MAGIC).u32(GGUF_VERSION).u64(tensors.length).u64(meta.length);
  for (const [key, e] of meta) header.str(key).entry(e);
  let offset = 0;
  for (const t of tensors) {
    header.str(t.name).u32(t.dims.length);
    for (const d of t.dims) header.u64(d);
    header.u32(GgmlType[t.dtype]).u64(offset);
    offset = alignUp(offset + t.byteLength);
  }
  header.pad(GGUF_ALIGNMENT);

  const dir = path.dirname(path.resolve(outFile));
  if (!fs.existsSync(dir)) throw new CheckpointError(`${outFile}: the folder ${dir} does not exist`);
  const tmp = `${outFile}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  const head = header.bytes();
  const ranges = opts.verify ? new WrittenRanges() : undefined;
  try {
    writeAll(fd, head);
    let at = head.length;
    for (const t of tensors) {
      const bytes = encode(t.read(), t.dtype);
      ranges?.begin(t.name, at);
      ranges?.update(bytes);
      writeAll(fd, bytes);
      writeAll(fd, new Uint8Array(alignUp(bytes.length) - bytes.length));
      at += alignUp(bytes.length);
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
    ranges?.verify(tmp, head.length + offset);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.renameSync(tmp, outFile);
}

interface PlannedTensor {
  name: string;
  /** ggml order: innermost (contiguous) dimension first, the reverse of the row-major shape. */
  dims: number[];
  dtype: GgufDtype;
  byteLength: number;
  read: () => Float32Array;
}

/** Sizes and names every tensor before the output file is created (the source has checked shapes). */
function planTensors(src: ModelSource, dtype: GgufDtype): PlannedTensor[] {
  const c = src.config;
  return src.tensors.map((s) => {
    const t = s.shape.length === 1 ? 'F32' : dtype;
    const count = s.shape.reduce((a, b) => a * b, 1);
    const heads = s.name.endsWith('q_proj.weight') ? c.numHeads : s.name.endsWith('k_proj.weight') ? c.numKvHeads : 0;
    return {
      name: ggufTensorName(s.name),
      dims: [...s.shape].reverse(),
      dtype: t,
      byteLength: count * (t === 'F32' ? 4 : 2),
      read: () => {
        const data = s.data();
        return heads > 0 ? permuteRopeRows(data, heads, s.shape[1]!) : data;
      },
    };
  });
}

const FIXED_NAMES: Record<string, string> = { 'model.embed_tokens.weight': 'token_embd.weight', 'model.norm.weight': 'output_norm.weight', 'lm_head.weight': 'output.weight' };
const LAYER_PARTS: Record<string, string> = {
  input_layernorm: 'attn_norm', 'self_attn.q_proj': 'attn_q', 'self_attn.k_proj': 'attn_k', 'self_attn.v_proj': 'attn_v', 'self_attn.o_proj': 'attn_output',
  post_attention_layernorm: 'ffn_norm', 'mlp.gate_proj': 'ffn_gate', 'mlp.up_proj': 'ffn_up', 'mlp.down_proj': 'ffn_down',
};

/** Hugging Face LlamaForCausalLM weight name -> llama.cpp's name for the `llama` architecture. */
export function ggufTensorName(hf: string): string {
  if (FIXED_NAMES[hf]) return FIXED_NAMES[hf];
  const m = /^model\.layers\.(\d+)\.(.+)\.weight$/.exec(hf);
  const part = m ? LAYER_PARTS[m[2]!] : undefined;
  if (!m || !part) throw new CheckpointError(`GGUF export: no llama.cpp name for weight '${hf}'`);
  return `blk.${m[1]}.${part}.weight`;
}

/**
 * Hugging Face q/k rows are laid out for rotate-half RoPE (pairs (i, i + d/2) in each head); llama.cpp's
 * llama RoPE rotates adjacent pairs (2i, 2i + 1). So row 2i + s of a head takes HF row s * d/2 + i
 * (s = 0, 1), which is llama.cpp's convert_hf_to_gguf `permute`.
 */
export function permuteRopeRows(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols;
  const half = rows / heads / 2;
  if (!Number.isInteger(half)) throw new CheckpointError(`GGUF export: ${rows} q/k rows do not split into ${heads} heads of even size`);
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let s = 0; s < 2; s++) {
        const src = (h * 2 * half + s * half + i) * cols;
        out.set(w.subarray(src, src + cols), (h * 2 * half + 2 * i + s) * cols);
      }
    }
  }
  return out;
}

function metadata(src: ModelSource, dtype: GgufDtype): [string, Entry][] {
  const c = src.config;
  const u32 = (value: number): Entry => ({ type: GgufValueType.UINT32, value });
  const f32 = (value: number): Entry => ({ type: GgufValueType.FLOAT32, value });
  const vocab = vocabulary(src.tokenizerDir, src.name, c);
  return [
    ['general.architecture', { type: GgufValueType.STRING, value: 'llama' }],
    ['general.name', { type: GgufValueType.STRING, value: src.name }],
    ['general.file_type', u32(GgufFileType[dtype])],
    ['general.alignment', u32(GGUF_ALIGNMENT)],
    ['llama.vocab_size', u32(c.vocabSize)],
    ['llama.context_length', u32(c.maxSeqLen)],
    ['llama.embedding_length', u32(c.hiddenSize)],
    ['llama.block_count', u32(c.numLayers)],
    ['llama.feed_forward_length', u32(c.intermediateSize)],
    ['llama.rope.dimension_count', u32(c.headDim)],
    ['llama.attention.head_count', u32(c.numHeads)],
    ['llama.attention.head_count_kv', u32(c.numKvHeads)],
    // llama.cpp assumes hidden / heads unless told; lwm configs may set head_dim independently.
    ['llama.attention.key_length', u32(c.headDim)],
    ['llama.attention.value_length', u32(c.headDim)],
    ['llama.attention.layer_norm_rms_epsilon', f32(c.rmsNormEps)],
    ['llama.rope.freq_base', f32(c.ropeTheta)],
    ['tokenizer.ggml.model', { type: GgufValueType.STRING, value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: GgufValueType.ARRAY, itemType: GgufValueType.STRING, value: vocab.tokens }],
    ['tokenizer.ggml.scores', { type: GgufValueType.ARRAY, itemType: GgufValueType.FLOAT32, value: vocab.scores }],
    ['tokenizer.ggml.token_type', { type: GgufValueType.ARRAY, itemType: GgufValueType.INT32, value: vocab.types }],
    ['tokenizer.ggml.bos_token_id', u32(c.bosTokenId)],
    ['tokenizer.ggml.eos_token_id', u32(c.eosTokenId)],
    ...(vocab.unkId >= 0 ? [['tokenizer.ggml.unknown_token_id', u32(vocab.unkId)] as [string, Entry]] : []),
    // LLaMA-2's convention (and `lwm generate`'s default): prompts start with BOS, never end with EOS.
    ['tokenizer.ggml.add_bos_token', { type: GgufValueType.BOOL, value: true }],
    ['tokenizer.ggml.add_eos_token', { type: GgufValueType.BOOL, value: false }],
  ];
}

/**
 * The SentencePiece vocabulary llama.cpp's SPM tokenizer needs. It merges the adjacent pair whose
 * result has the highest score, so a piece's score is minus the rank of the first BPE merge that
 * makes it: llama.cpp then merges in the same order as the tokenizer lwm uses. (Vocabulary order is no
 * substitute: LLaMA-2's "▁▁" has id 259 but is its very last merge.)
 */
function vocabulary(tokenizerDir: string | undefined, name: string, c: LlamaConfig): { tokens: string[]; scores: number[]; types: number[]; unkId: number } {
  const tok = loadTokenizer(tokenizerDir);
  if (tok.vocabSize > c.vocabSize) {
    throw new CheckpointError(`${tokenizerDir ?? name}: the tokenizer has ${tok.vocabSize} tokens but config.json's vocab_size is ${c.vocabSize}; they must match`);
  }
  const { ranks, added } = mergeSource(tok);
  const tokens: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  const idOf = new Map<string, number>();
  for (let id = 0; id < tok.vocabSize; id++) {
    const piece = tok.idToPiece(id);
    tokens.push(piece);
    if (!idOf.has(piece)) idOf.set(piece, id);
  }
  const rankOf = new Map<number, number>();
  ranks.forEach((piece, rank) => {
    const id = idOf.get(piece);
    if (id !== undefined && !rankOf.has(id)) rankOf.set(id, rank);
  });
  const control = new Set([c.bosTokenId, c.eosTokenId, tok.bosId, tok.eosId]);
  for (let id = 0; id < tok.vocabSize; id++) {
    const piece = tokens[id]!;
    const special = added.get(piece);
    let type: number = GgufTokenType.NORMAL;
    if (id === tok.unkId) type = GgufTokenType.UNKNOWN;
    else if (control.has(id) || special === true) type = GgufTokenType.CONTROL;
    else if (special === false) type = GgufTokenType.USER_DEFINED;
    else if (BYTE_PIECE.test(piece)) type = GgufTokenType.BYTE;
    types.push(type);
    const rank = rankOf.get(id);
    // The first merge scores -1, as in LLaMA-2's own model file; pieces no merge makes (single
    // characters) rank below every merge, in vocabulary order.
    scores.push(type !== GgufTokenType.NORMAL ? 0 : -1 - (rank ?? ranks.length + id));
  }
  // llama.cpp's converter pads a vocabulary shorter than the embedding the same way.
  for (let id = tok.vocabSize; id < c.vocabSize; id++) {
    tokens.push(`[PAD${id}]`);
    scores.push(SCORE_UNUSED);
    types.push(GgufTokenType.UNUSED);
  }
  return { tokens, scores, types, unkId: tok.unkId };
}

/**
 * The merged piece of each BPE merge in rank order, and the added tokens (content -> special), from
 * the same source `loadTokenizer` read: a checkpoint's tokenizer.json or llama-tokenizer-js.
 */
function mergeSource(tok: Tokenizer): { ranks: string[]; added: Map<string, boolean> } {
  if (tok.source === DEFAULT_TOKENIZER_SOURCE) {
    const ordered = [...llamaTokenizer.merges.entries()].sort((a, b) => a[1] - b[1]);
    return { ranks: ordered.map(([pair]) => pair.replace(' ', '')), added: new Map() };
  }
  // loadTokenizer has already validated this file, so its shape can be trusted here.
  const json = JSON.parse(fs.readFileSync(tok.source, 'utf8')) as {
    model: { merges: (string | [string, string])[] };
    added_tokens?: { content: string; special?: boolean }[];
  };
  const ranks = json.model.merges.map((m) => (typeof m === 'string' ? m.replace(' ', '') : m.join('')));
  const added = new Map((json.added_tokens ?? []).map((t) => [t.content, t.special === true] as const));
  return { ranks, added };
}

function encode(data: Float32Array, dtype: GgufDtype): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const half = new Uint16Array(data.length);
  if (dtype === 'BF16') f32ToBf16(data, half);
  else f32ToF16(data, half);
  return new Uint8Array(half.buffer);
}

function alignUp(n: number): number {
  return Math.ceil(n / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
}

function writeAll(fd: number, bytes: Uint8Array): void {
  const chunk = 64 * 1024 * 1024;
  for (let done = 0; done < bytes.length; ) done += fs.writeSync(fd, bytes, done, Math.min(chunk, bytes.length - done));
}

/** Fixed-size GGUF scalars: byte size, reader and writer (strings are handled apart). */
const SCALARS: Record<number, [number, (b: Buffer) => Scalar, (b: Buffer, v: Scalar) => void]> = {
  [GgufValueType.UINT8]: [1, (b) => b.readUInt8(0), (b, v) => b.writeUInt8(v as number)],
  [GgufValueType.INT8]: [1, (b) => b.readInt8(0), (b, v) => b.writeInt8(v as number)],
  [GgufValueType.UINT16]: [2, (b) => b.readUInt16LE(0), (b, v) => b.writeUInt16LE(v as number)],
  [GgufValueType.INT16]: [2, (b) => b.readInt16LE(0), (b, v) => b.writeInt16LE(v as number)],
  [GgufValueType.UINT32]: [4, (b) => b.readUInt32LE(0), (b, v) => b.writeUInt32LE(v as number)],
  [GgufValueType.INT32]: [4, (b) => b.readInt32LE(0), (b, v) => b.writeInt32LE(v as number)],
  [GgufValueType.FLOAT32]: [4, (b) => b.readFloatLE(0), (b, v) => b.writeFloatLE(v as number)],
  [GgufValueType.BOOL]: [1, (b) => b.readUInt8(0) !== 0, (b, v) => b.writeUInt8(v ? 1 : 0)],
  [GgufValueType.UINT64]: [8, (b) => Number(b.readBigUInt64LE(0)), (b, v) => b.writeBigUInt64LE(BigInt(v as number))],
  [GgufValueType.INT64]: [8, (b) => Number(b.readBigInt64LE(0)), (b, v) => b.writeBigInt64LE(BigInt(v as number))],
  [GgufValueType.FLOAT64]: [8, (b) => b.readDoubleLE(0), (b, v) => b.writeDoubleLE(v as number)],
};

/** Growable little-endian buffer for the header (the tokenizer arrays make it ~1 MB for LLaMA-2). */
class ByteWriter {
  private buf = Buffer.alloc(1 << 20);
  private len = 0;

  /** A view of the next n bytes; a view, since growing replaces the buffer. */
  private room(n: number): Buffer {
    if (this.len + n > this.buf.length) {
      const bigger = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n));
      this.buf.copy(bigger, 0, 0, this.len);
      this.buf = bigger;
    }
    this.len += n;
    return this.buf.subarray(this.len - n, this.len);
  }

  u32(v: number): this {
    return this.scalar(GgufValueType.UINT32, v);
  }

  u64(v: number): this {
    return this.scalar(GgufValueType.UINT64, v);
  }

  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    b.copy(this.u64(b.length).room(b.length));
    return this;
  }

  private scalar(type: number, v: Scalar): this {
    if (type === GgufValueType.STRING) return this.str(v as string);
    const [size, , write] = SCALARS[type]!;
    write(this.room(size), v);
    return this;
  }

  entry(e: Entry): this {
    this.u32(e.type);
    if (e.type !== GgufValueType.ARRAY) return this.scalar(e.type, e.value as Scalar);
    const items = e.value as Scalar[];
    this.u32(e.itemType!).u64(items.length);
    for (const v of items) this.scalar(e.itemType!, v);
    return this;
  }

  pad(alignment: number): this {
    this.room((alignment - (this.len % alignment)) % alignment);
    return this;
  }

  bytes(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

export interface GgufTensorInfo {
  name: string;
  /** ggml order: innermost dimension first (a [rows, cols] matrix is [cols, rows]). */
  dims: number[];
  type: number;
  /** Offset from the start of the data section, as stored. */
  offset: number;
  /** Absolute position of the data in the file. */
  fileOffset: number;
  /** Undefined for ggml types other than F32, F16 and BF16. */
  byteLength: number | undefined;
}

export interface GgufHeader {
  version: number;
  alignment: number;
  metadata: Record<string, Value>;
  /** The GGUF value type of each metadata key (for arrays: ARRAY; see `arrayTypes`). */
  types: Record<string, number>;
  arrayTypes: Record<string, number>;
  tensors: GgufTensorInfo[];
  /** Absolute offset where the data section starts. */
  dataOffset: number;
}

/** Reads a GGUF file's metadata and tensor table (not the tensor data). */
export function readGgufHeader(file: string): GgufHeader {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CheckpointError(code === 'ENOENT' ? `${file}: no such file` : `${file}: cannot open (${code ?? String(e)})`);
  }
  try {
    const r = new ByteReader(fd, file);
    if (r.u32() !== GGUF_MAGIC) throw new CheckpointError(`${file}: not a GGUF file (bad magic)`);
    const version = r.u32();
    if (version !== 2 && version !== 3) throw new CheckpointError(`${file}: GGUF version ${version} is not supported (2 or 3 are)`);
    const nTensors = r.u64();
    const nKv = r.u64();
    const metadata: Record<string, Value> = {};
    const types: Record<string, number> = {};
    const arrayTypes: Record<string, number> = {};
    for (let i = 0; i < nKv; i++) {
      const key = r.str();
      const type = r.u32();
      types[key] = type;
      if (type === GgufValueType.ARRAY) {
        const itemType = r.u32();
        arrayTypes[key] = itemType;
        const n = r.u64();
        const items: Scalar[] = [];
        for (let j = 0; j < n; j++) items.push(r.scalar(itemType));
        metadata[key] = items;
      } else metadata[key] = r.scalar(type);
    }
    const alignment = typeof metadata['general.alignment'] === 'number' ? metadata['general.alignment'] : GGUF_ALIGNMENT;
    const tensors: GgufTensorInfo[] = [];
    for (let i = 0; i < nTensors; i++) {
      const name = r.str();
      const dims = Array.from({ length: r.u32() }, () => r.u64());
      const type = r.u32();
      const offset = r.u64();
      const itemSize = type === GgmlType.F32 ? 4 : type === GgmlType.F16 || type === GgmlType.BF16 ? 2 : undefined;
      tensors.push({ name, dims, type, offset, fileOffset: 0, byteLength: itemSize && dims.reduce((a, b) => a * b, itemSize) });
    }
    const dataOffset = Math.ceil(r.position / alignment) * alignment;
    for (const t of tensors) t.fileOffset = dataOffset + t.offset;
    return { version, alignment, metadata, types, arrayTypes, tensors, dataOffset };
  } finally {
    fs.closeSync(fd);
  }
}

/** Reads the file on demand in chunks, since the header's size is only known once it is parsed. */
class ByteReader {
  private buf = Buffer.alloc(0);
  private start = 0; // file position of buf[0]
  position = 0;

  constructor(
    private readonly fd: number,
    private readonly file: string,
  ) {}

  /** A view of the next n bytes; a view, since refilling replaces the buffer. */
  private take(n: number): Buffer {
    if (this.position + n > this.start + this.buf.length) {
      const keep = this.buf.subarray(this.position - this.start);
      const more = Buffer.alloc(Math.max(n, 1 << 20));
      const got = fs.readSync(this.fd, more, 0, more.length, this.start + this.buf.length);
      this.buf = Buffer.concat([keep, more.subarray(0, got)]);
      this.start = this.position;
      if (this.position + n > this.start + this.buf.length) throw new CheckpointError(`${this.file}: truncated GGUF header`);
    }
    const at = this.position - this.start;
    this.position += n;
    return this.buf.subarray(at, at + n);
  }

  u32(): number {
    return this.take(4).readUInt32LE(0);
  }

  u64(): number {
    const v = this.take(8).readBigUInt64LE(0);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CheckpointError(`${this.file}: corrupt GGUF header (a count or size of ${v})`);
    return Number(v);
  }

  str(): string {
    return this.take(this.u64()).toString('utf8');
  }

  scalar(type: number): Scalar {
    if (type === GgufValueType.STRING) return this.str();
    const known = SCALARS[type];
    if (!known) throw new CheckpointError(`${this.file}: corrupt GGUF header (value type ${type})`);
    return known[1](this.take(known[0]));
  }
}
