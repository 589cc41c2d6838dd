import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { CheckpointError, ConfigError, LwmError } from '../../ops/errors.js';
import { validateVqganConfig, vqganConfig, vqganConfigFromJson, vqganParamSpecs, type VqganConfig } from '../../models/vqgan/config.js';
import { Vqgan } from '../../models/vqgan/model.js';
import { readSafetensorsHeader, readTensorF32, SINGLE_FILE, writeSafetensors } from './safetensors.js';
import { readJsonObject } from './modelDir.js';
import { fsyncPath, sha256OfFile, swapDirectory } from './files.js';

/**
 * This project's VQGAN folder format:
 *
 *   DIR/config.json        the VQGAN config in VQGANConfig's snake_case keys (those vqganConfigFromJson
 *                          reads) plus num_groups, norm_eps, "model_type": "lwm-vqgan" and
 *                          "lwm_format_version": "1"
 *   DIR/model.safetensors  one tensor per vqganParamSpecs entry, named by its Flax path joined with '/'
 *                          (e.g. encoder/DownsamplingBlock_1/ResnetBlock_0/Conv_2/kernel), in Flax
 *                          layouts (conv kernels HWIO, codebook [numEmbeddings, quantizedEmbedDim]);
 *                          F32 or BF16 as written (F16 is read too); nothing else.
 *
 * A folder is written whole into a temporary sibling and renamed into place, so a reader never
 * sees a half-written model.
 */

export const VQGAN_MODEL_TYPE = 'lwm-vqgan';
export const VQGAN_FORMAT_VERSION = '1';
export const VQGAN_WEIGHTS_FILE = SINGLE_FILE;
export const VQGAN_CONFIG_FILE = 'config.json';

/** config.json of a VQGAN folder. */
export function vqganConfigToJson(c: Readonly<VqganConfig>): Record<string, unknown> {
  return {
    model_type: VQGAN_MODEL_TYPE,
    lwm_format_version: VQGAN_FORMAT_VERSION,
    resolution: c.resolution,
    num_channels: c.numChannels,
    hidden_channels: c.hiddenChannels,
    channel_mult: [...c.channelMult],
    num_res_blocks: c.numResBlocks,
    attn_resolutions: [...c.attnResolutions],
    no_attn_mid_block: c.noAttnMidBlock,
    z_channels: c.zChannels,
    num_embeddings: c.numEmbeddings,
    quantized_embed_dim: c.quantizedEmbedDim,
    resample_with_conv: c.resampleWithConv,
    num_groups: c.numGroups,
    norm_eps: c.normEps,
  };
}

export interface LoadVqganOptions {
  /** Override config.json's GroupNorm groups (LWM: 32). */
  numGroups?: number;
  /** Override config.json's GroupNorm epsilon (LWM: 1e-6). */
  normEps?: number;
}

/** Reads and validates DIR/config.json of a VQGAN folder. */
export function readVqganConfig(dir: string, opts: LoadVqganOptions = {}): VqganConfig {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw new CheckpointError(`${dir}: no such VQGAN folder; pass the folder that holds config.json and model.safetensors`);
  }
  const file = path.join(dir, VQGAN_CONFIG_FILE);
  if (!fs.existsSync(file)) {
    const hint = fs.existsSync(path.join(dir, 'vqgan')) ? ' (found the original `vqgan` pickle: convert it first)' : '';
    throw new CheckpointError(`${dir}: missing config.json; this is not an lwm-vqgan folder${hint}`);
  }
  const j = readJsonObject(file);
  if (j['model_type'] !== VQGAN_MODEL_TYPE) {
    throw new CheckpointError(`${file}: model_type is ${JSON.stringify(j['model_type'] ?? null)}, expected "${VQGAN_MODEL_TYPE}"; this is not an lwm VQGAN folder`);
  }
  try {
    const base = vqganConfigFromJson(j);
    const extra: Partial<VqganConfig> = {};
    const groups = opts.numGroups ?? j['num_groups'];
    const eps = opts.normEps ?? j['norm_eps'];
    if (groups !== undefined) extra.numGroups = groups as number;
    if (eps !== undefined) extra.normEps = eps as number;
    return vqganConfig({ ...base, ...extra });
  } catch (e) {
    if (e instanceof LwmError) throw new ConfigError(`${file}: ${e.message}`);
    throw e;
  }
}

/** Loads a VQGAN folder; every tensor is checked (name, shape, dtype; no extras) before any is read. */
export function loadVqgan(dir: string, opts: LoadVqganOptions = {}): Vqgan {
  const config = readVqganConfig(dir, opts);
  const file = path.join(dir, VQGAN_WEIGHTS_FILE);
  if (!fs.existsSync(file)) throw new CheckpointError(`${file}: no such file; a VQGAN folder holds config.json and ${VQGAN_WEIGHTS_FILE}`);
  const header = readSafetensorsHeader(file);
  const specs = vqganParamSpecs(config);
  for (const s of specs) {
    const e = header.tensors.get(s.name);
    if (!e) throw new CheckpointError(`${file}: tensor '${s.name}' is missing (config.json needs shape [${s.shape.join(', ')}])`);
    if (e.shape.length !== s.shape.length || e.shape.some((d, i) => d !== s.shape[i])) {
      throw new CheckpointError(`${file}: tensor '${s.name}' has shape [${e.shape.join(', ')}] but config.json implies [${s.shape.join(', ')}]`);
    }
    if (!['F32', 'F16', 'BF16'].includes(e.dtype)) {
      throw new CheckpointError(`${file}: tensor '${s.name}' has dtype ${e.dtype}; VQGAN weights must be F32, F16 or BF16`);
    }
  }
  if (header.tensors.size !== specs.length) {
    const known = new Set(specs.map((s) => s.name));
    const extra = [...header.tensors.keys()].filter((n) => !known.has(n));
    throw new CheckpointError(
      `${file}: unexpected tensor '${extra[0]}'${extra.length > 1 ? ` (and ${extra.length - 1} more)` : ''}; it is not a parameter of the VQGAN config.json describes`,
    );
  }
  const params = new Map<string, tf.Tensor>();
  try {
    for (const s of specs) params.set(s.name, tf.tensor(readTensorF32(header.tensors.get(s.name)!, file), s.shape, 'float32'));
    return new Vqgan(config, params);
  } catch (err) {
    for (const t of params.values()) t.dispose();
    throw err;
  }
}

