import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from '@jest/globals';
import { removeStaleTemporaries, WrittenRanges } from '../../../src/checkpoint/files.js';
import { storedDtype, type ModelSource } from '../../../src/checkpoint/source.js';
import { detectFormat, releaseFromPath } from '../../../src/convert/open.js';
import { presetConfig } from '../../../src/index.js';
import { fixture, tmpDir } from '../../helpers/paths.js';

const work = tmpDir('convert-parts');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('WrittenRanges: the read-back check of written tensors', () => {
  const file = path.join(work, 'ranges.bin');
  const write = (bytes: number[]) => fs.writeFileSync(file, Buffer.from(bytes));

  it('passes when the file holds what was hashed, and names the tensor that differs', () => {
    const r = new WrittenRanges();
    r.begin('a', 2);
    r.update(new Uint8Array([1, 2]));
    r.update(new Uint8Array([3]));
    r.begin('b', 5);
    r.update(new Uint8Array([9, 9]));
    write([0, 0, 1, 2, 3, 9, 9]);
    expect(() => r.verify(file, 7)).not.toThrow();
    write([0, 0, 1, 2, 3, 9, 8]);
    expect(() => r.verify(file, 7)).toThrow(/tensor 'b' reads back differently/);
    write([0, 0, 1, 2, 3, 9]);
    expect(() => r.verify(file, 7)).toThrow(/is 6 bytes after writing, expected 7/);
  });
});

describe('removeStaleTemporaries', () => {
  it("removes leftovers of dead processes only, never a live one's or another name", () => {
    const dir = path.join(work, 'stale');
    fs.mkdirSync(dir);
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    for (const n of [`.m.tmp-${dead}`, `.m.tmp-${process.pid}`, '.m.tmp-x', `.other.tmp-${dead}`]) fs.mkdirSync(path.join(dir, n));
    expect(removeStaleTemporaries(dir, '.m.tmp-')).toEqual([`.m.tmp-${dead}`]);
    expect(fs.readdirSync(dir).sort()).toEqual([`.m.tmp-${process.pid}`, '.m.tmp-x', `.other.tmp-${dead}`].sort());
  });
});

describe('input detection', () => {
  it('knows each format by content, and a Jax release folder by its params file', () => {
    expect(detectFormat(fixture('tiny-lwm-text')).format).toBe('hf');
    expect(detectFormat(fixture('tiny-lwm-text-pt')).format).toBe('hf');
    expect(detectFormat(path.join(fixture('tiny-lwm-text-jax'), 'params'))).toEqual({ format: 'jax', file: path.join(fixture('tiny-lwm-text-jax'), 'params') });
    expect(detectFormat(fixture('tiny-lwm-text-jax'))).toEqual({ format: 'jax', file: path.join(fixture('tiny-lwm-text-jax'), 'params') });
    expect(detectFormat(path.join(fixture('tiny-vqgan-pickle'), 'vqgan')).format).toBe('vqgan');
    const empty = path.join(work, 'empty');
    fs.writeFileSync(empty, '');
    expect(() => detectFormat(empty)).toThrow(/first byte none: empty file/);
  });

  it('reads the LWM release from a path (theta and length follow from it)', () => {
    expect(releaseFromPath('/m/LWM-Text-Chat-1M-Jax/params')).toBe('lwm-text-chat-1m');
    expect(releaseFromPath('/c/hub/models--LargeWorldModel--LWM-Chat-32K-Jax/snapshots/abc/params')).toBe('lwm-chat-32k');
    expect(releaseFromPath('/m/lwm-text-256k/params')).toBe('lwm-text-256k');
    expect(releaseFromPath('/m/LWM-Text-1M.bak/params')).toBe('lwm-text-1m');
    expect(releaseFromPath('/m/lwm-text-1m0/params')).toBeUndefined();
    expect(releaseFromPath('/m/my-model/params')).toBeUndefined();
    expect(presetConfig(releaseFromPath('/m/LWM-Text-Chat-1M-Jax/params')!).maxSeqLen).toBe(1048576);
  });
});

describe('storedDtype', () => {
  it('is what most values are stored as, so norms kept in F32 do not decide', () => {
    const t = (stored: 'F32' | 'BF16', shape: number[]) => ({ name: 'x', shape, stored, data: () => new Float32Array(0) });
    const src = (tensors: ModelSource['tensors']): ModelSource => ({ config: presetConfig('tiny'), tensors, name: 'm', format: 'test' });
    expect(storedDtype(src([t('BF16', [64, 64]), t('F32', [64]), t('F32', [64])]))).toBe('BF16');
    expect(storedDtype(src([t('BF16', [4]), t('F32', [64, 64])]))).toBe('F32');
  });
});
