import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from '@jest/globals';
import {
  CheckpointError,
  createModel,
  loadModel,
  readSafetensorsHeader,
  readTensorF32,
  readTensorI32,
  readTensorU8,
  saveModel,
  writeSafetensors,
  writeSafetensorsSharded,
} from '../../src/index.js';
import { fixture, tmpDir } from '../helpers/paths.js';
import { maxAbsDiff } from '../helpers/tensors.js';

const tiny = () => createModel('tiny', { seed: 3, overrides: { vocabSize: 300, maxSeqLen: 64 } });

function logitsOf(m: ReturnType<typeof tiny>): Float32Array {
  return m.forward(tf.tensor2d([[1, 2, 3, 250]], [1, 4], 'int32')).dataSync() as Float32Array;
}

/** A folder holding a copy of the fixture model whose files a test may damage. */
function fixtureCopy(): string {
  const dir = tmpDir('ckpt');
  for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(fixture('tiny-lwm-text'), f), path.join(dir, f));
  fs.chmodSync(path.join(dir, 'model.safetensors'), 0o644);
  fs.chmodSync(path.join(dir, 'config.json'), 0o644);
  return dir;
}

describe('safetensors', () => {
  it('reads the fixture header: 21 bf16 tensors with Hugging Face names', () => {
    const h = readSafetensorsHeader(path.join(fixture('tiny-lwm-text'), 'model.safetensors'));
    expect(h.tensors.size).toBe(21);
    const e = h.tensors.get('model.embed_tokens.weight')!;
    expect([e.dtype, e.shape]).toEqual(['BF16', [32000, 64]]);
  });

  it('widens bf16 exactly and writes F32/BF16 that read back', () => {
    const dir = tmpDir('st');
    const file = path.join(dir, 'a.safetensors');
    const values = Float32Array.from([1, -2.5, 0.1, 3e38, -0, 1e-40]);
    writeSafetensors(file, [{ name: 'x', shape: [2, 3], data: () => values }], 'F32');
    const h = readSafetensorsHeader(file);
    expect(Array.from(readTensorF32(h.tensors.get('x')!, file))).toEqual(Array.from(values));
    writeSafetensors(file, [{ name: 'x', shape: [2, 3], data: () => values }], 'BF16');
    const back = readTensorF32(readSafetensorsHeader(file).tensors.get('x')!, file);
    expect(back[0]).toBe(1);
    expect(back[1]).toBe(-2.5);
    expect(back[2]).toBe(0.10009765625); // 0.1 rounded to the nearest bf16
    expect(fs.readdirSync(dir)).toEqual(['a.safetensors']); // no temporary files left
  });

  it('writes and reads I32, U8 and BOOL tensors, alone or next to float ones', () => {
    const dir = tmpDir('int');
    const file = path.join(dir, 'ints.safetensors');
    const ids = Int32Array.from([0, 1, -1, 2147483647, -2147483648, 8447]);
    const bytes = Uint8Array.from([0, 7, 255]);
    const mask = Uint8Array.from([1, 0, 0, 1]);
    const f = Float32Array.from([0.5, -3]);
    writeSafetensors(
      file,
      [
        { name: 'tokens', shape: [2, 3], data: () => ids },
        { name: 'bytes', shape: [3], data: () => bytes, dtype: 'U8' },
        { name: 'mask', shape: [2, 2], data: () => mask, dtype: 'BOOL' },
        { name: 'w', shape: [2], data: () => f, dtype: 'BF16' },
      ],
      'I32',
    );
    const h = readSafetensorsHeader(file);
    expect([...h.tensors.values()].map((e) => [e.name, e.dtype, e.shape])).toEqual([
      ['tokens', 'I32', [2, 3]],
      ['bytes', 'U8', [3]],
      ['mask', 'BOOL', [2, 2]],
      ['w', 'BF16', [2]],
    ]);
    expect(Array.from(readTensorI32(h.tensors.get('tokens')!, file))).toEqual(Array.from(ids));
    expect(Array.from(readTensorU8(h.tensors.get('bytes')!, file))).toEqual([0, 7, 255]);
    expect(Array.from(readTensorI32(h.tensors.get('bytes')!, file))).toEqual([0, 7, 255]); // widened
    expect(Array.from(readTensorU8(h.tensors.get('mask')!, file))).toEqual([1, 0, 0, 1]);
    expect(Array.from(readTensorF32(h.tensors.get('w')!, file))).toEqual([0.5, -3]);
    expect(() => readTensorF32(h.tensors.get('tokens')!, file)).toThrow(/'tokens' has dtype I32; lwm reads F32, F16 and BF16/);
    expect(() => readTensorI32(h.tensors.get('w')!, file)).toThrow(/'w' has dtype BF16; readTensorI32 reads/);
    expect(() => readTensorU8(h.tensors.get('tokens')!, file)).toThrow(/'tokens' has dtype I32; readTensorU8 reads U8 and BOOL/);
    // Typed array and dtype must agree; BOOL holds only 0 and 1; failures leave no file.
    expect(() => writeSafetensors(file + '2', [{ name: 'x', shape: [2], data: () => f }], 'I32')).toThrow(/'x' is stored as I32, which needs a Int32Array, but data\(\) returned a Float32Array/);
    expect(() => writeSafetensors(file + '2', [{ name: 'x', shape: [1], data: () => Uint8Array.from([2]) }], 'BOOL')).toThrow(/'x' is stored as BOOL but holds values other than 0 and 1/);
    expect(fs.readdirSync(dir)).toEqual(['ints.safetensors']);
  });

  it('shards by size and writes an index that points at every tensor', () => {
    const dir = tmpDir('shard');
    const t = (name: string) => ({ name, shape: [100], data: () => new Float32Array(100).fill(name.length) });
    const files = writeSafetensorsSharded(dir, [t('a'), t('bb'), t('ccc')], 'F32', { maxShardBytes: 800 });
    expect(files).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'model.safetensors.index.json']);
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(index.weight_map).toEqual({ a: files[0], bb: files[0], ccc: files[1] });
    expect(index.metadata.total_size).toBe(1200);
  });
});

