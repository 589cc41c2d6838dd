import * as fs from 'node:fs';
import * as path from 'node:path';
import { InputError, LwmError } from '../../ops/errors.js';
import { jsonlLines, parseFieldsSpec, parseJsonlLine, resolveVisionPath, type JsonlRecord } from '../../data/examples.js';
import { probeVideo, sampleIndices } from '../../data/frames.js';
import { visionKind, samplingOptions, type Sampling, type VisionKind } from './codes.js';

/** One usable manifest line. */
export interface ManifestEntry {
  record: JsonlRecord;
  /** The fields spec for this record: --fields, else the record's own `fields` (undefined: processExample picks), else inferred. */
  fields: string | undefined;
  /** Absolute paths of its path-valued vision fields. */
  visionFiles: string[];
}

export interface VisionFile {
  abs: string;
  kind: VisionKind;
  /** Frames that will be encoded (1 for an image). */
  frames: number;
}

export interface ManifestOptions {
  fields?: string;
  allowOutsidePaths?: boolean;
  /** Folder vision paths must stay inside (default: the manifest's folder). */
  datasetRoot?: string;
  sampling: Sampling;
  /** Called for each bad line instead of throwing (--skip-bad). */
  onBad?: (line: number, message: string) => void;
}

const isVisionKey = (k: string): boolean => k.includes('vision');

/**
 * The fields spec when neither --fields nor the record says: question/answer pairs train on the
 * answer, captions on the caption, plain text on everything (the paper's chat and caption recipes).
 */
export function inferFields(value: Record<string, unknown>): string | null {
  const has = (k: string): boolean => typeof value[k] === 'string';
  const vision = Object.keys(value).filter(isVisionKey);
  const v = vision.length > 0 ? vision.join('+') : '';
  if (has('question') && has('answer')) return v ? `[${v}+question],answer` : '[question],answer';
  for (const caption of ['caption', 'text']) if (v && has(caption)) return `[${v}],${caption}`;
  if (has('text')) return 'text';
  return null;
}

/**
 * The fields spec a record is laid out with: `fields` (--fields) for every line, else the record's
 * own (undefined: processExample reads it), else inferred; throws naming `where` when none applies.
 */
export function recordFields(value: Record<string, unknown>, fields: string | undefined, where: string): string | undefined {
  if (fields !== undefined || value['fields'] !== undefined) return fields;
  const inferred = inferFields(value);
  if (inferred === null) throw new InputError(`${where}: no "fields" and no known keys (text, question+answer, vision+caption); add "fields" to the line or pass --fields`);
  return inferred;
}

export interface Manifest {
  file: string;
  text: string;
  entries: ManifestEntry[];
  /** Non-blank lines in the file. */
  lines: number;
  skippedLines: number[];
}

/** Reads and checks every line of a manifest (JSON, fields, vision paths inside the dataset folder). */
export function readManifest(file: string, opts: ManifestOptions): Manifest {
  let text: string;
  try {
    if (fs.statSync(file).isDirectory()) throw new InputError(`${file}: is a folder; pass the manifest .jsonl file`);
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof LwmError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new InputError(code === 'ENOENT' ? `${file}: no such manifest; check the path` : `${file}: cannot be read (${code ?? String(e)})`);
  }
  const baseDir = path.dirname(path.resolve(file));
  const lines = jsonlLines(text);
  if (lines.length === 0) throw new InputError(`${file}: the manifest has no examples; add one JSON object per line`);
  if (opts.fields !== undefined) parseFieldsSpec(opts.fields);
  const entries: ManifestEntry[] = [];
  const skippedLines: number[] = [];
  for (const l of lines) {
    try {
      const record = parseJsonlLine(l.text, l.line, file);
      const where = `${file}:${l.line}`;
      const fields = recordFields(record.value, opts.fields, where);
      const visionFiles: string[] = [];
      for (const [k, v] of Object.entries(record.value)) {
        if (!isVisionKey(k) || typeof v !== 'string') continue;
        const abs = resolveVisionPath(v, l.line, { baseDir, datasetRoot: opts.datasetRoot, allowOutsidePaths: opts.allowOutsidePaths, source: file });
        if (!fs.existsSync(abs)) throw new InputError(`${where}: ${k} file ${v} not found (${abs}); fix the path or remove the line`);
        visionFiles.push(abs);
      }
      entries.push({ record, fields, visionFiles });
    } catch (e) {
      if (!(e instanceof LwmError) || !opts.onBad) throw e;
      opts.onBad(l.line, e.message);
      skippedLines.push(l.line);
    }
  }
  return { file, text, entries, lines: lines.length, skippedLines };
}

/**
 * Probes every distinct vision file of the entries (ffmpeg for videos, sharp for images) so a bad
 * file is found before anything is encoded; returns the files in first-use order and the entries
 * whose files are all good. A bad file fails the run, or with onBad skips every line that uses it.
 */
export async function probeVisionFiles(manifest: Manifest, opts: ManifestOptions): Promise<{ files: VisionFile[]; entries: ManifestEntry[] }> {
  const files = new Map<string, VisionFile | Error>();
  for (const e of manifest.entries) {
    for (const abs of e.visionFiles) {
      if (files.has(abs)) continue;
      try {
        files.set(abs, await probeOne(abs, opts.sampling));
      } catch (err) {
        if (!(err instanceof LwmError) || !opts.onBad) throw new InputError(`${manifest.file}:${e.record.line}: ${(err as Error).message}`);
        files.set(abs, err);
      }
    }
  }
  const good: ManifestEntry[] = [];
  for (const e of manifest.entries) {
    const bad = e.visionFiles.map((f) => files.get(f)).find((f) => f instanceof Error) as Error | undefined;
    if (bad) {
      opts.onBad!(e.record.line, `${manifest.file}:${e.record.line}: ${bad.message}`);
      manifest.skippedLines.push(e.record.line);
    } else good.push(e);
  }
  manifest.skippedLines.sort((a, b) => a - b);
  const used = new Set(good.flatMap((e) => e.visionFiles));
  return { files: [...files.values()].filter((f): f is VisionFile => !(f instanceof Error) && used.has(f.abs)), entries: good };
}

async function probeOne(abs: string, sampling: Sampling): Promise<VisionFile> {
  const kind = visionKind(abs);
  if (kind === 'image') {
    const { default: sharp } = await import('sharp');
    try {
      const m = await sharp(abs).metadata();
      if (!(m.width! > 0 && m.height! > 0)) throw new Error('no size');
    } catch (e) {
      throw new InputError(`${abs}: not a readable image (${(e as Error).message.split('\n')[0]}); use a PNG or JPEG file`);
    }
    return { abs, kind, frames: 1 };
  }
  const info = await probeVideo(abs);
  if (info.frameCount === 0) throw new InputError(`${abs}: video has no frames (zero length); pass a non-empty video`);
  return { abs, kind, frames: sampleIndices(info, samplingOptions(sampling)).length };
}
