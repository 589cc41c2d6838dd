/**
 * Masked sequence packing (the paper's; the released LWM code concatenates examples without segment ids,
 * spec 5.5 and pitfall 9).
 *
 * Documents (tokens, vision mask, 0/1 loss mask of each token) are placed whole into rows of `seqLen`
 * positions. Each placed piece is its own segment (ids 0, 1, … in row order; padding −1), its positions
 * restart at 0, and its labels are the next token of the same document: position t predicts token t+1
 * with the loss mask and vision mask **of that target token** (5.5); the last token of a document has no
 * target (target = padId, weight 0). Attention is meant to be causal within equal segment ids.
 *
 * Placement: first-fit-decreasing by default (pieces sorted by length, longest first, each put in the
 * lowest-numbered row with room; a max-capacity segment tree makes it O(n log n)). FFD is within 11/9 of the
 * optimal row count and in practice leaves almost no padding when short documents exist to fill gaps; it
 * reorders documents, which is harmless for training (rows are shuffled anyway) but needs the whole set in
 * memory. `strategy: 'greedy'` keeps corpus order (next-fit: open a new row when the piece does not fit).
 *
 * Documents longer than `seqLen` are rejected, or (default) split into consecutive chunks of `seqLen`
 * tokens (the tail chunk shorter). Each chunk is a separate segment with positions from 0; the target of a
 * chunk's last position is the first token of the next chunk (taken from the document), so no training pair
 * is lost; only the document's last token has weight 0.
 */
import { InputError } from '../ops/errors.js';

export interface PackDocument {
  tokens: ArrayLike<number>;
  /** Per token: vision-vocabulary id? Default all false (text). */
  visionMask?: ArrayLike<boolean | number>;
  /** Per token 0/1 (>0 = trained when it is a target). Default all 1. */
  lossMask?: ArrayLike<number>;
}

/**
 * How per-token loss weights are computed; weights are normalised over groups of `batchRows` consecutive
 * rows so that a group's loss is Σ weight·CE(target):
 * * `lwm`: LWM's vision-text loss (5.6): per row, vision targets share 0.5/B and text targets 0.5/B
 *   (B = rows in the group); a row without vision (or text) targets contributes 0 to that half.
 * * `lwm-text`: LWM's text-modality loss: per row, all valid targets share 1/B.
 * * `token`: per-token mean over the group, vision targets weighted `visionWeight` (default 1), text 1.
 * * `mask`: the raw 0/1 mask (no normalisation).
 */
export type LossWeighting =
  | { mode: 'lwm' }
  | { mode: 'lwm-text' }
  | { mode: 'token'; visionWeight?: number }
  | { mode: 'mask' };

export interface PackOptions {
  seqLen: number;
  /** Default 'ffd' (first-fit-decreasing). */
  strategy?: 'ffd' | 'greedy';
  /** Default 'split'. */
  overlong?: 'split' | 'reject';
  /** Default { mode: 'lwm' }. */
  weighting?: LossWeighting;
  /** Rows per normalisation group (one optimizer batch). Default: all rows. */
  batchRows?: number;
  /** Input/target id at padding and the target id after a document's last token. Default 0 (LWM pad id). */
  padId?: number;
}

/** Where a piece of a document went. */
export interface Placement {
  doc: number;
  /** First token of the piece within the document. */
  docStart: number;
  length: number;
  row: number;
  /** Column of the piece's first token in the row. */
  rowStart: number;
  /** Segment id in the row. */
  segment: number;
}

/** Row-major [rows, seqLen] arrays. */
export interface PackedRows {
  rows: number;
  seqLen: number;
  inputTokens: Int32Array;
  targetTokens: Int32Array;
  inputVisionMask: Uint8Array;
  targetVisionMask: Uint8Array;
  /** Piece index within the row; −1 for padding. */
  segmentIds: Int32Array;
  /** Position within the piece (0 at each piece start); 0 at padding. */
  positions: Int32Array;
  /** 0/1: the target exists (same document) and its loss mask is > 0. */
  lossMask: Float32Array;
  lossWeights: Float32Array;
  /** Per row, the pieces in column order. */
  placements: Placement[][];
  /** Document tokens placed (Σ lengths). */
  tokens: number;
  paddingTokens: number;
  /** paddingTokens / (rows·seqLen). */
  paddingWaste: number;
}

