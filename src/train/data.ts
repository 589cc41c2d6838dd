import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, InputError } from '../../ops/errors.js';
import { packedRowSource, type PackedRow, type RowSource } from '../../data/batches.js';
import { parseJsonl, processExample } from '../../data/examples.js';
import { packDocuments, type LossWeighting } from '../../data/packing.js';
import type { Tokenizer } from '../../data/tokenizer.js';
import { openPrepared, PREPARED_INFO_FILE } from '../prepare/format.js';
import { QA_DATASET_FILE } from '../qa/run.js';
import { recordFields } from '../prepare/manifest.js';

/** Training rows from an `lwm prepare` folder (fixed row length) or a JSONL text file (packed here). */
export interface TrainRows {
  source: RowSource;
  /** Where they came from, for messages and metrics. */
  origin: string;
  /** Rows the loss weights were normalised over when packed. */
  packedBatchRows: number;
  hasVision: boolean;
}

export interface RowsOptions {
  seqLen: number;
  weighting?: LossWeighting;
  tokenizer?: Tokenizer;
  fields?: string;
}

/** Opens training data: a prepared folder must have been packed at `seqLen`; JSONL is packed at it. */
export function openTrainRows(data: string, o: RowsOptions): TrainRows {
  if (!fs.existsSync(data)) throw new InputError(`${data}: no such data; pass an lwm prepare folder, an lwm data qa folder or a JSONL file`);
  if (fs.statSync(data).isDirectory()) {
    // An lwm data qa folder: its JSONL dataset, packed here like any JSONL file.
    const qa = path.join(data, QA_DATASET_FILE);
    if (fs.existsSync(qa) && !fs.existsSync(path.join(data, PREPARED_INFO_FILE))) return openTrainRows(qa, o);
    const rows = openPrepared(data);
    const inputs = rows.info.inputs as { batch_rows?: number };
    if (rows.seqLen !== o.seqLen) {
      throw new ConfigError(`${data} was packed at --seq-len ${rows.seqLen} but training uses ${o.seqLen}; rerun lwm prepare with --seq-len ${o.seqLen} or train at ${rows.seqLen}`);
    }
    return { source: rows, origin: data, packedBatchRows: inputs.batch_rows ?? 1, hasVision: rows.info.stats.visionTokens > 0 };
  }
  const source = path.basename(data);
  const records = parseJsonl(fs.readFileSync(data, 'utf8'), source);
  // Fields as lwm prepare decides them: --fields, else the line's own, else inferred from its keys.
  const examples = records.map((rec) =>
    processExample(rec, { tokenizer: o.tokenizer, fields: recordFields(rec.value, o.fields, `${source}:${rec.line}`), source, baseDir: path.dirname(path.resolve(data)) }),
  );
  if (examples.length === 0) throw new InputError(`${data}: no examples`);
  const packed = packDocuments(
    examples.map((e) => ({ tokens: e.tokens, visionMask: e.visionMask, lossMask: e.lossMask })),
    { seqLen: o.seqLen, weighting: o.weighting ?? { mode: 'lwm' }, batchRows: 1 },
  );
  return { source: packedRowSource(packed), origin: data, packedBatchRows: 1, hasVision: examples.some((e) => e.visionMask.some(Boolean)) };
}

/** Rows [start, end) of a source as a source (train/eval split without copying). */
export function rowRange(src: RowSource, start: number, end: number): RowSource {
  if (!(start >= 0 && end <= src.rows && start < end)) throw new InputError(`row range [${start}, ${end}) is empty or outside ${src.rows} rows`);
  return {
    rows: end - start,
    seqLen: src.seqLen,
    row: (i: number): PackedRow => src.row(start + i),
  };
}
