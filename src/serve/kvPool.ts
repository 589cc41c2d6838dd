import type { TokenSegment } from '../../data/index.js';
import { KVCache } from '../../models/index.js';
import { commonPrefix } from '../chat/promptCache.js';

interface Entry {
  cache: KVCache;
  tokens: TokenSegment;
  used: number;
}

/**
 * KV caches of recent requests, so a request that starts like an earlier one (the next turn of
 * a chat, another question about the same document) runs only its new tokens, as llama.cpp's
 * server slots do. A request takes the entry sharing its longest start (exclusively) and gives
 * its cache back when done; beyond `slots` entries the least recently used is freed.
 */
export class KvPool {
  private entries: Entry[] = [];
  private clock = 0;

  constructor(
    readonly numLayers: number,
    readonly slots: number,
    /** Makes an empty cache (the model's KV dtype and preallocation); default an f32 KVCache. */
    private readonly make?: () => KVCache,
  ) {}

  /** A cache holding the longest reusable start of `prompt` (at least its last token still to run). */
  take(prompt: TokenSegment): { cache: KVCache; reused: number } {
    let best: Entry | null = null;
    let bestLen = 0;
    for (const e of this.entries) {
      const n = Math.min(commonPrefix(e.tokens, prompt), prompt.tokens.length - 1);
      if (n > bestLen) [best, bestLen] = [e, n];
    }
    if (!best) return { cache: this.make ? this.make() : new KVCache(this.numLayers), reused: 0 };
    this.entries = this.entries.filter((e) => e !== best);
    best.cache.truncate(bestLen);
    return { cache: best.cache, reused: bestLen };
  }

  /** Returns a cache with the tokens it holds (its first cache.length tokens of `tokens`). */
  give(cache: KVCache, tokens: TokenSegment): void {
    if (this.slots === 0 || cache.length === 0) {
      cache.dispose();
      return;
    }
    const n = cache.length;
    this.entries.push({ cache, tokens: { tokens: tokens.tokens.slice(0, n), visionMask: tokens.visionMask.slice(0, n) }, used: ++this.clock });
    while (this.entries.length > this.slots) {
      const oldest = this.entries.reduce((a, b) => (a.used <= b.used ? a : b));
      oldest.cache.dispose();
      this.entries = this.entries.filter((e) => e !== oldest);
    }
  }

  get size(): number {
    return this.entries.length;
  }

  dispose(): void {
    for (const e of this.entries) e.cache.dispose();
    this.entries = [];
  }
}
