import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, describe, expect, it } from '@jest/globals';
import { gguf } from '@huggingface/gguf';
import { createModel, readSafetensorsHeader, saveModel } from '../../src/index.js';
import { fixture, tmpDir } from '../helpers/paths.js';
import { expectOneLineError, lwm } from '../helpers/cli.js';
import { expectGoldenCases } from '../helpers/golden.js';

const jax = fixture('tiny-lwm-text-jax');
const ref = fixture('tiny-lwm-text');
const pt = fixture('tiny-lwm-text-pt');
const refConfig = path.join(ref, 'config.json');
const work = tmpDir('convert-cli');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** The raw stored bytes of every tensor of a safetensors file, by name. */
function tensorBytes(file: string): Map<string, { dtype: string; shape: number[]; sha: string }> {
  const h = readSafetensorsHeader(file);
  const fd = fs.openSync(file, 'r');
  const out = new Map<string, { dtype: string; shape: number[]; sha: string }>();
  for (const [name, e] of h.tensors) {
    const b = Buffer.alloc(e.byteLength);
    fs.readSync(fd, b, 0, b.length, e.offset);
    out.set(name, { dtype: e.dtype, shape: e.shape, sha: createHash('sha256').update(b).digest('hex') });
  }
  fs.closeSync(fd);
  return out;
}

const leftovers = () => fs.readdirSync(work).filter((n) => n.includes('.tmp-'));

