/**
 * SentencePiece-style BPE (the LLaMA tokenizer): merge-rank BPE over the code points of a
 * space-normalized text, byte fallback for characters outside the vocabulary, and the matching
 * decoder. Shared by the built-in LLaMA-2 vocabulary and by Hugging Face tokenizer.json files.
 */
import { InputError } from '../ops/errors.js';

/** Merge table keyed by the packed pair `left * stride + right`, so lookups never build strings. */
export class BpeMerges {
  private readonly rankByPair = new Map<number, number>();
  private readonly mergedByRank: number[] = [];

  constructor(private readonly stride: number) {}

  /** Later duplicates of a pair are ignored: the first (highest-priority) rank wins. */
  add(left: number, right: number, merged: number): void {
    const key = left * this.stride + right;
    if (this.rankByPair.has(key)) return;
    this.rankByPair.set(key, this.mergedByRank.length);
    this.mergedByRank.push(merged);
  }

  rank(left: number, right: number): number | undefined {
    return this.rankByPair.get(left * this.stride + right);
  }

  merged(rank: number): number {
    return this.mergedByRank[rank] as number;
  }
}

/** Binary min-heap of plain numbers; entries pack (rank, position) so ties resolve leftmost-first. */
class MinHeap {
  private readonly items: number[] = [];

  get size(): number {
    return this.items.length;
  }

  push(value: number): void {
    const a = this.items;
    let i = a.length;
    a.push(value);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = a[parent] as number;
      if (p <= value) break;
      a[i] = p;
      i = parent;
    }
    a[i] = value;
  }

  pop(): number {
    const a = this.items;
    const top = a[0] as number;
    const last = a.pop() as number;
    const n = a.length;
    if (n === 0) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && (a[r] as number) < (a[l] as number) ? r : l;
      if ((a[c] as number) >= last) break;
      a[i] = a[c] as number;
      i = c;
    }
    a[i] = last;
    return top;
  }
}

/**
 * Applies merges lowest rank first, leftmost first among equal ranks (what both SentencePiece and
 * HF tokenizers do). Stale heap entries are detected by re-checking the pair's current rank, which
 * is unique per pair, instead of tracking invalidation explicitly.
 */
export function bpeMerge(symbols: readonly number[], merges: BpeMerges): number[] {
  const n = symbols.length;
  if (n < 2) return symbols.slice();
  const id = Int32Array.from(symbols);
  const next = new Int32Array(n);
  const prev = new Int32Array(n);
  const heap = new MinHeap();
  const offer = (pos: number, right: number): void => {
    const rank = merges.rank(id[pos] as number, id[right] as number);
    if (rank !== undefined) heap.push(rank * n + pos);
  };
  for (let i = 0; i < n; i++) {
    next[i] = i + 1 < n ? i + 1 : -1;
    prev[i] = i - 1;
  }
  for (let i = 0; i + 1 < n; i++) offer(i, i + 1);
  while (heap.size > 0) {
    const key = heap.pop();
    const pos = key % n;
    const rank = (key - pos) / n;
    const right = next[pos] as number;
    if (id[pos] === -1 || right < 0) continue;
    if (merges.rank(id[pos] as number, id[right] as number) !== rank) continue;
    id[pos] = merges.merged(rank);
    const after = next[right] as number;
    next[pos] = after;
    if (after >= 0) prev[after] = pos;
    id[right] = -1;
    const before = prev[pos] as number;
    if (before >= 0) offer(before, pos);
    if (after >= 0) offer(pos, after);
  }
  const out: number[] = [];
  for (let i = 0; i >= 0; i = next[i] as number) out.push(id[i] as number);
  return out;
}

export interface AddedToken {
  readonly content: string;
  readonly id: number;
  /** Special tokens are dropped by `decode` with skipSpecial. */
  readonly special: boolean;
  /** Swallow whitespace on that side of the token (HF AddedToken semantics). */
  readonly lstrip: boolean;
  readonly rstrip: boolean;
}

/** When a text segment gets the dummy-prefix meta symbol. */
export type PrefixScheme = 'always' | 'first' | 'never';

