import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { CheckpointError, ConfigError, createModel, defaultTokenizer, readWeightIndex, readTensorF32, saveModel } from '../../src/index.js';
import { f16ToF32, f32ToF16 } from '../../src/checkpoint/dtype.js';
import {
  GgmlType,
  GgufTokenType,
  GgufValueType,
  readGgufHeader,
  writeGguf,
  type GgufHeader,
  type GgufTensorInfo,
} from '../../src/checkpoint/gguf.js';
import { fixture, tmpDir } from '../helpers/paths.js';

const FIXTURE = fixture('tiny-lwm-text');
const META = '\u2581';

function convert(dtype?: 'F32' | 'F16' | 'BF16', dir = FIXTURE): { file: string; h: GgufHeader } {
  const file = path.join(tmpDir('gguf'), 'model.gguf');
  writeGguf(dir, file, dtype ? { dtype } : {});
  return { file, h: readGgufHeader(file) };
}

function tensor(h: GgufHeader, name: string): GgufTensorInfo {
  const t = h.tensors.find((x) => x.name === name);
  if (!t) throw new Error(`no tensor ${name}`);
  return t;
}

function bytesOf(file: string, t: GgufTensorInfo): Buffer {
  const fd = fs.openSync(file, 'r');
  const b = Buffer.alloc(t.byteLength!);
  fs.readSync(fd, b, 0, b.length, t.fileOffset);
  fs.closeSync(fd);
  return b;
}

/** Bitwise equality; jest's toEqual walks large typed arrays element by element, far too slowly. */
const sameBits = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
const f32Of = (b: Buffer) => new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
const u16Of = (b: Buffer) => new Uint16Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));

function source(name: string): Float32Array {
  const e = readWeightIndex(FIXTURE).get(name)!;
  return readTensorF32(e, e.file);
}

/** Hugging Face q/k rows -> llama.cpp's adjacent-pair RoPE order, written out index by index. */
function expectedPermuted(w: Float32Array, heads: number, cols: number): Float32Array {
  const hd = w.length / cols / heads;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++)
    for (let r = 0; r < hd; r++) {
      const src = h * hd + (r % 2) * (hd / 2) + Math.floor(r / 2);
      for (let c = 0; c < cols; c++) out[(h * hd + r) * cols + c] = w[src * cols + c]!;
    }
  return out;
}

/** llama.cpp's SPM tokenizer: merge the adjacent pair whose result scores highest (leftmost on ties). */
function spmTokenize(text: string, tokens: string[], scores: number[]): number[] {
  const idOf = new Map<string, number>();
  tokens.forEach((t, i) => idOf.has(t) || idOf.set(t, i));
  const sym = [...(META + text.replaceAll(' ', META))];
  for (;;) {
    let best = -1;
    let bestScore = -Infinity;
    for (let i = 0; i + 1 < sym.length; i++) {
      const id = idOf.get(sym[i]! + sym[i + 1]!);
      if (id !== undefined && scores[id]! > bestScore) [best, bestScore] = [i, scores[id]!];
    }
    if (best < 0) break;
    sym.splice(best, 2, sym[best]! + sym[best + 1]!);
  }
  return sym.flatMap((s) => idOf.get(s) ?? [...Buffer.from(s)].map((b) => idOf.get(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)!));
}