describe('lwm convert: LWM release formats in', () => {
  it('Jax params (scanned) with --config: a model that reproduces expected.json; progress and a read-back check', () => {
    const out = path.join(work, 'from-jax');
    const r = lwm(['convert', path.join(jax, 'params'), out, '--config', refConfig]);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(path.resolve(out));
    expect(r.stderr).toMatch(/\[#+\] 100% .* MB\/s/);
    expect(r.stderr).toMatch(/21 tensors from Jax params \(scanned layers\), 8\.4 MB BF16 .* every tensor read back and matched \(sha256\)/);
    expect(fs.readdirSync(out).sort()).toEqual(['config.json', 'model.safetensors']);
    expectGoldenCases(out);
  });

  it('a sharded PyTorch .bin folder, and the same files found in a Hugging Face hub cache', () => {
    const out = path.join(work, 'from-bin');
    const r = lwm(['convert', pt, out]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/21 tensors from PyTorch \.bin/);
    // huggingface_hub's layout: content-addressed blobs, snapshot files as relative symlinks.
    const cache = path.join(work, 'hub');
    const repo = path.join(cache, 'models--LargeWorldModel--LWM-Text-Chat-1M');
    const commit = 'a'.repeat(40);
    fs.mkdirSync(path.join(repo, 'blobs'), { recursive: true });
    fs.mkdirSync(path.join(repo, 'snapshots', commit), { recursive: true });
    fs.mkdirSync(path.join(repo, 'refs'));
    fs.writeFileSync(path.join(repo, 'refs', 'main'), commit);
    for (const f of fs.readdirSync(pt).filter((n) => !n.endsWith('.md'))) {
      const bytes = fs.readFileSync(path.join(pt, f));
      const blob = createHash('sha256').update(bytes).digest('hex');
      fs.writeFileSync(path.join(repo, 'blobs', blob), bytes);
      fs.symlinkSync(`../../blobs/${blob}`, path.join(repo, 'snapshots', commit, f));
    }
    const cached = path.join(work, 'from-cache');
    const c = lwm(['convert', '--from-hf-cache', 'LargeWorldModel/LWM-Text-Chat-1M', cached], { env: { HF_HUB_CACHE: cache } });
    expect(c.code).toBe(0);
    expect(c.stderr).toMatch(new RegExp(`LargeWorldModel/LWM-Text-Chat-1M @ ${commit}`));
    expect(tensorBytes(path.join(cached, 'model.safetensors'))).toEqual(tensorBytes(path.join(out, 'model.safetensors')));
    expectGoldenCases(out, cached);
    expectOneLineError(lwm(['convert', '--from-hf-cache', 'LargeWorldModel/LWM-Chat-1M', path.join(work, 'nope')], { env: { HF_HUB_CACHE: cache } }), /not in the Hugging Face cache|huggingface-cli download/);
  });

  it('the vqgan pickle (protocol 5) into a VQGAN folder', () => {
    const out = path.join(work, 'vqgan');
    const r = lwm(['convert', path.join(fixture('tiny-vqgan-pickle'), 'vqgan-protocol5'), out, '--config', path.join(fixture('tiny-vqgan-pickle'), 'config.json')]);
    expect(r.code).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(['config.json', 'model.safetensors']);
  });
});

describe('lwm convert: standard formats out', () => {
  it('Hugging Face safetensors -> lwm -> --to hf gives byte-identical tensors and a LlamaForCausalLM config', () => {
    const mid = path.join(work, 'rt-lwm');
    const back = path.join(work, 'rt-hf');
    expect(lwm(['convert', ref, mid]).code).toBe(0);
    expect(lwm(['convert', mid, back, '--to', 'hf']).code).toBe(0);
    const original = tensorBytes(path.join(ref, 'model.safetensors'));
    expect(original.size).toBe(21);
    expect(tensorBytes(path.join(back, 'model.safetensors'))).toEqual(original);
    const config = JSON.parse(fs.readFileSync(path.join(back, 'config.json'), 'utf8'));
    expect(config).toMatchObject({ architectures: ['LlamaForCausalLM'], model_type: 'llama', torch_dtype: 'bfloat16' });
    expect(config).not.toHaveProperty('vision_vocab_size');
    const refJson = JSON.parse(fs.readFileSync(refConfig, 'utf8'));
    for (const k of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'vocab_size', 'rope_theta', 'rms_norm_eps', 'max_position_embeddings']) expect({ k, v: config[k] }).toEqual({ k, v: refJson[k] });
  });

  it('--to gguf from the .bin release: @huggingface/gguf reads llama metadata, shapes and the unpermuted output weight', async () => {
    const file = path.join(work, 'tiny.gguf');
    const r = lwm(['convert', pt, file, '--to', 'gguf']);
    expect(r.code).toBe(0);
    const g = await gguf(file, { allowLocalFile: true });
    const m = g.metadata as Record<string, unknown>;
    const refJson = JSON.parse(fs.readFileSync(refConfig, 'utf8'));
    expect(m).toMatchObject({
      'general.architecture': 'llama',
      'llama.block_count': refJson.num_hidden_layers,
      'llama.embedding_length': refJson.hidden_size,
      'llama.feed_forward_length': refJson.intermediate_size,
      'llama.attention.head_count': refJson.num_attention_heads,
      'llama.context_length': refJson.max_position_embeddings,
      'llama.rope.freq_base': refJson.rope_theta,
      'tokenizer.ggml.model': 'llama',
      'general.file_type': 32,
    });
    expect((m['tokenizer.ggml.tokens'] as string[]).length).toBe(refJson.vocab_size);
    const shapes = Object.fromEntries(g.tensorInfos.map((t) => [t.name, t.shape.map(Number)]));
    expect(g.tensorInfos).toHaveLength(21);
    expect(shapes['token_embd.weight']).toEqual([refJson.hidden_size, refJson.vocab_size]);
    expect(shapes['blk.1.ffn_down.weight']).toEqual([refJson.intermediate_size, refJson.hidden_size]);
    expect(shapes['blk.0.attn_norm.weight']).toEqual([refJson.hidden_size]);
    // output.weight is stored as released (bf16, no RoPE permutation): its bytes are the original's.
    const out = g.tensorInfos.find((t) => t.name === 'output.weight')!;
    const bytes = Buffer.alloc(refJson.vocab_size * refJson.hidden_size * 2);
    const fd = fs.openSync(file, 'r');
    fs.readSync(fd, bytes, 0, bytes.length, Number(g.tensorDataOffset + out.offset));
    fs.closeSync(fd);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(tensorBytes(path.join(ref, 'model.safetensors')).get('lm_head.weight')!.sha);
  });

  it('a vision model: --to hf needs --text-only, which drops exactly the vision embedding and head', () => {
    const vis = path.join(work, 'vision');
    const model = createModel('tiny-vision', { seed: 3 });
    saveModel(vis, model, { dtype: 'BF16' });
    model.dispose();
    expectOneLineError(lwm(['convert', vis, path.join(work, 'vis-hf'), '--to', 'hf']), /vision-language model.*pass --text-only/);
    expectOneLineError(lwm(['convert', vis, path.join(work, 'vis.gguf'), '--to', 'gguf']), /GGUF export supports text models only/);
    expect(lwm(['convert', vis, path.join(work, 'vis-hf'), '--to', 'hf', '--text-only']).code).toBe(0);
    const all = tensorBytes(path.join(vis, 'model.safetensors'));
    const text = tensorBytes(path.join(work, 'vis-hf', 'model.safetensors'));
    expect([...all.keys()].filter((n) => !text.has(n)).sort()).toEqual(['model.vision_embed_tokens.weight', 'vision_head.weight']);
    for (const [n, t] of text) expect({ n, t }).toEqual({ n, t: all.get(n) });
  });
});

describe('lwm convert: refusals leave nothing behind', () => {
  it('no architecture, a foreign file, a non-empty output, an existing .gguf', () => {
    expectOneLineError(lwm(['convert', path.join(jax, 'params'), path.join(work, 'a')]), /stores no architecture and its path names no LWM release; give --preset NAME/);
    expectOneLineError(lwm(['convert', path.join(jax, 'records.txt'), path.join(work, 'b')]), /neither a Jax params file nor a pickle/);
    const full = path.join(work, 'full');
    fs.mkdirSync(full);
    fs.writeFileSync(path.join(full, 'x'), 'keep me');
    expectOneLineError(lwm(['convert', path.join(jax, 'params'), full, '--preset', 'tiny']), /exists and is not an empty folder/);
    expect(fs.readdirSync(full)).toEqual(['x']);
    fs.writeFileSync(path.join(work, 'taken.gguf'), 'mine');
    expectOneLineError(lwm(['convert', pt, path.join(work, 'taken.gguf'), '--to', 'gguf']), /exists; choose a new \.gguf path/);
    expect(fs.readFileSync(path.join(work, 'taken.gguf'), 'utf8')).toBe('mine');
    expect(fs.existsSync(path.join(work, 'a')) || fs.existsSync(path.join(work, 'b'))).toBe(false);
  });

  it('a pickle naming os.system is refused by name and nothing runs', () => {
    const evil = path.join(work, 'evil-vqgan');
    const marker = path.join(work, 'PWNED');
    const cmd = `touch ${marker}`;
    fs.writeFileSync(evil, Buffer.concat([Buffer.from([0x80, 0x02]), Buffer.from('cos\nsystem\n', 'latin1'), Buffer.from([0x58, cmd.length, 0, 0, 0]), Buffer.from(cmd), Buffer.from([0x85, 0x52, 0x2e])]));
    expectOneLineError(lwm(['convert', evil, path.join(work, 'evil-out')]), /global 'os\.system'/);
    expect(fs.existsSync(marker)).toBe(false);
    expect(fs.existsSync(path.join(work, 'evil-out'))).toBe(false);
  });

  /** A copy of a fixture file cut short, or with its first bytes overwritten. */
  function damaged(src: string, name: string, how: 'truncate' | 'garble'): string {
    const bytes = Buffer.from(fs.readFileSync(src));
    const out = path.join(work, 'damaged', name);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    if (how === 'truncate') fs.writeFileSync(out, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
    else {
      bytes.fill(0x7b, 1, 64); // the first byte stays, so the format is still recognised
      fs.writeFileSync(out, bytes);
    }
    return out;
  }

  /** A model folder like `from` whose weight file is damaged. */
  function damagedFolder(from: string, weight: string, name: string, how: 'truncate' | 'garble'): string {
    const dir = path.join(work, 'damaged', name);
    fs.mkdirSync(dir, { recursive: true });
    for (const f of fs.readdirSync(from)) if (!f.endsWith('.md')) fs.copyFileSync(path.join(from, f), path.join(dir, f));
    fs.copyFileSync(damaged(path.join(from, weight), `${name}.raw`, how), path.join(dir, weight));
    return dir;
  }

  const cases: [string, () => string[], RegExp][] = [
    ['truncated Jax params', () => [damaged(path.join(jax, 'params'), 'params-cut', 'truncate'), '--config', refConfig], /params-cut: truncated at byte \d+ \(a \d+-byte payload runs past the end/],
    ['garbled Jax params', () => [damaged(path.join(jax, 'params'), 'params-bad', 'garble'), '--from', 'jax', '--config', refConfig], /params-bad: not an LWM Jax params file/],
    ['truncated .bin shard', () => [damagedFolder(pt, 'pytorch_model-00002-of-00002.bin', 'bin-cut', 'truncate')], /00002\.bin: not a zip file \(no end of central directory\)/],
    ['garbled .bin shard', () => [damagedFolder(pt, 'pytorch_model-00001-of-00002.bin', 'bin-bad', 'garble')], /00001-of-00002\.bin: corrupt zip local header/],
    ['truncated safetensors', () => [damagedFolder(ref, 'model.safetensors', 'st-cut', 'truncate')], /model\.safetensors: truncated: tensor '[\w.]+' ends at byte \d+ but the file has/],
    ['garbled safetensors', () => [damagedFolder(ref, 'model.safetensors', 'st-bad', 'garble')], /model\.safetensors: not a valid safetensors file: header length/],
    ['truncated vqgan pickle', () => [damaged(path.join(fixture('tiny-vqgan-pickle'), 'vqgan'), 'vqgan-cut', 'truncate'), '--config', path.join(fixture('tiny-vqgan-pickle'), 'config.json')], /truncated/],
  ];
  for (const [what, args, pattern] of cases) {
    it(`${what}: one line naming the problem, no output`, () => {
      const [input, ...rest] = args();
      const out = path.join(work, `out-${what.replace(/\W+/g, '-')}`);
      expectOneLineError(lwm(['convert', input!, out, ...rest]), pattern, { afterProgress: true });
      expect(fs.existsSync(out)).toBe(false);
      expect(leftovers()).toEqual([]);
    });
  }

  it('killed mid-write: no model folder appears; the next run removes the leftover and converts', () => {
    const out = path.join(work, 'killed');
    const r = lwm(['convert', pt, out], { env: { LWM_TEST_CRASH_IN_CONVERT: '5' } });
    expect(r.signal).toBe('SIGKILL');
    expect(fs.existsSync(out)).toBe(false);
    expect(leftovers()).toEqual([expect.stringMatching(/^\.killed\.tmp-\d+$/)]);
    expect(lwm(['convert', pt, out]).code).toBe(0);
    expect(leftovers()).toEqual([]);
    expect(tensorBytes(path.join(out, 'model.safetensors'))).toEqual(tensorBytes(path.join(work, 'from-bin', 'model.safetensors')));
  });
});
