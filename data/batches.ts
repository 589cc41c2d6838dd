/**
 * Batches of packed rows for training: a seeded per-epoch shuffle, optional dropLast, an optional
 * sequence-parallel (RingAttention) shard per rank, and a small JSON state for exact resume.
 *
 * Order: epoch e visits the source rows in a Fisher-Yates permutation drawn from mulberry32(seed + e)
 * (identity when shuffle is off); batches take `batchSize` consecutive rows of it. The iterator runs
 * forever, moving to the next epoch when the rows run out (with dropLast, a tail shorter than batchSize
 * is skipped; without, it is returned as a smaller batch: check `batch.rows`).
 *
 * Ring: every field indexed by sequence (ids, targets, vision masks, segment ids, positions, loss mask,
 * loss weights) is gathered with the same `layoutIndices` permutation (spec 5.4), so positions and segment
 * ids travel with their tokens; `globalIndices` says which column of the full row each local token is.
 * The order of rows does not depend on the rank, so every rank of a ring sees the same rows.
 *
 * Loss weights are copied as packed. 'lwm' / 'lwm-text' weights are per row (scaled 1/batchRows), so pack
 * with batchRows = batchSize and any batch of full size sums correctly; 'token' weights are normalised over
 * packing groups, which a shuffle mixes: recompute them per batch (computeLossWeights) if that matters.
 * With a ring, each rank holds its columns of the full-row weights; the ranks' losses add up to the row's.
 */
import { ConfigError, InputError } from '../ops/errors.js';
import { checkLayout, layoutIndices, layoutUnit, type RingLayout } from '../ops/ring/layout.js';
import type { PackedRows } from './packing.js';

/** One row of a packed set, each field `seqLen` long. */
export type PackedRow = Pick<PackedRows, RowField>;

/** Random access to packed rows (in memory now; a file-backed source can implement the same). */
export interface RowSource {
  readonly rows: number;
  readonly seqLen: number;
  row(i: number): PackedRow;
}

const INT_FIELDS = ['inputTokens', 'targetTokens', 'segmentIds', 'positions'] as const;
const U8_FIELDS = ['inputVisionMask', 'targetVisionMask'] as const;
const F32_FIELDS = ['lossMask', 'lossWeights'] as const;
export const ROW_FIELDS = [...INT_FIELDS, ...U8_FIELDS, ...F32_FIELDS] as const;
export type RowField = (typeof ROW_FIELDS)[number];

/** A RowSource over PackedRows in memory (rows are views, not copies). */
export function packedRowSource(p: PackedRows): RowSource {
  const L = p.seqLen;
  return {
    rows: p.rows,
    seqLen: L,
    row(i: number): PackedRow {
      if (!Number.isInteger(i) || i < 0 || i >= p.rows) throw new InputError(`row ${i} is out of range for ${p.rows} packed rows`);
      const a = i * L;
      const b = a + L;
      return {
        inputTokens: p.inputTokens.subarray(a, b),
        targetTokens: p.targetTokens.subarray(a, b),
        inputVisionMask: p.inputVisionMask.subarray(a, b),
        targetVisionMask: p.targetVisionMask.subarray(a, b),
        segmentIds: p.segmentIds.subarray(a, b),
        positions: p.positions.subarray(a, b),
        lossMask: p.lossMask.subarray(a, b),
        lossWeights: p.lossWeights.subarray(a, b),
      };
    },
  };
}

export interface RingShard {
  size: number;
  rank: number;
  layout: RingLayout;
}

export interface BatchOptions {
  batchSize: number;
  /** Shuffle seed (integer); epoch e uses seed + e. Default 0. */
  seed?: number;
  /** Default true; false visits rows in source order every epoch. */
  shuffle?: boolean;
  /** Skip the tail of an epoch shorter than batchSize. Default false. */
  dropLast?: boolean;
  /** This rank's share of each row under a RingAttention layout. */
  ring?: RingShard;
}

/** Row-major [rows, length] arrays, plus where they came from. */
export interface Batch extends PackedRow {
  /** Rows in this batch (batchSize, or fewer for an epoch's tail without dropLast). */
  rows: number;
  /** Tokens per row here: seqLen, or seqLen / ring.size. */
  length: number;
  /** Source row of each batch row. */
  rowIndices: Int32Array;
  /** Column in the full row of each local token (0..seqLen-1 without ring). */
  globalIndices: Int32Array;
  epoch: number;
  /** Batch index within the epoch. */
  epochStep: number;
  /** Batch index since the start of training. */
  step: number;
}

