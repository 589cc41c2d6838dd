// Which global tokens each rank of a ring holds (spec section 5). Causal attention over a
// contiguous split leaves rank 0 idle while the last rank works; zigzag and striped give every
// rank the same share of the triangle.
import { InputError } from '../errors.js';

export type RingLayout = 'contiguous' | 'zigzag' | 'striped';
export const RING_LAYOUTS: readonly RingLayout[] = ['contiguous', 'zigzag', 'striped'];

export function checkLayout(layout: string): RingLayout {
  if (!(RING_LAYOUTS as readonly string[]).includes(layout)) {
    throw new InputError(`ring layout '${layout}' is not one of ${RING_LAYOUTS.join(', ')}`);
  }
  return layout as RingLayout;
}

/** The unit a global length must be a multiple of: 2·size for zigzag (two chunks per rank), else size. */
export function layoutUnit(size: number, layout: RingLayout): number {
  return layout === 'zigzag' ? 2 * size : size;
}

/** The smallest length >= seqLen that splits evenly over `size` ranks; pad the tail up to it. */
export function paddedLength(seqLen: number, size: number, layout: RingLayout): number {
  const unit = layoutUnit(size, layout);
  return Math.ceil(seqLen / unit) * unit;
}

/**
 * Global index of every local token of `rank` when a sequence of `seqLen` tokens (a multiple of
 * layoutUnit) is split over `size` ranks. Local order is increasing in global index for every
 * layout, so a local causal mask is the global one on the diagonal block.
 */
export function layoutIndices(seqLen: number, size: number, rank: number, layout: RingLayout): Int32Array {
  checkLayout(layout);
  if (!Number.isInteger(size) || size < 1 || !Number.isInteger(rank) || rank < 0 || rank >= size) {
    throw new InputError(`ring rank ${rank} of size ${size} is out of range`);
  }
  const unit = layoutUnit(size, layout);
  if (!Number.isInteger(seqLen) || seqLen <= 0 || seqLen % unit !== 0) {
    throw new InputError(`a sequence of ${seqLen} tokens does not split over ${size} ranks with the ${layout} layout; pad it to a multiple of ${unit} (paddedLength)`);
  }
  const c = seqLen / size;
  const out = new Int32Array(c);
  for (let a = 0; a < c; a++) {
    if (layout === 'contiguous') out[a] = rank * c + a;
    else if (layout === 'striped') out[a] = a * size + rank;
    else {
      const half = c / 2;
      out[a] = a < half ? rank * half + a : (2 * size - 1 - rank) * half + (a - half);
    }
  }
  return out;
}

/** Inverse view: for each global index, [rank, local index]. */
export function layoutOwners(seqLen: number, size: number, layout: RingLayout): { rank: Int32Array; local: Int32Array } {
  const rank = new Int32Array(seqLen);
  const local = new Int32Array(seqLen);
  for (let r = 0; r < size; r++) {
    layoutIndices(seqLen, size, r, layout).forEach((g, a) => {
      rank[g] = r;
      local[g] = a;
    });
  }
  return { rank, local };
}
