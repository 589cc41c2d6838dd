import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import * as tf from '@tensorflow/tfjs';
import { loadVqgan, readSafetensorsHeader, vqganConfigFromJson } from '../../../src/index.js';
import { convertVqganPickle } from '../../../src/convert/vqganPickle.js';
import { fixture, tmpDir } from '../../helpers/paths.js';

const dir = fixture('tiny-vqgan-pickle');
const config = vqganConfigFromJson(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')));
const expected = new Map(
  fs
    .readFileSync(path.join(dir, 'params.txt'), 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => [l.split(' ')[0]!, l.split(' ').at(-1)!]),
);
const work = tmpDir('vqgan-pickle');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('convertVqganPickle', () => {
  for (const file of ['vqgan', 'vqgan-protocol5']) {
    it(`${file} becomes a VQGAN folder holding every tensor byte for byte`, () => {
      const out = path.join(work, file);
      expect(convertVqganPickle(path.join(dir, file), out, { config })).toEqual({ tensors: 277, values: 578643 });
      const weights = path.join(out, 'model.safetensors');
      const h = readSafetensorsHeader(weights);
      const fd = fs.openSync(weights, 'r');
      for (const [name, sha] of expected) {
        const e = h.tensors.get(name)!;
        const buf = Buffer.alloc(e.byteLength);
        fs.readSync(fd, buf, 0, e.byteLength, e.offset);
        expect({ name, dtype: e.dtype, sha: createHash('sha256').update(buf).digest('hex') }).toEqual({ name, dtype: 'F32', sha });
      }
      fs.closeSync(fd);
      // The folder loads as a model (the fixture's widths need 8 GroupNorm groups, not LWM's 32).
      const before = tf.memory().numTensors;
      loadVqgan(out, { numGroups: 8 }).dispose();
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it('refuses a pickle of another architecture and leaves no output folder', () => {
    const out = path.join(work, 'wrong');
    expect(() => convertVqganPickle(path.join(dir, 'vqgan'), out)).toThrow(/has shape .* but the config implies|is not a parameter/);
    expect(fs.existsSync(out)).toBe(false);
    const truncated = path.join(work, 'half.pkl');
    const bytes = fs.readFileSync(path.join(dir, 'vqgan'));
    fs.writeFileSync(truncated, bytes.subarray(0, 1000));
    expect(() => convertVqganPickle(truncated, path.join(work, 'half'), { config })).toThrow(/truncated/);
    expect(fs.existsSync(path.join(work, 'half'))).toBe(false);
  });
});
