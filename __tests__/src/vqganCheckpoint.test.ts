import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from '@jest/globals';
import {
  CheckpointError,
  initVqganParams,
  loadVqgan,
  readSafetensorsHeader,
  saveVqgan,
  Vqgan,
  VQGAN_TINY,
  vqganConfig,
  vqganParamSpecs,
  vqganWeightsHash,
  writeSafetensors,
  type TensorToWrite,
} from '../../src/index.js';
import { tmpDir } from '../helpers/paths.js';
import { randomArray } from '../helpers/tensors.js';

const config = vqganConfig({ ...VQGAN_TINY, numGroups: 8 });
const specs = vqganParamSpecs(config);
const model = new Vqgan(config, initVqganParams(config, 7));
const frames = tf.tensor4d(Array.from(randomArray(2 * 32 * 32 * 3, 11), (v) => Math.max(-1, Math.min(1, v))), [2, 32, 32, 3]);
const paramsOf = (m: Vqgan) => m.params;
const bytesOf = (t: tf.Tensor) => Buffer.from((t.dataSync() as Float32Array).buffer);

afterAll(() => {
  model.dispose();
  frames.dispose();
});

/** A freshly saved F32 folder a test may damage. */
function saved(): string {
  const dir = path.join(tmpDir('vqgan'), 'model');
  saveVqgan(dir, model);
  return dir;
}

/** Rewrites DIR/model.safetensors from the saved weights, with `edit` applied to the tensor list. */
function rewriteWeights(dir: string, edit: (ts: TensorToWrite[]) => TensorToWrite[]): void {
  const p = paramsOf(model);
  const ts = specs.map((s) => ({ name: s.name, shape: s.shape, data: () => p.get(s.name)!.dataSync() as Float32Array }));
  writeSafetensors(path.join(dir, 'model.safetensors'), edit(ts), 'F32');
}

const oneLine = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointError);
    const msg = (e as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error('expected a CheckpointError');
};

