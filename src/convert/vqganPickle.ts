import * as fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { CheckpointError } from '../../ops/index.js';
import { VQGAN_DEFAULTS, vqganParamSpecs, type VqganConfig } from '../../models/index.js';
import { f16ToF32 } from '../checkpoint/dtype.js';
import { flattenTree, isPickledArray, readPickle, type PickledArray } from '../checkpoint/pickle.js';
import { saveVqgan, type SaveVqganOptions } from '../checkpoint/vqgan.js';

export interface ConvertVqganOptions extends SaveVqganOptions {
  /** The architecture the pickle holds (default LWM's VQGAN, which every release uses). */
  config?: VqganConfig;
}

/** float32 values of a pickled numpy array (little-endian f4 or f2, C order). */
function values(a: PickledArray, name: string): Float32Array {
  if (a.fortranOrder && a.shape.filter((d) => d > 1).length > 1) throw new CheckpointError(`vqgan: '${name}' is stored in Fortran order; re-save it C-contiguous`);
  const n = a.shape.reduce((x, y) => x * y, 1);
  const copy = new Uint8Array(a.data); // aligned copy
  if (a.dtype === '<f4' && copy.length === 4 * n) return new Float32Array(copy.buffer, 0, n);
  if (a.dtype === '<f2' && copy.length === 2 * n) {
    const out = new Float32Array(n);
    f16ToF32(new Uint16Array(copy.buffer, 0, n), out);
    return out;
  }
  throw new CheckpointError(`vqgan: '${name}' is ${a.dtype} with ${a.data.length} bytes for shape [${a.shape}]; expected little-endian float32 or float16`);
}

/**
 * LWM's `vqgan` pickle (the bare Flax parameter dict of numpy arrays; protocols 2-5) to an lwm
 * VQGAN folder (config.json + model.safetensors under the same Flax paths). Every tensor is
 * checked against the config before the folder, built aside and renamed, appears.
 */
export function convertVqganPickle(file: string, outDir: string, opts: ConvertVqganOptions = {}): { tensors: number; values: number } {
  if (!fs.existsSync(file)) throw new CheckpointError(`${file}: no such file; give the path of LWM's vqgan pickle`);
  const config = opts.config ?? VQGAN_DEFAULTS;
  const leaves = flattenTree(readPickle(fs.readFileSync(file), file));
  const specs = vqganParamSpecs(config);
  const known = new Set(specs.map((s) => s.name));
  const extra = [...leaves.keys()].filter((k) => !known.has(k));
  if (extra.length) throw new CheckpointError(`${file}: '${extra[0]}'${extra.length > 1 ? ` and ${extra.length - 1} more` : ''} is not a parameter of this VQGAN config; is this LWM's vqgan file (or does it need --config)?`);
  const params = new Map<string, tf.Tensor>();
  let count = 0;
  try {
    for (const s of specs) {
      const a = leaves.get(s.name);
      if (!isPickledArray(a)) throw new CheckpointError(`${file}: '${s.name}' is missing (the config needs shape [${s.shape}])`);
      if (a.shape.join() !== s.shape.join()) throw new CheckpointError(`${file}: '${s.name}' has shape [${a.shape}] but the config implies [${s.shape}]; pass the matching --config`);
      params.set(s.name, tf.tensor(values(a, s.name), s.shape, 'float32'));
      count += s.shape.reduce((x, y) => x * y, 1);
    }
    saveVqgan(outDir, { config, params }, opts);
  } finally {
    for (const t of params.values()) t.dispose();
  }
  return { tensors: specs.length, values: count };
}