interface Piece {
  doc: number;
  start: number;
  length: number;
}

function checkDoc(d: PackDocument, i: number): void {
  const n = d.tokens.length;
  if (d.visionMask && d.visionMask.length !== n) throw new InputError(`document ${i}: ${d.visionMask.length} vision-mask entries for ${n} tokens`);
  if (d.lossMask && d.lossMask.length !== n) throw new InputError(`document ${i}: ${d.lossMask.length} loss-mask entries for ${n} tokens`);
}

/** Split documents into pieces of at most seqLen (or refuse overlong ones). */
function toPieces(docs: readonly PackDocument[], seqLen: number, overlong: 'split' | 'reject'): Piece[] {
  const pieces: Piece[] = [];
  docs.forEach((d, i) => {
    checkDoc(d, i);
    const n = d.tokens.length;
    if (n > seqLen && overlong === 'reject') {
      throw new InputError(`document ${i} has ${n} tokens, more than the row length ${seqLen}; shorten it or allow splitting`);
    }
    for (let s = 0; s < n; s += seqLen) pieces.push({ doc: i, start: s, length: Math.min(seqLen, n - s) });
  });
  return pieces;
}

/** First-fit-decreasing: returns, per piece, its row; rows numbered in opening order. */
function firstFitDecreasing(pieces: readonly Piece[], seqLen: number): { rowOf: number[]; order: number[]; rows: number } {
  const order = pieces.map((_, i) => i).sort((a, b) => (pieces[b] as Piece).length - (pieces[a] as Piece).length || a - b);
  let size = 1;
  while (size < Math.max(1, pieces.length)) size *= 2;
  const tree = new Int32Array(2 * size).fill(seqLen); // max remaining capacity of each subtree
  const rowOf = new Array<number>(pieces.length).fill(-1);
  let rows = 0;
  for (const p of order) {
    const len = (pieces[p] as Piece).length;
    let node = 1;
    while (node < size) node = (tree[2 * node] as number) >= len ? 2 * node : 2 * node + 1;
    const row = node - size;
    rowOf[p] = row;
    rows = Math.max(rows, row + 1);
    tree[node] = (tree[node] as number) - len;
    for (node >>= 1; node >= 1; node >>= 1) tree[node] = Math.max(tree[2 * node] as number, tree[2 * node + 1] as number);
  }
  return { rowOf, order, rows };
}

/** Next-fit in corpus order. */
function greedy(pieces: readonly Piece[], seqLen: number): { rowOf: number[]; order: number[]; rows: number } {
  const rowOf: number[] = [];
  let row = -1;
  let free = 0;
  for (const p of pieces) {
    if (p.length > free) {
      row++;
      free = seqLen;
    }
    rowOf.push(row);
    free -= p.length;
  }
  return { rowOf, order: pieces.map((_, i) => i), rows: row + 1 };
}

