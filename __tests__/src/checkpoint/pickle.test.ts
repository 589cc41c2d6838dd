import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { CheckpointError } from '../../../ops/index.js';
import { flattenTree, isPickledArray, readPickle } from '../../../src/checkpoint/pickle.js';
import { fixture } from '../../helpers/paths.js';

const dir = fixture('tiny-vqgan-pickle');
const expected = fs
  .readFileSync(path.join(dir, 'params.txt'), 'utf8')
  .split('\n')
  .filter((l) => l && !l.startsWith('#'))
  .map((l) => {
    const m = /^(\S+) \[([\d, ]*)\] (\S+) ([0-9a-f]{64})$/.exec(l)!;
    return { name: m[1]!, shape: m[2] ? m[2].split(', ').map(Number) : [], dtype: m[3]!, sha: m[4]! };
  });

describe('readPickle', () => {
  for (const file of ['vqgan', 'vqgan-protocol5']) {
    it(`reads every tensor of ${file} (names, shapes, float32, sha256 of params.txt)`, () => {
      const tree = readPickle(fs.readFileSync(path.join(dir, file)), file);
      const leaves = flattenTree(tree);
      expect(expected).toHaveLength(277);
      expect([...leaves.keys()].sort()).toEqual(expected.map((e) => e.name).sort());
      for (const e of expected) {
        const a = leaves.get(e.name);
        if (!isPickledArray(a)) throw new Error(`${e.name} is not an array`);
        expect({ name: e.name, shape: a.shape, dtype: a.dtype, order: a.fortranOrder }).toEqual({ name: e.name, shape: e.shape, dtype: '<f4', order: false });
        expect(createHash('sha256').update(a.data).digest('hex')).toBe(e.sha);
      }
    });
  }

  it('refuses a pickle naming os.system, by name, without running anything', () => {
    // protocol 2: GLOBAL os.system, the argument 'touch PWNED', TUPLE1, REDUCE, STOP
    const evil = Buffer.concat([Buffer.from([0x80, 0x02]), Buffer.from('cos\nsystem\n', 'latin1'), Buffer.from([0x58, 11, 0, 0, 0]), Buffer.from('touch PWNED'), Buffer.from([0x85, 0x52, 0x2e])]);
    expect(() => readPickle(evil, 'evil.pkl')).toThrow(/refuses to load the global 'os\.system'/);
    expect(() => readPickle(evil, 'evil.pkl')).toThrow(CheckpointError);
    // The same with STACK_GLOBAL (protocol 4) and a builtins name.
    const evil4 = Buffer.concat([Buffer.from([0x80, 0x04, 0x8c, 8]), Buffer.from('builtins'), Buffer.from([0x8c, 4]), Buffer.from('eval'), Buffer.from([0x93, 0x2e])]);
    expect(() => readPickle(evil4)).toThrow(/'builtins\.eval'/);
  });

  it('reports a truncated or corrupt file in one line', () => {
    const bytes = fs.readFileSync(path.join(dir, 'vqgan'));
    expect(() => readPickle(bytes.subarray(0, bytes.length >> 1), 'vqgan')).toThrow(/vqgan: truncated/);
    const bad = Buffer.from(bytes);
    bad[2] = 0xff;
    expect(() => readPickle(bad, 'vqgan')).toThrow(CheckpointError);
  });
});
