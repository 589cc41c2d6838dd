import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import { readSafetensorsHeader, readTensorF32 } from '../../../src/index.js';
import { readJaxTensorF32, scanJaxParams } from '../../../src/checkpoint/jaxParams.js';
import { fixture, tmpDir } from '../../helpers/paths.js';

const dir = fixture('tiny-lwm-text-jax');
const work = tmpDir('jax-params');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** records.txt: per file, index key dtype [shape] record_offset record_length [data offsets]. */
function listed(file: string): { key: string; dtype: string; shape: number[]; recordOffset: number; recordLength: number; data: number[] }[] {
  const text = fs.readFileSync(path.join(dir, 'records.txt'), 'utf8');
  const section = text.split(/^# /m).find((s) => s.startsWith(`${file}:`))!;
  return section
    .split('\n')
    .slice(1)
    .filter((l) => l.trim())
    .map((l) => {
      const m = /^\d+ (\S+) (\S+) \[([\d, ]*)\] (\d+) (\d+) \[([\d, ]*)\]$/.exec(l)!;
      return { key: m[1]!, dtype: m[2]!, shape: m[3]!.split(', ').map(Number), recordOffset: Number(m[4]), recordLength: Number(m[5]), data: m[6]!.split(', ').map(Number) };
    });
}

describe('scanJaxParams', () => {
  for (const file of ['params', 'params-unscanned']) {
    it(`finds every record of ${file} as records.txt lists it, from headers only`, () => {
      const recs = scanJaxParams(path.join(dir, file));
      const want = listed(file);
      expect(want.length).toBe(file === 'params' ? 12 : 21);
      expect(recs.map((r) => ({ key: r.key.join('/'), dtype: r.dtype, shape: r.shape, recordOffset: r.recordOffset, recordLength: r.recordLength, data: r.parts.map((p) => p.offset) }))).toEqual(want);
    });
  }

  it('reads bf16 values that equal the safetensors original (embedding: no transpose)', () => {
    const recs = scanJaxParams(path.join(dir, 'params'));
    const wte = recs.find((r) => r.key.join('/') === 'transformer/wte/embedding')!;
    const st = path.join(fixture('tiny-lwm-text'), 'model.safetensors');
    const ref = readTensorF32(readSafetensorsHeader(st).tensors.get('model.embed_tokens.weight')!, st);
    expect(Array.from(readJaxTensorF32(path.join(dir, 'params'), wte))).toEqual(Array.from(ref));
  });

  it('decodes the chunked record to arange(35) * 0.25 - 4 in shape [5, 7] from 16 + 16 + 3 elements', () => {
    const [rec] = scanJaxParams(path.join(dir, 'chunked-record.msgpack'));
    expect(rec!.key).toEqual(['test', 'chunked_array', 'kernel']);
    expect(rec!.shape).toEqual([5, 7]);
    expect(rec!.parts.map((p) => p.length / 4)).toEqual([16, 16, 3]);
    expect(Array.from(readJaxTensorF32(path.join(dir, 'chunked-record.msgpack'), rec!))).toEqual(Array.from({ length: 35 }, (_, i) => i * 0.25 - 4));
  });

  it('reports truncated and foreign files in one line', () => {
    const bytes = fs.readFileSync(path.join(dir, 'params'));
    const cut = path.join(work, 'cut');
    fs.writeFileSync(cut, bytes.subarray(0, 5000));
    expect(() => scanJaxParams(cut)).toThrow(/truncated/);
    const other = path.join(work, 'other');
    fs.writeFileSync(other, '{"not": "msgpack"}');
    expect(() => scanJaxParams(other)).toThrow(/not an LWM Jax params file/);
  });
});