/** JSON-serialisable iterator position; store it in a training checkpoint. */
export interface BatchState {
  version: 1;
  /** Epoch of the next batch. */
  epoch: number;
  /** Position in that epoch's permutation of the next batch's first row. */
  cursor: number;
  /** Batches returned so far. */
  step: number;
  seed: number;
  shuffle: boolean;
  dropLast: boolean;
  batchSize: number;
  rows: number;
  seqLen: number;
  /** Ring size and layout (not rank: every rank sees the same rows); null without ring. */
  ring: { size: number; layout: RingLayout } | null;
}

/** mulberry32: a small, fast 32-bit PRNG; floats in [0, 1). Deterministic for a seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The order epoch `epoch` visits `n` rows in: seeded Fisher-Yates, or identity when not shuffling. */
export function epochPermutation(n: number, seed: number, epoch: number, shuffle = true): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  if (!shuffle) return p;
  const rand = mulberry32((seed + epoch) >>> 0);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = p[i] as number;
    p[i] = p[j] as number;
    p[j] = t;
  }
  return p;
}

interface Resolved {
  batchSize: number;
  seed: number;
  shuffle: boolean;
  dropLast: boolean;
  ring: RingShard | null;
}

function resolve(source: RowSource, opts: BatchOptions): Resolved {
  const { batchSize } = opts;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ConfigError(`batchSize must be a positive integer, got ${batchSize}`);
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed)) throw new ConfigError(`shuffle seed must be an integer, got ${seed}`);
  const shuffle = opts.shuffle ?? true;
  const dropLast = opts.dropLast ?? false;
  const { rows, seqLen } = source;
  if (!Number.isInteger(seqLen) || seqLen < 1) throw new InputError(`row length must be a positive integer, got ${seqLen}`);
  if (!Number.isInteger(rows) || rows < 1) throw new InputError(`the row source has ${rows} rows; pack at least one document`);
  if (dropLast && rows < batchSize) {
    throw new ConfigError(`dropLast with batchSize ${batchSize} and only ${rows} rows gives no batch; lower batchSize or turn dropLast off`);
  }
  let ring: RingShard | null = null;
  if (opts.ring) {
    const { size, rank } = opts.ring;
    const layout = checkLayout(opts.ring.layout);
    if (!Number.isInteger(size) || size < 1) throw new ConfigError(`ring size must be a positive integer, got ${size}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw new ConfigError(`ring rank ${rank} is out of range for ring size ${size} (use 0..${size - 1})`);
    const unit = layoutUnit(size, layout);
    if (seqLen % unit !== 0) {
      throw new InputError(
        `seqLen ${seqLen} does not split over ${size} ranks with the ${layout} layout; pack with seqLen a multiple of ${unit} (e.g. ${Math.ceil(seqLen / unit) * unit})`,
      );
    }
    ring = { size, rank, layout };
  }
  return { batchSize, seed, shuffle, dropLast, ring };
}

export class BatchIterator {
  readonly source: RowSource;
  readonly batchSize: number;
  readonly seed: number;
  readonly shuffle: boolean;
  readonly dropLast: boolean;
  readonly ring: RingShard | null;
  /** Tokens per row in each batch. */
  readonly length: number;
  /** Columns of the full row this rank holds, in local order. */
  readonly globalIndices: Int32Array;
  private epoch = 0;
  private cursor = 0;
  private step = 0;
  private perm: Int32Array | null = null;
  private permEpoch = -1;

  constructor(source: RowSource, opts: BatchOptions) {
    const r = resolve(source, opts);
    this.source = source;
    this.batchSize = r.batchSize;
    this.seed = r.seed;
    this.shuffle = r.shuffle;
    this.dropLast = r.dropLast;
    this.ring = r.ring;
    const L = source.seqLen;
    if (r.ring) {
      this.globalIndices = layoutIndices(L, r.ring.size, r.ring.rank, r.ring.layout);
    } else {
      this.globalIndices = new Int32Array(L);
      for (let i = 0; i < L; i++) this.globalIndices[i] = i;
    }
    this.length = this.globalIndices.length;
  }

  /** Convenience: an iterator over PackedRows in memory. */
  static fromPacked(packed: PackedRows, opts: BatchOptions): BatchIterator {
    return new BatchIterator(packedRowSource(packed), opts);
  }

  /** Batches per epoch. */
  get stepsPerEpoch(): number {
    const n = this.source.rows;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** Continue from `state` (from state() of an iterator over the same source and options). */
  static resume(source: RowSource, opts: BatchOptions, state: BatchState): BatchIterator {
    const it = new BatchIterator(source, opts);
    const want = it.state();
    const s = state as Partial<BatchState> | null | undefined;
    if (!s || typeof s !== 'object' || s.version !== 1) throw new InputError(`batch iterator state is not a version-1 state object; pass the value state() returned`);
    const mismatch: string[] = [];
    for (const k of ['rows', 'seqLen', 'batchSize', 'seed', 'shuffle', 'dropLast'] as const) {
      if (s[k] !== want[k]) mismatch.push(`${k} ${String(s[k])} vs ${String(want[k])}`);
    }
    const ringKey = (x: BatchState['ring'] | undefined) => (x ? `${x.size}/${x.layout}` : 'none');
    if (ringKey(s.ring) !== ringKey(want.ring)) mismatch.push(`ring ${ringKey(s.ring)} vs ${ringKey(want.ring)}`);
    if (mismatch.length) {
      throw new InputError(`batch iterator state does not match this source/options (${mismatch.join(', ')}); resume with the same data and batch options`);
    }
    const { epoch, cursor, step } = s;
    const n = source.rows;
    const okInt = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
    if (!okInt(epoch) || !okInt(cursor) || !okInt(step) || cursor > n || (cursor % it.batchSize !== 0 && cursor !== n)) {
      throw new InputError(`batch iterator state has an invalid position (epoch ${epoch}, cursor ${cursor}, step ${step}) for ${n} rows; pass the value state() returned`);
    }
    it.epoch = epoch;
    it.cursor = cursor;
    it.step = step;
    return it;
  }

  /** The position of the next batch, JSON-serialisable. */
  state(): BatchState {
    return {
      version: 1,
      epoch: this.epoch,
      cursor: this.cursor,
      step: this.step,
      seed: this.seed,
      shuffle: this.shuffle,
      dropLast: this.dropLast,
      batchSize: this.batchSize,
      rows: this.source.rows,
      seqLen: this.source.seqLen,
      ring: this.ring ? { size: this.ring.size, layout: this.ring.layout } : null,
    };
  }

  private permutation(): Int32Array {
    if (this.permEpoch !== this.epoch || !this.perm) {
      this.perm = epochPermutation(this.source.rows, this.seed, this.epoch, this.shuffle);
      this.permEpoch = this.epoch;
    }
    return this.perm;
  }

  /** The next batch (the iterator never ends; watch `epoch`). */
  next(): Batch {
    const n = this.source.rows;
    const B = this.batchSize;
    // Move to the next epoch when this one is used up (or only a dropped tail is left).
    if (this.cursor >= n || (this.dropLast && n - this.cursor < B)) {
      this.epoch++;
      this.cursor = 0;
    }
    const perm = this.permutation();
    const rows = Math.min(B, n - this.cursor);
    const L = this.length;
    const g = this.globalIndices;
    const out = {
      inputTokens: new Int32Array(rows * L),
      targetTokens: new Int32Array(rows * L),
      inputVisionMask: new Uint8Array(rows * L),
      targetVisionMask: new Uint8Array(rows * L),
      segmentIds: new Int32Array(rows * L),
      positions: new Int32Array(rows * L),
      lossMask: new Float32Array(rows * L),
      lossWeights: new Float32Array(rows * L),
    };
    const rowIndices = new Int32Array(rows);
    for (let b = 0; b < rows; b++) {
      const src = perm[this.cursor + b] as number;
      rowIndices[b] = src;
      const row = this.source.row(src);
      for (const f of ROW_FIELDS) {
        const from = row[f];
        const to = out[f];
        if (from.length !== this.source.seqLen) throw new InputError(`row ${src} field ${f} has ${from.length} entries, expected seqLen ${this.source.seqLen}`);
        const o = b * L;
        for (let a = 0; a < L; a++) to[o + a] = from[g[a] as number] as number;
      }
    }
    const epochStep = Math.floor(this.cursor / B);
    const batch: Batch = { ...out, rows, length: L, rowIndices, globalIndices: g.slice(), epoch: this.epoch, epochStep, step: this.step };
    this.cursor += rows;
    this.step++;
    return batch;
  }
}