describe('writeGguf: the tiny-lwm-text fixture (F32)', () => {
  const { file, h } = convert('F32');

  it('writes GGUF v3 with llama.cpp llama-architecture metadata', () => {
    expect(h.version).toBe(3);
    expect(h.alignment).toBe(32);
    const m = h.metadata;
    expect(m['general.architecture']).toBe('llama');
    expect(m['general.file_type']).toBe(0);
    expect(m['general.alignment']).toBe(32);
    expect({
      vocab: m['llama.vocab_size'],
      ctx: m['llama.context_length'],
      embd: m['llama.embedding_length'],
      blocks: m['llama.block_count'],
      ff: m['llama.feed_forward_length'],
      rope: m['llama.rope.dimension_count'],
      heads: m['llama.attention.head_count'],
      kv: m['llama.attention.head_count_kv'],
      k: m['llama.attention.key_length'],
    }).toEqual({ vocab: 32000, ctx: 4096, embd: 64, blocks: 2, ff: 172, rope: 16, heads: 4, kv: 4, k: 16 });
    expect(m['llama.rope.freq_base']).toBe(1e7);
    expect(m['llama.attention.layer_norm_rms_epsilon']).toBe(Math.fround(1e-6));
    expect(h.types['llama.attention.layer_norm_rms_epsilon']).toBe(GgufValueType.FLOAT32);
    expect(h.types['llama.block_count']).toBe(GgufValueType.UINT32);
    expect([m['tokenizer.ggml.bos_token_id'], m['tokenizer.ggml.eos_token_id'], m['tokenizer.ggml.unknown_token_id']]).toEqual([1, 2, 0]);
    expect(m['tokenizer.ggml.model']).toBe('llama');
    expect(m['tokenizer.ggml.add_bos_token']).toBe(true);
  });

  it('carries the LLaMA-2 vocabulary with token types', () => {
    const tokens = h.metadata['tokenizer.ggml.tokens'] as string[];
    const types = h.metadata['tokenizer.ggml.token_type'] as number[];
    expect([h.arrayTypes['tokenizer.ggml.tokens'], h.arrayTypes['tokenizer.ggml.scores'], h.arrayTypes['tokenizer.ggml.token_type']]).toEqual([
      GgufValueType.STRING,
      GgufValueType.FLOAT32,
      GgufValueType.INT32,
    ]);
    expect(tokens).toHaveLength(32000);
    expect(tokens.slice(0, 4)).toEqual(['<unk>', '<s>', '</s>', '<0x00>']);
    expect(tokens[258]).toBe('<0xFF>');
    const tok = defaultTokenizer();
    expect(tokens.every((t, i) => t === tok.idToPiece(i))).toBe(true);
    expect(types.slice(0, 4)).toEqual([GgufTokenType.UNKNOWN, GgufTokenType.CONTROL, GgufTokenType.CONTROL, GgufTokenType.BYTE]);
    expect(types.slice(3, 259).every((t) => t === GgufTokenType.BYTE)).toBe(true);
    expect(types.slice(259).every((t) => t === GgufTokenType.NORMAL)).toBe(true);
  });

  it('scores pieces by merge rank, so llama.cpp-style SPM merging tokenizes like LLaMA-2', () => {
    const tokens = h.metadata['tokenizer.ggml.tokens'] as string[];
    const scores = h.metadata['tokenizer.ggml.scores'] as number[];
    expect(scores[tokens.indexOf(`${META}t`)]).toBe(-1); // LLaMA-2's first merge
    // "▁▁" has id 259 but is the last merge: vocabulary order would put it first.
    expect(scores[259]!).toBeLessThan(scores[tokens.indexOf(`${META}the`)]!);
    expect(scores[tokens.indexOf('e')]!).toBeLessThan(scores[259]!);
    const tok = defaultTokenizer();
    for (const text of ['The quick brown fox jumps over the lazy dog.', 'Hello  world,   tokenizers!', 'naïve café — 日本語 🦙', 'x=1;  y = [a, b]  ']) {
      expect(spmTokenize(text, tokens, scores)).toEqual(tok.encode(text));
    }
  });

  it('names, shapes and lays out every tensor as llama.cpp expects', () => {
    expect(h.tensors.map((t) => t.name)).toEqual([
      'token_embd.weight',
      ...[0, 1].flatMap((i) =>
        ['attn_norm', 'attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_norm', 'ffn_gate', 'ffn_up', 'ffn_down'].map((p) => `blk.${i}.${p}.weight`),
      ),
      'output_norm.weight',
      'output.weight',
    ]);
    expect(tensor(h, 'token_embd.weight').dims).toEqual([64, 32000]); // ggml order: [cols, rows]
    expect(tensor(h, 'blk.1.ffn_gate.weight').dims).toEqual([64, 172]);
    expect(tensor(h, 'blk.1.ffn_down.weight').dims).toEqual([172, 64]);
    expect(tensor(h, 'output_norm.weight').dims).toEqual([64]);
    expect(h.tensors.every((t) => t.type === GgmlType.F32)).toBe(true);
    expect(h.dataOffset % 32).toBe(0);
    let end = 0;
    for (const t of h.tensors) {
      expect(t.offset % 32).toBe(0);
      expect(t.offset).toBeGreaterThanOrEqual(end);
      end = t.offset + t.byteLength!;
    }
    expect(fs.statSync(file).size).toBe(h.dataOffset + Math.ceil(end / 32) * 32);
    expect(fs.readdirSync(path.dirname(file))).toEqual(['model.gguf']); // no temporary file left
  });

  it('stores the source weights, q/k rows permuted for adjacent-pair RoPE', () => {
    const embd = source('model.embed_tokens.weight');
    expect(sameBits(f32Of(bytesOf(file, tensor(h, 'token_embd.weight'))), embd)).toBe(true);
    expect(sameBits(f32Of(bytesOf(file, tensor(h, 'blk.1.attn_v.weight'))), source('model.layers.1.self_attn.v_proj.weight'))).toBe(true);
    for (const [hf, gg] of [['q_proj', 'attn_q'], ['k_proj', 'attn_k']]) {
      const src = source(`model.layers.1.self_attn.${hf}.weight`);
      const got = f32Of(bytesOf(file, tensor(h, `blk.1.${gg}.weight`)));
      expect(sameBits(got, expectedPermuted(src, 4, 64))).toBe(true);
      expect(sameBits(got, src)).toBe(false);
    }
  });
});