export interface SpmSpec {
  readonly pieces: readonly string[];
  readonly merges: BpeMerges;
  /** -1 when the vocabulary has no unknown token. */
  readonly unkId: number;
  readonly added: readonly AddedToken[];
  readonly meta: string;
  readonly prefix: PrefixScheme;
  /**
   * SentencePiece and HF's Prepend normalizer add the prefix even when the text already starts with
   * a space; HF's Metaspace pre-tokenizer does not (so " Hi" and "Hi" encode alike there).
   */
  readonly prefixEvenIfSpace: boolean;
  /** HF Metaspace `split: true`: BPE runs separately on each meta-initial word. */
  readonly splitOnMeta: boolean;
  readonly byteFallback: boolean;
  readonly fuseUnk: boolean;
  /** HF `ignore_merges`: a word that is itself in the vocabulary is taken whole. */
  readonly ignoreMerges: boolean;
}

const enum Kind {
  Text = 0,
  Byte = 1,
  Special = 2,
  Added = 3,
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/** Mutable per-decode state, so one-shot and streaming decoding share the exact same rules. */
export interface DecodeState {
  /** The next text piece may carry a dummy-prefix space that is not part of the text. */
  atSegmentStart: boolean;
}

const EMPTY = new Uint8Array(0);
const SINGLE_BYTES = Array.from({ length: 256 }, (_, b) => Uint8Array.of(b));

export class SpmCodec {
  readonly vocabSize: number;
  private readonly pieceToId = new Map<string, number>();
  private readonly kind: Uint8Array;
  private readonly byteId = new Int32Array(256).fill(-1);
  private readonly byteOf: Int16Array;
  private readonly symbolCache = new Map<string, readonly number[]>();
  private readonly pieceBytes: (Uint8Array | undefined)[] = [];
  private readonly strippedBytes: (Uint8Array | undefined)[] = [];
  private readonly addedPattern: RegExp | undefined;
  private readonly addedByContent = new Map<string, AddedToken>();
  private readonly utf8 = new TextEncoder();

  constructor(private readonly spec: SpmSpec) {
    this.vocabSize = spec.pieces.length;
    this.kind = new Uint8Array(this.vocabSize);
    this.byteOf = new Int16Array(this.vocabSize).fill(-1);
    spec.pieces.forEach((piece, id) => {
      if (!this.pieceToId.has(piece)) this.pieceToId.set(piece, id);
      const m = BYTE_PIECE.exec(piece);
      if (m) {
        this.kind[id] = Kind.Byte;
        const b = parseInt(m[1] as string, 16);
        this.byteOf[id] = b;
        if (this.byteId[b] === -1) this.byteId[b] = id;
      }
    });
    for (const t of spec.added) {
      this.kind[t.id] = t.special ? Kind.Special : Kind.Added;
      this.addedByContent.set(t.content, t);
    }
    this.addedPattern = buildAlternation(spec.added.map((t) => t.content));
  }

  piece(id: number): string {
    this.checkId(id);
    return this.spec.pieces[id] as string;
  }

  encode(text: string): number[] {
    const out: number[] = [];
    const parts = this.splitAdded(text);
    parts.forEach((part, i) => {
      if (typeof part === 'number') out.push(part);
      else if (part.length > 0) this.encodeSegment(part, i === 0, out);
    });
    return out;
  }

  decode(ids: readonly number[], skipSpecial: boolean): string {
    const state = this.initialDecodeState();
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (const id of ids) {
      const b = this.bytesFor(id, state, skipSpecial);
      chunks.push(b);
      total += b.length;
    }
    const all = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      all.set(c, at);
      at += c.length;
    }
    return new TextDecoder('utf-8').decode(all);
  }

  initialDecodeState(): DecodeState {
    return { atSegmentStart: this.spec.prefix !== 'never' };
  }

  /** The UTF-8 bytes token `id` contributes to the output, given (and advancing) the state. */
  bytesFor(id: number, state: DecodeState, skipSpecial: boolean): Uint8Array {
    this.checkId(id);
    const kind = this.kind[id] as Kind;
    if (kind === Kind.Special || kind === Kind.Added) {
      // Encoding restarts the dummy prefix after every added token only under 'always'.
      state.atSegmentStart = this.spec.prefix === 'always';
      if (kind === Kind.Special && skipSpecial) return EMPTY;
      return this.cachedBytes(this.pieceBytes, id, () => this.utf8.encode(this.spec.pieces[id]));
    }
    const strip = state.atSegmentStart;
    state.atSegmentStart = false;
    if (kind === Kind.Byte) {
      return SINGLE_BYTES[this.byteOf[id] as number] as Uint8Array;
    }
    const piece = this.spec.pieces[id] as string;
    if (strip && piece.startsWith(this.spec.meta)) {
      return this.cachedBytes(this.strippedBytes, id, () => this.textBytes(piece.slice(this.spec.meta.length)));
    }
    return this.cachedBytes(this.pieceBytes, id, () => this.textBytes(piece));
  }

  private checkId(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new InputError(
        `token id ${id} is outside the vocabulary (ids 0..${this.vocabSize - 1}, vocabulary size ${this.vocabSize}); ` +
          'ids at or above the vocabulary size (e.g. vision codes) must be removed before decoding text',
      );
    }
  }

  private cachedBytes(cache: (Uint8Array | undefined)[], id: number, make: () => Uint8Array): Uint8Array {
    let b = cache[id];
    if (b === undefined) {
      b = make();
      cache[id] = b;
    }
    return b;
  }

  private textBytes(piece: string): Uint8Array {
    return this.utf8.encode(piece.replaceAll(this.spec.meta, ' '));
  }

  /** Text pieces and added-token ids, in order; whitespace swallowed per lstrip/rstrip. */
  private splitAdded(text: string): (string | number)[] {
    if (this.addedPattern === undefined) return [text];
    const parts: (string | number)[] = [];
    let last = 0;
    let stripNext = false;
    for (const m of text.matchAll(this.addedPattern)) {
      const token = this.addedByContent.get(m[0]) as AddedToken;
      let before = text.slice(last, m.index);
      if (stripNext) before = before.trimStart();
      if (token.lstrip) before = before.trimEnd();
      parts.push(before, token.id);
      stripNext = token.rstrip;
      last = m.index + m[0].length;
    }
    const tail = text.slice(last);
    parts.push(stripNext ? tail.trimStart() : tail);
    return parts;
  }

  private encodeSegment(segment: string, isFirst: boolean, out: number[]): void {
    const { meta, prefix } = this.spec;
    let normalized = segment.replaceAll(' ', meta);
    const wantsPrefix = prefix === 'always' || (prefix === 'first' && isFirst);
    if (wantsPrefix && (this.spec.prefixEvenIfSpace || !normalized.startsWith(meta))) normalized = meta + normalized;
    for (const word of this.spec.splitOnMeta ? splitBeforeMeta(normalized, meta) : [normalized]) {
      this.encodeWord(word, out);
    }
  }

  private encodeWord(word: string, out: number[]): void {
    if (this.spec.ignoreMerges) {
      const whole = this.pieceToId.get(word);
      if (whole !== undefined) {
        out.push(whole);
        return;
      }
    }
    const symbols: number[] = [];
    for (const ch of word) {
      for (const id of this.symbolsOf(ch)) {
        if (id === this.spec.unkId && this.spec.fuseUnk && symbols[symbols.length - 1] === id) continue;
        symbols.push(id);
      }
    }
    for (const id of bpeMerge(symbols, this.spec.merges)) out.push(id);
  }

  private symbolsOf(ch: string): readonly number[] {
    let ids = this.symbolCache.get(ch);
    if (ids === undefined) {
      ids = this.lookupChar(ch);
      this.symbolCache.set(ch, ids);
    }
    return ids;
  }

  private lookupChar(ch: string): readonly number[] {
    const id = this.pieceToId.get(ch);
    if (id !== undefined) return [id];
    if (this.spec.byteFallback) {
      const ids = Array.from(this.utf8.encode(ch), (b) => this.byteId[b] as number);
      if (ids.every((b) => b >= 0)) return ids;
    }
    return this.spec.unkId >= 0 ? [this.spec.unkId] : [];
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Longest alternatives first, so at any position the longest added token wins (HF behaviour). */
function buildAlternation(literals: readonly string[]): RegExp | undefined {
  const uniq = [...new Set(literals.filter((s) => s.length > 0))].sort((a, b) => b.length - a.length);
  if (uniq.length === 0) return undefined;
  return new RegExp(uniq.map(escapeRegExp).join('|'), 'gu');
}

/** HF Metaspace split (MergedWithNext): every meta symbol starts a new word. */
function splitBeforeMeta(s: string, meta: string): string[] {
  const words: string[] = [];
  let start = 0;
  for (let i = s.indexOf(meta, 1); i > 0; i = s.indexOf(meta, i + meta.length)) {
    words.push(s.slice(start, i));
    start = i;
  }
  words.push(s.slice(start));
  return words.filter((w) => w.length > 0);
}
