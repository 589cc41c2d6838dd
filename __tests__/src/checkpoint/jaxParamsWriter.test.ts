import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import { presetConfig } from '../../../src/index.js';
import { readJaxSliceF32, scanJaxParams } from '../../../src/checkpoint/jaxParams.js';
import { bf16Bits, bufferRecord, randomBf16Record, recordSeed, scannedLwmRecords, scannedLwmShapes, writeJaxParams } from '../../helpers/jaxParamsWriter.js';
import { fixture, tmpDir } from '../../helpers/paths.js';

const dir = fixture('tiny-lwm-text-jax');
const work = tmpDir('jax-writer');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** What readJaxSliceF32 must return for count values of a random record from element start. */
function expected(seed: number, start: number, count: number): string {
  const f32Bits = new Uint32Array(count);
  for (let j = 0; j < count; j++) f32Bits[j] = bf16Bits(seed, start + j) << 16;
  return bytes(new Float32Array(f32Bits.buffer));
}

/** Millions of values compare fast as bytes (all are normal numbers, so bytes equal means values equal). */
const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');

describe('writeJaxParams', () => {
  // The writer's independent checks are files made by a Python re-implementation of flax.
  it('rewrites the fixture chunked record byte for byte with a 64-byte chunk limit', () => {
    const values = Float32Array.from({ length: 35 }, (_, i) => i * 0.25 - 4);
    const file = path.join(work, 'chunked.msgpack');
    writeJaxParams(file, [bufferRecord('test/chunked_array/kernel', 'float32', [5, 7], new Uint8Array(values.buffer))], { maxChunkBytes: 64 });
    expect(fs.readFileSync(file).equals(fs.readFileSync(path.join(dir, 'chunked-record.msgpack')))).toBe(true);
  });

  it('rewrites the fixture scanned params file byte for byte (bin32/ext32 records, sorted keys)', () => {
    const src = path.join(dir, 'params');
    const bytes = fs.readFileSync(src);
    const recs = scanJaxParams(src).map((r) => bufferRecord(r.key.join('/'), r.dtype as 'bfloat16', r.shape, bytes.subarray(r.parts[0]!.offset, r.parts[0]!.offset + r.parts[0]!.length)));
    const file = path.join(work, 'params-copy');
    writeJaxParams(file, recs, { pieceBytes: 1000 });
    expect(fs.readFileSync(file).equals(bytes)).toBe(true);
    expect(scannedLwmShapes(presetConfig('tiny')).map(([k, s]) => `${k} ${s}`)).toEqual(scanJaxParams(src).map((r) => `${r.key.join('/')} ${r.shape}`));
  });

  it('writes the 8242-byte ln_f record of lwm-spec 8.2', () => {
    const file = path.join(work, 'ln_f');
    expect(writeJaxParams(file, [randomBf16Record('transformer/ln_f/kernel', [4096], 1)])).toBe(8242);
    const head = fs.readFileSync(file);
    const want = Buffer.concat([Buffer.from('9293ab', 'hex'), Buffer.from('transformer'), Buffer.from('a4', 'hex'), Buffer.from('ln_f'), Buffer.from('a6', 'hex'), Buffer.from('kernel'), Buffer.from('c52015c82011019391cd1000a8', 'hex'), Buffer.from('bfloat16'), Buffer.from('c52000', 'hex')]);
    expect(head.subarray(0, want.length).toString("hex")).toBe(want.toString("hex"));
  });

  it('reads back a tiny scanned file, with records forced into chunks, value for value', () => {
    const c = presetConfig('tiny');
    const file = path.join(work, 'params');
    const seed = 7;
    // 3000 bytes: 1500 bf16 per chunk, so the vocab tensors get map16 chunk maps and layer slices cross chunks.
    const size = writeJaxParams(file, scannedLwmRecords(c, seed), { maxChunkBytes: 3000, pieceBytes: 998 });
    expect(fs.statSync(file).size).toBe(size);
    const recs = scanJaxParams(file);
    const shapes = scannedLwmShapes(c);
    expect(recs.map((r) => [r.key.join('/'), r.shape])).toEqual(shapes);
    recs.forEach((r, i) => {
      const n = r.shape.reduce((a, b) => a * b, 1);
      expect(r.dtype).toBe('bfloat16');
      expect(r.parts.length).toBe(Math.ceil((n * 2) / 3000));
      expect(bytes(readJaxSliceF32(file, r, 0, n))).toBe(expected(recordSeed(seed, i), 0, n));
    });
    const w1 = recs.findIndex((r) => r.key.join('/') === 'transformer/h/scan_decoder/feed_forward/w1/kernel');
    const per = c.hiddenSize * c.intermediateSize;
    expect(bytes(readJaxSliceF32(file, recs[w1]!, per, per))).toBe(expected(recordSeed(seed, w1), per, per));
  });
});
