import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import { readModelConfig, readSafetensorsHeader, readTensorF32 } from '../../../src/index.js';
import { jaxSource } from '../../../src/convert/jax.js';
import { writeModelFolder } from '../../../src/convert/output.js';
import { fixture, tmpDir } from '../../helpers/paths.js';
import { expectGoldenCases } from '../../helpers/golden.js';

const jax = fixture('tiny-lwm-text-jax');
const ref = fixture('tiny-lwm-text');
const config = readModelConfig(ref);
const refFile = path.join(ref, 'model.safetensors');
const refHeader = readSafetensorsHeader(refFile);
const work = tmpDir('convert-jax');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('convertJaxParams', () => {
  for (const file of ['params', 'params-unscanned']) {
    it(`${file}: every tensor equals the safetensors original bit for bit, and the model reproduces expected.json`, () => {
      const out = path.join(work, file);
      const src = jaxSource(path.join(jax, file), config);
      expect(src.scanned).toBe(file === 'params');
      expect(writeModelFolder(out, src, { dtype: 'BF16' }).tensors).toBe(21);
      const h = readSafetensorsHeader(path.join(out, 'model.safetensors'));
      expect([...h.tensors.keys()].sort()).toEqual([...refHeader.tensors.keys()].sort());
      for (const [name, e] of refHeader.tensors) {
        const a = readTensorF32(h.tensors.get(name)!, path.join(out, 'model.safetensors'));
        const b = readTensorF32(e, refFile);
        let same = a.length === b.length;
        for (let i = 0; same && i < a.length; i++) same = Object.is(a[i], b[i]);
        expect({ name, same }).toEqual({ name, same: true });
      }
      expectGoldenCases(out);
    });
  }

  it('refuses a config the file does not match, leaving no output folder', () => {
    const out = path.join(work, 'wrong');
    expect(() => writeModelFolder(out, jaxSource(path.join(jax, 'params'), { ...config, numLayers: 3 }), { dtype: 'BF16' })).toThrow(/has shape \[2,.*but the config needs \[3,/);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(work).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });
});
