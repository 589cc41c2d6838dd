import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import { readSafetensorsHeader, readTensorF32 } from '../../../src/index.js';
import { readTorchBin, readTorchTensorF32 } from '../../../src/checkpoint/torchBin.js';
import { hfBinSource } from '../../../src/convert/hfBin.js';
import { writeModelFolder } from '../../../src/convert/output.js';
import { fixture, tmpDir } from '../../helpers/paths.js';
import { expectGoldenCases } from '../../helpers/golden.js';

const pt = fixture('tiny-lwm-text-pt');
const ref = fixture('tiny-lwm-text');
const refFile = path.join(ref, 'model.safetensors');
const refHeader = readSafetensorsHeader(refFile);
const work = tmpDir('torch-bin');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));

describe('PyTorch .bin (torch.save zip)', () => {
  it('locates every tensor of both shards, following the index, with the original bf16 values', () => {
    const index = JSON.parse(fs.readFileSync(path.join(pt, 'pytorch_model.bin.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    const seen = new Map<string, string>();
    for (const f of ['pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin']) {
      for (const t of readTorchBin(path.join(pt, f))) {
        seen.set(t.name, f);
        expect(t.dtype).toBe('BF16');
        expect({ name: t.name, same: same(readTorchTensorF32(t), readTensorF32(refHeader.tensors.get(t.name)!, refFile)) }).toEqual({ name: t.name, same: true });
      }
    }
    expect(Object.fromEntries(seen)).toEqual(index.weight_map);
  });

  it('a sharded folder converts to a model that reproduces expected.json', () => {
    const out = path.join(work, 'model');
    expect(writeModelFolder(out, hfBinSource(pt), { dtype: 'BF16' }).tensors).toBe(21);
    expectGoldenCases(out);
  });

  it('refuses a truncated or non-zip file in one line, leaving no output folder', () => {
    const bad = path.join(work, 'bad');
    fs.mkdirSync(bad);
    fs.copyFileSync(path.join(pt, 'config.json'), path.join(bad, 'config.json'));
    const bytes = fs.readFileSync(path.join(pt, 'pytorch_model-00001-of-00002.bin'));
    fs.writeFileSync(path.join(bad, 'pytorch_model.bin'), bytes.subarray(0, bytes.length - 100));
    expect(() => writeModelFolder(path.join(work, 'bad-out'), hfBinSource(bad), { dtype: 'BF16' })).toThrow(/not a zip file|truncated|corrupt/);
    expect(fs.existsSync(path.join(work, 'bad-out'))).toBe(false);
  });
});
