import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError } from '../../ops/errors.js';
import type { LlamaModel } from '../../models/llama.js';
import { initVqganParams, vqganConfig, VQGAN_TINY } from '../../models/vqgan/config.js';
import { Vqgan } from '../../models/vqgan/model.js';
import { generateVision, type GenerateVisionOptions, type GenerateVisionResult } from './generation.js';
import { decodeVisionCodes, outputKind, writeCodesJson, writeVisionOutput } from './output.js';

/**
 * The VQGAN folder to decode with: the one given, else `<model>/vqgan` when it exists; null when
 * there is no model folder either (the caller picks a random VQGAN).
 */
export function resolveVqganDir(modelDir: string | undefined, vqgan: string | undefined): string | null {
  if (vqgan !== undefined) return vqgan;
  if (modelDir === undefined) return null;
  const beside = path.join(modelDir, 'vqgan');
  if (fs.existsSync(path.join(beside, 'config.json'))) return beside;
  throw new InputError(`no VQGAN: ${beside} does not exist; pass --vqgan DIR (an lwm-vqgan folder, e.g. converted from LWM's vqgan file)`);
}

/**
 * VQGAN_TINY (16× downsampling, 256×256 frames) with a full 8192-entry codebook, so every code a
 * vision model can sample decodes to its own random pattern. For demos and tests only.
 */
export function randomTinyVqgan(seed = 0): Vqgan {
  const c = vqganConfig({ ...VQGAN_TINY, numEmbeddings: 8192, numGroups: 8 });
  return new Vqgan(c, initVqganParams(c, seed));
}

/** Checks an output name for a kind before any work is done. */
export function checkVisionOutput(file: string, frames: number): void {
  const kind = outputKind(file);
  if (frames === 1 && kind !== 'png') throw new InputError(`--out ${file}: an image is written as PNG; give a name ending in .png`);
  if (!kind) throw new InputError(`--out ${file}: a video is written as .mp4 (4 fps) or .png (frames side by side); give one of those extensions`);
  const dir = path.dirname(path.resolve(file));
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new InputError(`--out ${file}: the folder ${dir} does not exist; create it first`);
}

export interface VisionFileOptions extends GenerateVisionOptions {
  out: string;
  /** Also write the codes and tokens as JSON here. */
  codesOut?: string;
}

export interface VisionFileResult extends GenerateVisionResult {
  out: string;
  /** 'png', 'h264' or 'mpeg4'. */
  format: string;
  /** Codes past the VQGAN codebook, clamped to its last entry when decoding. */
  clamped: number;
}

/** Generate, VQGAN-decode and write: what `lwm generate --image/--video` does once the models are open. */
export async function generateVisionFile(model: LlamaModel, vqgan: Vqgan, o: VisionFileOptions): Promise<VisionFileResult> {
  checkVisionOutput(o.out, o.frames ?? 1);
  const r = await generateVision(model, o);
  const decoded = await decodeVisionCodes(vqgan, r.codes);
  const format = await writeVisionOutput(o.out, decoded);
  if (o.codesOut) writeCodesJson(o.codesOut, { prompt: o.prompt, frames: r.frames, seed: o.seed ?? 0, tokens: r.tokens, codes: r.codes });
  return { ...r, out: o.out, format, clamped: decoded.clamped };
}