describe('writeGguf: half precision', () => {
  it('BF16 from a bf16 checkpoint is bit-exact; norms stay F32', () => {
    const { file, h } = convert('BF16');
    expect(h.metadata['general.file_type']).toBe(32);
    expect(tensor(h, 'blk.0.attn_q.weight').type).toBe(GgmlType.BF16);
    expect(tensor(h, 'blk.0.attn_norm.weight').type).toBe(GgmlType.F32);
    const q = u16Of(bytesOf(file, tensor(h, 'blk.0.attn_q.weight')));
    const widened = new Float32Array(new Uint32Array(Array.from(q, (b) => b << 16)).buffer);
    expect(sameBits(widened, expectedPermuted(source('model.layers.0.self_attn.q_proj.weight'), 4, 64))).toBe(true);
  });

  it('F16 rounds to the nearest half', () => {
    const { file, h } = convert('F16');
    expect(h.metadata['general.file_type']).toBe(1);
    const t = tensor(h, 'output.weight');
    expect([t.type, t.byteLength]).toEqual([GgmlType.F16, 32000 * 64 * 2]);
    const back = new Float32Array(32000 * 64);
    f16ToF32(u16Of(bytesOf(file, t)), back);
    const src = source('lm_head.weight');
    let worst = 0;
    for (let i = 0; i < src.length; i++) worst = Math.max(worst, Math.abs(back[i]! - src[i]!) / Math.max(Math.abs(src[i]!), 2 ** -14));
    expect(worst).toBeLessThanOrEqual(2 ** -11);
  });

  it('f32ToF16: rounding, subnormals, overflow, NaN', () => {
    const src = Float32Array.from([1, -2, 65504, 65519, 65520, 1e9, 2 ** -24, 3 * 2 ** -25, 2 ** -26, 1 + 2 ** -11, 1 + 3 * 2 ** -11, -0, NaN, -Infinity]);
    const out = new Uint16Array(src.length);
    f32ToF16(src, out);
    expect(Array.from(out, (x) => x.toString(16))).toEqual(
      ['3c00', 'c000', '7bff', '7bff', '7c00', '7c00', '1', '2', '0', '3c00', '3c02', '8000', '7e00', 'fc00'],
    );
  });
});