describe('VQGAN folders', () => {
  it('F32 save then load: same config, identical weight bytes, identical codes', () => {
    const dir = saved();
    expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'model.safetensors']);
    expect(fs.readdirSync(path.dirname(dir))).toEqual(['model']); // no temporary folder left
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    expect(json).toMatchObject({ model_type: 'lwm-vqgan', hidden_channels: 8, channel_mult: [1, 2, 2, 4, 6], num_groups: 8, num_embeddings: 64 });
    const h = readSafetensorsHeader(path.join(dir, 'model.safetensors'));
    expect([...h.tensors.keys()]).toEqual(specs.map((s) => s.name));
    expect(h.tensors.get('encoder/DownsamplingBlock_1/ResnetBlock_0/Conv_2/kernel')!.shape).toEqual([1, 1, 8, 16]);

    const back = loadVqgan(dir);
    expect(back.config).toEqual(config);
    for (const s of specs) expect(bytesOf(paramsOf(back).get(s.name)!).equals(bytesOf(paramsOf(model).get(s.name)!))).toBe(true);
    const a = model.encode(frames);
    const b = back.encode(frames);
    expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync()));
    expect(b.shape).toEqual([2, 2, 2]);
    a.dispose();
    b.dispose();
    back.dispose();
  });

  it('BF16 save then load: weights rounded to bf16, and saving them again is byte-identical', () => {
    const root = tmpDir('vqgan-bf16');
    saveVqgan(path.join(root, 'a'), { config, params: paramsOf(model) }, { dtype: 'BF16' });
    const h = readSafetensorsHeader(path.join(root, 'a', 'model.safetensors'));
    expect(new Set([...h.tensors.values()].map((e) => e.dtype))).toEqual(new Set(['BF16']));
    const back = loadVqgan(path.join(root, 'a'));
    const w = paramsOf(back).get('quantize/embeddings')!.dataSync() as Float32Array;
    const orig = paramsOf(model).get('quantize/embeddings')!.dataSync() as Float32Array;
    let maxRel = 0;
    for (let i = 0; i < w.length; i++) {
      expect(new Uint32Array(Float32Array.of(w[i]!).buffer)[0]! & 0xffff).toBe(0); // a bf16 value
      maxRel = Math.max(maxRel, Math.abs(w[i]! - orig[i]!) / Math.abs(orig[i]!));
    }
    expect(maxRel).toBeLessThanOrEqual(2 ** -8);
    saveVqgan(path.join(root, 'b'), back, { dtype: 'BF16' });
    expect(fs.readFileSync(path.join(root, 'b', 'model.safetensors')).equals(fs.readFileSync(path.join(root, 'a', 'model.safetensors')))).toBe(true);
    const codes = back.encode(frames);
    expect(codes.shape).toEqual([2, 2, 2]);
    codes.dispose();
    back.dispose();
  });

  it('missing folder, missing config.json, wrong model_type: one-line errors', () => {
    expect(oneLine(() => loadVqgan('/nonexistent/vqgan'))).toMatch(/^\/nonexistent\/vqgan: no such VQGAN folder/);
    const dir = saved();
    const cfg = path.join(dir, 'config.json');
    const json = JSON.parse(fs.readFileSync(cfg, 'utf8'));
    fs.writeFileSync(cfg, JSON.stringify({ ...json, model_type: 'llama' }));
    expect(oneLine(() => loadVqgan(dir))).toMatch(/config.json: model_type is "llama", expected "lwm-vqgan"/);
    const { model_type: _, ...rest } = json;
    fs.writeFileSync(cfg, JSON.stringify(rest));
    expect(oneLine(() => loadVqgan(dir))).toMatch(/model_type is null, expected "lwm-vqgan"/);
    fs.rmSync(cfg);
    expect(oneLine(() => loadVqgan(dir))).toMatch(/missing config.json; this is not an lwm-vqgan folder/);
    fs.rmSync(path.join(dir, 'model.safetensors'));
    fs.writeFileSync(cfg, JSON.stringify(json));
    expect(oneLine(() => loadVqgan(dir))).toMatch(/model.safetensors: no such file/);
  });

  it('missing, extra and wrongly shaped tensors are named with the file', () => {
    const dir = saved();
    const file = path.join(dir, 'model.safetensors');
    const esc = file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    rewriteWeights(dir, (ts) => ts.filter((t) => t.name !== 'decoder/Conv_1/bias'));
    expect(oneLine(() => loadVqgan(dir))).toMatch(new RegExp(`^${esc}: tensor 'decoder/Conv_1/bias' is missing \\(config.json needs shape \\[3\\]\\)$`));
    rewriteWeights(dir, (ts) => [...ts, { name: 'encoder/extra/kernel', shape: [2], data: () => new Float32Array(2) }]);
    expect(oneLine(() => loadVqgan(dir))).toMatch(new RegExp(`^${esc}: unexpected tensor 'encoder/extra/kernel'`));
    rewriteWeights(dir, (ts) => ts.map((t) => (t.name === 'quant_conv/kernel' ? { ...t, shape: [1, 1, 4, 16] } : t)));
    expect(oneLine(() => loadVqgan(dir))).toMatch(new RegExp(`^${esc}: tensor 'quant_conv/kernel' has shape \\[1, 1, 4, 16\\] but config.json implies \\[1, 1, 8, 8\\]$`));
    rewriteWeights(dir, (ts) => ts.map((t) => (t.name === 'quant_conv/bias' ? { ...t, dtype: 'I32', data: () => new Int32Array(8) } : t)));
    expect(oneLine(() => loadVqgan(dir))).toMatch(/tensor 'quant_conv\/bias' has dtype I32; VQGAN weights must be F32, F16 or BF16/);
  });

  it('a truncated weights file is refused', () => {
    const dir = saved();
    const f = path.join(dir, 'model.safetensors');
    fs.truncateSync(f, fs.statSync(f).size - 100);
    expect(oneLine(() => loadVqgan(dir))).toMatch(/model.safetensors: truncated: tensor '.*' ends at byte \d+ but the file has \d+ bytes/);
    fs.truncateSync(f, 4);
    expect(oneLine(() => loadVqgan(dir))).toMatch(/not a valid safetensors file: file is 4 bytes/);
  });

  it('a failed save leaves no partial folder and keeps an existing model intact', () => {
    const root = tmpDir('vqgan-fail');
    const params = new Map(paramsOf(model));
    const name = specs[specs.length - 1]!.name; // 'quantize/embeddings', written last: the weights file is mostly written when it fails
    expect(name).toBe('quantize/embeddings');
    const real = params.get(name)!;
    params.set(name, { shape: real.shape, dtype: 'float32', dataSync: () => { throw new Error('disk full'); } } as unknown as tf.Tensor);
    expect(() => saveVqgan(path.join(root, 'new'), { config, params })).toThrow('disk full');
    expect(fs.readdirSync(root)).toEqual([]);

    saveVqgan(path.join(root, 'old'), model);
    const before = vqganWeightsHash(path.join(root, 'old'));
    expect(() => saveVqgan(path.join(root, 'old'), { config, params }, { dtype: 'BF16' })).toThrow('disk full');
    expect(fs.readdirSync(root)).toEqual(['old']);
    expect(vqganWeightsHash(path.join(root, 'old'))).toBe(before);

    // Wrong parameters are refused before anything is written; non-VQGAN folders are never overwritten.
    params.delete(name);
    expect(oneLine(() => saveVqgan(path.join(root, 'x'), { config, params }))).toMatch(/^saveVqgan: parameter 'quantize\/embeddings' is missing \(shape \[64, 8\]\)$/);
    fs.mkdirSync(path.join(root, 'other'));
    fs.writeFileSync(path.join(root, 'other', 'notes.txt'), 'keep me');
    expect(oneLine(() => saveVqgan(path.join(root, 'other'), model))).toMatch(/exists and is not an lwm-vqgan folder/);
    expect(fs.readdirSync(root).sort()).toEqual(['old', 'other']);
  });

  it('the weights hash is stable across saves and changes with one weight', () => {
    const root = tmpDir('vqgan-hash');
    saveVqgan(path.join(root, 'a'), model);
    saveVqgan(path.join(root, 'b'), model);
    const h = vqganWeightsHash(path.join(root, 'a'));
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(vqganWeightsHash(path.join(root, 'b'))).toBe(h);
    saveVqgan(path.join(root, 'a'), model); // overwriting an lwm-vqgan folder replaces it
    expect(vqganWeightsHash(path.join(root, 'a'))).toBe(h);

    const params = new Map(paramsOf(model));
    const e = params.get('quantize/embeddings')!;
    const v = (e.dataSync() as Float32Array).slice();
    v[5] = v[5]! + 1e-3;
    const changed = tf.tensor(v, e.shape);
    params.set('quantize/embeddings', changed);
    saveVqgan(path.join(root, 'c'), { config, params });
    expect(vqganWeightsHash(path.join(root, 'c'))).not.toBe(h);
    changed.dispose();
    expect(oneLine(() => vqganWeightsHash(path.join(root, 'missing')))).toMatch(/model.safetensors: no such file/);
  });
});
