import { describe, it, expect } from '@jest/globals';
import { InputError } from '../../ops/errors.js';
import {
  EOF_TOKEN,
  EOV_TOKEN,
  VISION_CLOSE_TEXT_IDS,
  VISION_OPEN_TEXT_IDS,
  flattenVisionCodes,
  imageTokens,
  layoutTokens,
  selectFrames,
  videoTokens,
  visionSegment,
  visionSegmentLength,
} from '../../data/visionTokens.js';
import { defaultTokenizer } from '../../data/tokenizer.js';

/** Deterministic frame of 256 codes in [0, 8192). */
function frame(seed: number): number[] {
  return Array.from({ length: 256 }, (_, i) => (seed * 977 + i * 31) % 8192);
}
function grid(flat: number[]): number[][] {
  return Array.from({ length: 16 }, (_, r) => flat.slice(r * 16, r * 16 + 16));
}

describe('LWM vision token layout (spec 3.5, checklist 9)', () => {
  it('a 2-frame clip is <vision> + c0 + 8192 + c1 + 8193 + </vision>: 520 tokens', () => {
    const c0 = frame(1);
    const c1 = frame(2);
    const seg = visionSegment([...c0, ...c1]);
    expect(seg.tokens).toEqual([529, 4924, 29958, ...c0, 8192, ...c1, 8193, 1533, 4924, 29958]);
    expect(seg.tokens.length).toBe(520);
    expect(seg.tokens[3 + 256]).toBe(EOF_TOKEN);
    expect(seg.tokens[3 + 513]).toBe(EOV_TOKEN);
    expect(seg.visionMask).toEqual([false, false, false, ...new Array<boolean>(514).fill(true), false, false, false]);
    // [T,16,16] input gives the same layout as the flat row-major list
    expect(visionSegment([grid(c0), grid(c1)])).toEqual(seg);
    expect(visionSegmentLength(2)).toBe(520);
  });

  it('an image is a 1-frame video: 263 tokens, marker 8193 at index 259', () => {
    const c = frame(7);
    const seg = imageTokens('', c);
    expect(seg.tokens.length).toBe(263);
    expect(seg.tokens.slice(0, 3)).toEqual([...VISION_OPEN_TEXT_IDS]);
    expect(seg.tokens.slice(3, 259)).toEqual(c);
    expect(seg.tokens[259]).toBe(8193);
    expect(seg.tokens.slice(260)).toEqual([...VISION_CLOSE_TEXT_IDS]);
    expect(seg.visionMask.filter(Boolean).length).toBe(257);
    expect(seg.visionMask.slice(3, 260).every(Boolean)).toBe(true);
    // a [16,16] grid is one image too
    expect(visionSegment(grid(c))).toEqual(seg);
  });

  it('<vision> and </vision> are ordinary text tokens (no BOS)', () => {
    const tok = defaultTokenizer();
    expect(tok.encode('<vision>')).toEqual([...VISION_OPEN_TEXT_IDS]);
    expect(tok.encode('</vision>')).toEqual([...VISION_CLOSE_TEXT_IDS]);
  });

  it('text before the vision segment is encoded separately with vision mask false', () => {
    const tok = defaultTokenizer();
    const c = [...frame(3), ...frame(4), ...frame(5)];
    const seg = videoTokens('What happens?', c);
    const text = tok.encode('What happens?');
    expect(seg.tokens.slice(0, text.length)).toEqual(text);
    expect(seg.tokens.length).toBe(text.length + 3 * 257 + 6);
    expect(seg.visionMask.slice(0, text.length + 3).some(Boolean)).toBe(false);
    const markers = [text.length + 3 + 256, text.length + 3 + 513, text.length + 3 + 770];
    expect(markers.map((i) => seg.tokens[i])).toEqual([8192, 8192, 8193]);
    // interleaved: text, image, text
    const inter = layoutTokens(['A', { vision: frame(1) }, 'B']);
    expect(inter.tokens).toEqual([...tok.encode('A'), 529, 4924, 29958, ...frame(1), 8193, 1533, 4924, 29958, ...tok.encode('B')]);
  });

  it('max frames keeps linspace(0, n-1, m).astype(int) frames (checklist 12)', () => {
    expect(selectFrames(10, 4)).toEqual([0, 3, 6, 9]);
    expect(selectFrames(100, 7)).toEqual([0, 16, 33, 49, 66, 82, 99]);
    expect(selectFrames(7, 4)).toEqual([0, 2, 4, 6]);
    expect(selectFrames(3, 4)).toEqual([0, 1, 2]);
    expect(selectFrames(5, -1)).toEqual([0, 1, 2, 3, 4]);
    const frames = Array.from({ length: 10 }, (_, f) => frame(f));
    const seg = visionSegment(frames.flat(), { maxFrames: 4 });
    expect(seg.tokens.length).toBe(4 * 257 + 6);
    expect(seg.tokens.slice(3 + 257, 3 + 257 + 256)).toEqual(frames[3]);
    expect(seg.tokens[3 + 4 * 257 - 1]).toBe(8193);
  });

  it('refuses codes out of range and partial frames', () => {
    expect(() => flattenVisionCodes([...frame(1).slice(0, 255), 8192])).toThrow(InputError);
    expect(() => flattenVisionCodes(frame(1).slice(0, 100))).toThrow(/multiple of 256/);
    expect(() => flattenVisionCodes([])).toThrow(InputError);
    expect(() => visionSegment([grid(frame(1)).slice(0, 15)])).toThrow(/16x16/);
    expect(() => flattenVisionCodes([...frame(1).slice(0, 255), 1.5])).toThrow(InputError);
  });
});