describe('model folders', () => {
  for (const dtype of ['F32', 'BF16'] as const) {
    it(`save then load reproduces the logits (${dtype}${dtype === 'F32' ? ', sharded' : ''})`, () => {
      const m = tiny();
      const dir = tmpDir('model');
      saveModel(dir, m, { dtype, maxShardBytes: dtype === 'F32' ? 40_000 : undefined });
      const back = loadModel(dir);
      expect(back.config).toEqual(m.config);
      const d = maxAbsDiff(logitsOf(back), logitsOf(m));
      expect(d).toBeLessThan(dtype === 'F32' ? 0 + 1e-7 : 0.05);
      if (dtype === 'F32') expect(fs.readdirSync(dir)).toContain('model.safetensors.index.json');
      m.dispose();
      back.dispose();
    });
  }

  it('missing folder or config.json: names the folder and what to do', () => {
    expect(() => loadModel('/nonexistent/model')).toThrow(/no such model folder/);
    const dir = fixtureCopy();
    fs.rmSync(path.join(dir, 'config.json'));
    expect(() => loadModel(dir)).toThrow(CheckpointError);
    expect(() => loadModel(dir)).toThrow(/missing config.json/);
  });

  it('truncated safetensors: says where the data ends', () => {
    const dir = fixtureCopy();
    const f = path.join(dir, 'model.safetensors');
    fs.truncateSync(f, fs.statSync(f).size - 1000);
    expect(() => loadModel(dir)).toThrow(/truncated: tensor '.*' ends at byte \d+ but the file has \d+ bytes/);
  });

  it('corrupt header: not valid JSON', () => {
    const dir = fixtureCopy();
    const fd = fs.openSync(path.join(dir, 'model.safetensors'), 'r+');
    fs.writeSync(fd, Buffer.from('}}}}'), 0, 4, 8);
    fs.closeSync(fd);
    expect(() => loadModel(dir)).toThrow(/not a valid safetensors file: header is not valid JSON/);
    fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.from([1, 2, 3]));
    expect(() => loadModel(dir)).toThrow(/too short/);
  });

  it('a tensor of the wrong shape or dtype is named', () => {
    const dir = fixtureCopy();
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, intermediate_size: 100 }));
    expect(() => loadModel(dir)).toThrow(/'model.layers.0.mlp.gate_proj.weight' has shape \[172, 64\] but config.json implies \[100, 64\]/);

    const d2 = tmpDir('dtype');
    fs.copyFileSync(path.join(fixture('tiny-lwm-text'), 'config.json'), path.join(d2, 'config.json'));
    const f = path.join(d2, 'model.safetensors');
    // Rewrite the fixture header with one tensor relabelled I16 (same byte size as BF16).
    const src = fs.readFileSync(path.join(fixture('tiny-lwm-text'), 'model.safetensors'));
    const n = Number(src.readBigUInt64LE(0));
    const header = JSON.parse(src.subarray(8, 8 + n).toString());
    header['model.norm.weight'].dtype = 'I16';
    const hj = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(hj.length));
    fs.writeFileSync(f, Buffer.concat([len, hj, src.subarray(8 + n)]));
    expect(() => loadModel(d2)).toThrow(/'model.norm.weight' has dtype I16; weights must be F32, F16 or BF16/);
  });

  it('a missing weight is named; unconverted PyTorch folders point at lwm convert', () => {
    const dir = tmpDir('missing');
    const m = tiny();
    saveModel(dir, m);
    m.dispose();
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ ...config, num_hidden_layers: 3 }));
    expect(() => loadModel(dir)).toThrow(/weight 'model.layers.2.input_layernorm.weight' is missing/);
    const pt = tmpDir('pt');
    fs.copyFileSync(path.join(fixture('tiny-lwm-text'), 'config.json'), path.join(pt, 'config.json'));
    fs.writeFileSync(path.join(pt, 'pytorch_model-00001-of-00002.bin'), 'PK');
    expect(() => loadModel(pt)).toThrow(/no safetensors weights \(found pytorch_model-00001-of-00002.bin: convert it first with `lwm convert/);
  });
});