describe('writeGguf: other checkpoints and bad input', () => {
  it('tied embeddings, a sharded checkpoint and an embedding wider than the vocabulary', () => {
    const dir = tmpDir('gguf-tied');
    const m = createModel('tiny', { seed: 1, overrides: { vocabSize: 32003, numLayers: 1, tieWordEmbeddings: true } });
    saveModel(dir, m, { maxShardBytes: 4_000_000 });
    m.dispose();
    expect(fs.existsSync(path.join(dir, 'model.safetensors.index.json'))).toBe(true);
    const { h } = convert('F32', dir);
    expect(h.tensors.some((t) => t.name === 'output.weight')).toBe(false); // llama.cpp then reuses token_embd
    const tokens = h.metadata['tokenizer.ggml.tokens'] as string[];
    expect(tokens.slice(-3)).toEqual(['[PAD32000]', '[PAD32001]', '[PAD32002]']);
    expect((h.metadata['tokenizer.ggml.token_type'] as number[]).at(-1)).toBe(GgufTokenType.UNUSED);
  });

  it("a checkpoint's tokenizer.json: merge ranks and user-defined tokens", () => {
    const dir = tmpDir('gguf-tokjson');
    const m = createModel('tiny', { seed: 2, overrides: { vocabSize: 11, numLayers: 1 } });
    saveModel(dir, m);
    m.dispose();
    const vocab = ['<unk>', '<s>', '</s>', META, 'a', 'b', 'ab', `${META}a`, `${META}ab`, '<x>'];
    fs.writeFileSync(
      path.join(dir, 'tokenizer.json'),
      JSON.stringify({
        normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: META }, { type: 'Replace', pattern: { String: ' ' }, content: META }] },
        pre_tokenizer: null,
        added_tokens: [...vocab.slice(0, 3).map((content, id) => ({ id, content, special: true })), { id: 9, content: '<x>', special: false }],
        model: { type: 'BPE', unk_token: '<unk>', vocab: Object.fromEntries(vocab.map((p, i) => [p, i])), merges: ['a b', `${META} a`, `${META}a b`] },
      }),
    );
    const { h } = convert('F32', dir);
    expect((h.metadata['tokenizer.ggml.tokens'] as string[]).slice(0, 10)).toEqual(vocab);
    expect(h.metadata['tokenizer.ggml.scores']).toEqual([0, 0, 0, -7, -8, -9, -1, -2, -3, 0, -1000]);
    expect(h.metadata['tokenizer.ggml.token_type']).toEqual([2, 3, 3, 1, 1, 1, 1, 1, 1, 4, 5]);
  });

  it('refuses vision models in one line', () => {
    const dir = tmpDir('gguf-vision');
    const config = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'config.json'), 'utf8'));
    // The refusal comes from config.json alone, before any weight is read.
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, vision_vocab_size: 8448 }));
    const out = path.join(dir, 'x.gguf');
    expect(() => writeGguf(dir, out)).toThrow(CheckpointError);
    expect(() => writeGguf(dir, out)).toThrow(/^[^\n]*vision-language model \(vision_vocab_size 8448\); GGUF export supports text models only[^\n]*$/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('names what is wrong and leaves no file behind', () => {
    const out = path.join(tmpDir('gguf-bad'), 'x.gguf');
    expect(() => writeGguf('/nonexistent/model', out)).toThrow(/no such model folder/);
    expect(() => writeGguf(FIXTURE, out, { dtype: 'Q4_0' as 'F32' })).toThrow(ConfigError);
    expect(() => writeGguf(FIXTURE, '/nonexistent/dir/x.gguf')).toThrow(/does not exist/);
    const dir = tmpDir('gguf-shape');
    for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, intermediate_size: 100 }));
    expect(() => writeGguf(dir, out)).toThrow(/'model.layers.0.mlp.gate_proj.weight' has shape \[172, 64\] but config.json implies \[100, 64\]/);
    const small = tmpDir('gguf-vocab');
    const m = createModel('tiny', { overrides: { vocabSize: 300, numLayers: 1 } });
    saveModel(small, m);
    m.dispose();
    expect(() => writeGguf(small, out)).toThrow(/the tokenizer has 32000 tokens but config.json's vocab_size is 300/);
    expect(fs.readdirSync(path.dirname(out))).toEqual([]);
  });

  it('readGgufHeader rejects files that are not GGUF', () => {
    const dir = tmpDir('gguf-read');
    expect(() => readGgufHeader(path.join(dir, 'missing.gguf'))).toThrow(/no such file/);
    fs.writeFileSync(path.join(dir, 'a.gguf'), 'not a gguf file at all');
    expect(() => readGgufHeader(path.join(dir, 'a.gguf'))).toThrow(/not a GGUF file/);
    const { file } = convert('F32');
    const cut = path.join(dir, 'cut.gguf');
    fs.writeFileSync(cut, fs.readFileSync(file).subarray(0, 5000));
    expect(() => readGgufHeader(cut)).toThrow(/truncated GGUF header/);
  });
});
