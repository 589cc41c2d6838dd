import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import { loadModel, readModelConfig, readSafetensorsHeader, readTensorF32 } from '../../../src/index.js';
import { convertJaxParams } from '../../../src/convert/jax.js';
import { fixture, tmpDir } from '../../helpers/paths.js';
import { expectFirstGoldenCase } from '../../helpers/golden.js';

const jax = fixture('tiny-lwm-text-jax');
const ref = fixture('tiny-lwm-text');
const config = readModelConfig(ref);
const refFile = path.join(ref, 'model.safetensors');
const refHeader = readSafetensorsHeader(refFile);
const work = tmpDir('convert-jax');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('convertJaxParams', () => {
  for (const file of ['params', 'params-unscanned']) {
    it(`${file}: every tensor equals the safetensors original bit for bit, and the model reproduces expected.json`, async () => {
      const out = path.join(work, file);
      expect(convertJaxParams(path.join(jax, file), out, { config })).toEqual({ tensors: 21, scanned: file === 'params' });
      const h = readSafetensorsHeader(path.join(out, 'model.safetensors'));
      expect([...h.tensors.keys()].sort()).toEqual([...refHeader.tensors.keys()].sort());
      for (const [name, e] of refHeader.tensors) {
        const a = readTensorF32(h.tensors.get(name)!, path.join(out, 'model.safetensors'));
        const b = readTensorF32(e, refFile);
        let same = a.length === b.length;
        for (let i = 0; same && i < a.length; i++) same = Object.is(a[i], b[i]);
        expect({ name, same }).toEqual({ name, same: true });
      }
      const model = loadModel(out);
      try {
        await expectFirstGoldenCase(model);
      } finally {
        model.dispose();
      }
    });
  }

  it('refuses a config the file does not match, leaving no output folder', () => {
    const out = path.join(work, 'wrong');
    expect(() => convertJaxParams(path.join(jax, 'params'), out, { config: { ...config, numLayers: 3 } })).toThrow(/has shape \[2,.*but the config needs \[3,/);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(work).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });
});