/** Pack documents into rows of `seqLen` with segment ids, per-segment positions and loss weights. */
export function packDocuments(docs: readonly PackDocument[], opts: PackOptions): PackedRows {
  const L = opts.seqLen;
  if (!Number.isInteger(L) || L < 1) throw new InputError(`seqLen must be a positive integer, got ${L}`);
  const padId = opts.padId ?? 0;
  const pieces = toPieces(docs, L, opts.overlong ?? 'split');
  const strategy = opts.strategy ?? 'ffd';
  if (strategy !== 'ffd' && strategy !== 'greedy') throw new InputError(`unknown packing strategy "${String(strategy)}"; use ffd or greedy`);
  const { rowOf, order, rows } = strategy === 'ffd' ? firstFitDecreasing(pieces, L) : greedy(pieces, L);

  const placements: Placement[][] = Array.from({ length: rows }, () => []);
  const used = new Int32Array(rows);
  for (const p of order) {
    const piece = pieces[p] as Piece;
    const row = rowOf[p] as number;
    const list = placements[row] as Placement[];
    list.push({ doc: piece.doc, docStart: piece.start, length: piece.length, row, rowStart: used[row] as number, segment: list.length });
    used[row] = (used[row] as number) + piece.length;
  }

  const total = rows * L;
  const inputTokens = new Int32Array(total).fill(padId);
  const targetTokens = new Int32Array(total).fill(padId);
  const inputVisionMask = new Uint8Array(total);
  const targetVisionMask = new Uint8Array(total);
  const segmentIds = new Int32Array(total).fill(-1);
  const positions = new Int32Array(total);
  const lossMask = new Float32Array(total);
  let tokens = 0;
  for (const list of placements) {
    for (const pl of list) {
      const d = docs[pl.doc] as PackDocument;
      const n = d.tokens.length;
      for (let k = 0; k < pl.length; k++) {
        const t = pl.docStart + k;
        const o = pl.row * L + pl.rowStart + k;
        inputTokens[o] = d.tokens[t] as number;
        inputVisionMask[o] = d.visionMask && d.visionMask[t] ? 1 : 0;
        segmentIds[o] = pl.segment;
        positions[o] = k;
        if (t + 1 < n) {
          targetTokens[o] = d.tokens[t + 1] as number;
          targetVisionMask[o] = d.visionMask && d.visionMask[t + 1] ? 1 : 0;
          lossMask[o] = d.lossMask ? ((d.lossMask[t + 1] as number) > 0 ? 1 : 0) : 1;
        }
      }
      tokens += pl.length;
    }
  }
  const lossWeights = computeLossWeights(
    { rows, seqLen: L, lossMask, targetVisionMask },
    opts.weighting ?? { mode: 'lwm' },
    opts.batchRows ?? Math.max(rows, 1),
  );
  const paddingTokens = total - tokens;
  return {
    rows,
    seqLen: L,
    inputTokens,
    targetTokens,
    inputVisionMask,
    targetVisionMask,
    segmentIds,
    positions,
    lossMask,
    lossWeights,
    placements,
    tokens,
    paddingTokens,
    paddingWaste: total === 0 ? 0 : paddingTokens / total,
  };
}

/** Loss weights for [rows, seqLen] masks (see LossWeighting), normalised per group of `batchRows` rows. */
export function computeLossWeights(
  m: { rows: number; seqLen: number; lossMask: ArrayLike<number>; targetVisionMask: ArrayLike<number | boolean> },
  weighting: LossWeighting,
  batchRows: number,
): Float32Array {
  const { rows, seqLen: L } = m;
  if (!Number.isInteger(batchRows) || batchRows < 1) throw new InputError(`batchRows must be a positive integer, got ${batchRows}`);
  const w = new Float32Array(rows * L);
  const valid = (o: number): boolean => (m.lossMask[o] as number) > 0;
  const vis = (o: number): boolean => Boolean(m.targetVisionMask[o]);
  for (let g = 0; g < rows; g += batchRows) {
    const end = Math.min(rows, g + batchRows);
    const B = end - g;
    if (weighting.mode === 'token') {
      const vw = weighting.visionWeight ?? 1;
      if (!(vw >= 0) || !Number.isFinite(vw)) throw new InputError(`visionWeight must be a finite number >= 0, got ${vw}`);
      let sum = 0;
      for (let o = g * L; o < end * L; o++) if (valid(o)) sum += vis(o) ? vw : 1;
      if (sum > 0) for (let o = g * L; o < end * L; o++) if (valid(o)) w[o] = (vis(o) ? vw : 1) / sum;
      continue;
    }
    for (let r = g; r < end; r++) {
      let nv = 0;
      let nt = 0;
      for (let o = r * L; o < (r + 1) * L; o++) if (valid(o)) vis(o) ? nv++ : nt++;
      for (let o = r * L; o < (r + 1) * L; o++) {
        if (!valid(o)) continue;
        if (weighting.mode === 'mask') w[o] = 1;
        else if (weighting.mode === 'lwm-text') w[o] = 1 / (B * (nv + nt));
        else if (weighting.mode === 'lwm') w[o] = vis(o) ? 0.5 / (B * nv) : 0.5 / (B * nt);
        else throw new InputError(`unknown loss weighting "${String((weighting as { mode: unknown }).mode)}"`);
      }
    }
  }
  return w;
}