export interface SaveVqganOptions {
  /** Storage dtype of the weights (default F32). */
  dtype?: 'F32' | 'BF16';
  /** Read the weights back after writing and compare every tensor's sha256. */
  verify?: boolean;
}

/**
 * Writes a VQGAN folder. The whole folder is built in a temporary sibling and renamed into place;
 * on failure nothing is left behind and an existing model at DIR is untouched. DIR must not
 * exist, be empty, or be an lwm-vqgan folder holding only config.json and model.safetensors
 * (which is then replaced).
 */
export function saveVqgan(dir: string, model: Vqgan | { config: Readonly<VqganConfig>; params: ReadonlyMap<string, tf.Tensor> }, opts: SaveVqganOptions = {}): string[] {
  const dtype = opts.dtype ?? 'F32';
  const config = model.config;
  // Vqgan keeps its params private; the map is read, never modified.
  const params = model.params;
  validateVqganConfig(config as VqganConfig);
  const specs = vqganParamSpecs(config as VqganConfig);
  for (const s of specs) {
    const t = params.get(s.name);
    if (!t) throw new CheckpointError(`saveVqgan: parameter '${s.name}' is missing (shape [${s.shape.join(', ')}])`);
    if (t.shape.join(',') !== s.shape.join(',')) throw new CheckpointError(`saveVqgan: parameter '${s.name}' has shape [${t.shape.join(', ')}], the config needs [${s.shape.join(', ')}]`);
    if (t.dtype !== 'float32') throw new CheckpointError(`saveVqgan: parameter '${s.name}' is ${t.dtype}; VQGAN weights must be float32`);
  }
  if (params.size !== specs.length) {
    const known = new Set(specs.map((s) => s.name));
    const extra = [...params.keys()].find((n) => !known.has(n));
    throw new CheckpointError(`saveVqgan: parameter '${extra}' is not part of the VQGAN config`);
  }

  const target = path.resolve(dir);
  const existing = checkTarget(target);
  const parent = path.dirname(target);
  fs.mkdirSync(parent, { recursive: true });
  const tag = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const tmp = path.join(parent, `.${path.basename(target)}.tmp-${tag}`);
  fs.mkdirSync(tmp);
  try {
    writeSafetensors(
      path.join(tmp, VQGAN_WEIGHTS_FILE),
      specs.map((s) => ({ name: s.name, shape: s.shape, data: () => params.get(s.name)!.dataSync() as Float32Array })),
      dtype,
      { format: 'flax', lwm_format: VQGAN_MODEL_TYPE, lwm_format_version: VQGAN_FORMAT_VERSION },
      { verify: opts.verify },
    );
    const cfgFile = path.join(tmp, VQGAN_CONFIG_FILE);
    fs.writeFileSync(cfgFile, JSON.stringify(vqganConfigToJson(config), null, 2) + '\n');
    fsyncPath(cfgFile);
    fsyncPath(tmp);
    if (existing === 'empty') fs.rmdirSync(target);
    if (existing === 'vqgan') {
      swapDirectory(tmp, target, tag);
    } else {
      fs.renameSync(tmp, target);
    }
    fsyncPath(parent);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return [VQGAN_CONFIG_FILE, VQGAN_WEIGHTS_FILE];
}

function checkTarget(target: string): 'none' | 'empty' | 'vqgan' {
  if (!fs.existsSync(target)) return 'none';
  if (!fs.statSync(target).isDirectory()) throw new CheckpointError(`${target}: exists and is not a folder; choose another output path`);
  const entries = fs.readdirSync(target);
  if (entries.length === 0) return 'empty';
  const others = entries.filter((f) => f !== VQGAN_CONFIG_FILE && f !== VQGAN_WEIGHTS_FILE);
  let isVqgan = false;
  try {
    isVqgan = JSON.parse(fs.readFileSync(path.join(target, VQGAN_CONFIG_FILE), 'utf8'))?.model_type === VQGAN_MODEL_TYPE;
  } catch {
    isVqgan = false;
  }
  if (!isVqgan || others.length > 0) {
    throw new CheckpointError(
      `${target}: exists and is not an lwm-vqgan folder holding only ${VQGAN_CONFIG_FILE} and ${VQGAN_WEIGHTS_FILE}${others.length ? ` (found '${others[0]}')` : ''}; choose an empty or new folder`,
    );
  }
  return 'vqgan';
}


/**
 * sha256 (hex) of DIR/model.safetensors, read in 8 MiB chunks: identifies the exact weights,
 * e.g. as a cache key for tokenized data.
 */
export function vqganWeightsHash(dir: string): string {
  const file = path.join(dir, VQGAN_WEIGHTS_FILE);
  if (!fs.existsSync(file)) throw new CheckpointError(`${file}: no such file; pass a VQGAN folder`);
  return sha256OfFile(file);
}
