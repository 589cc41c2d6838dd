import { ConfigError } from '../../ops/errors.js';

/**
 * A built-in 5x7 bitmap font drawn as SVG paths, so charts need no system font: a machine without
 * fonts (containers, CI) renders the same pixels as a desktop, and librsvg never substitutes a
 * fallback face that changes widths. The glyphs are the classic 5x7 dot-matrix LCD shapes.
 */

/**
 * Glyph cell in font pixels: GLYPH_H rows down to the baseline (capitals fill them) and DESCENT
 * rows below it for g, j, p, q, y. One blank column after each glyph separates characters.
 */
export const GLYPH_W = 5;
export const GLYPH_H = 7;
export const DESCENT = 1;
export const ADVANCE = GLYPH_W + 1;
const ROWS = GLYPH_H + DESCENT;

const FIRST = 32;
const LAST = 126;

/**
 * Printable ASCII 32..126, ten hex digits a glyph: five columns left to right, bit 0 of each column
 * byte is the top row and bit 7 the descender row. Column order keeps the table as dense as the LCD-font sources it came from.
 */
const TABLE =
  '000000000000005f00000007000700147f147f14242a7f2a12231308646236495522500005030000' +
  '001c2241000041221c0014083e081408083e08080050300000080808080800606000002010080402' +
  '3e5149453e00427f400042615149462141454b311814127f1027454545393c4a4949300171090503' +
  '3649494936064949291e003636000000563600000814224100141414141400412214080201510906' +
  '324979413e7e1111117e7f494949363e414141227f4141221c7f494949417f090909013e4149497a' +
  '7f0808087f00417f41002040413f017f081422417f404040407f020c027f7f0408107f3e4141413e' +
  '7f090909063e4151215e7f09192946464949493101017f01013f4040403f1f2040201f3f4038403f' +
  '631408146307087008076151494543007f41410002040810200041417f0004020102044040404040' +
  '000102040020545454787f484444383844444420384444487f3854545418087e09010218a4a4a47c' +
  '7f0804047800447d40004080847d007f1028440000417f40007c041804787c080404783844444438' +
  'fc2424241818242424fc7c080404084854545420043f4440203c4040207c1c2040201c3c4030403c' +
  '44281028441ca0a0a07c4464544c44083641410000007f000000414136080804081008';

/** Row-major bitmaps: GLYPHS[code - 32][row] has bit c set when column c (0 = left) is on. */
const GLYPHS: readonly number[][] = (() => {
  const out: number[][] = [];
  for (let g = 0; g <= LAST - FIRST; g++) {
    const rows = new Array<number>(ROWS).fill(0);
    for (let c = 0; c < GLYPH_W; c++) {
      const col = parseInt(TABLE.slice((g * GLYPH_W + c) * 2, (g * GLYPH_W + c) * 2 + 2), 16);
      for (let r = 0; r < ROWS; r++) if ((col >> r) & 1) rows[r]! |= 1 << c;
    }
    out.push(rows);
  }
  return out;
})();

/**
 * The bitmap of one character as GLYPH_H + DESCENT strings of '#' and '.'; anything outside
 * printable ASCII is drawn as '?', the same substitution textSvg makes.
 */
export function glyphRows(ch: string): string[] {
  return glyphOf(ch.codePointAt(0) ?? 63).map((bits) => {
    let s = '';
    for (let c = 0; c < GLYPH_W; c++) s += (bits >> c) & 1 ? '#' : '.';
    return s;
  });
}

function glyphOf(code: number): number[] {
  return GLYPHS[code >= FIRST && code <= LAST ? code - FIRST : 63 - FIRST]!;
}

/** Characters by code point, so a surrogate pair is one '?' rather than two. */
function chars(text: string): number[] {
  return Array.from(text, (c) => c.codePointAt(0)!);
}

/** Pixels taken along the text direction, trailing spacing column included (n * ADVANCE * scale). */
export function textWidth(text: string, scale = 1): number {
  return chars(text).length * ADVANCE * scale;
}

/** Pixels taken across the text direction, descenders included. */
export function textHeight(scale = 1): number {
  return ROWS * scale;
}

/** Cuts `text` with a trailing '..' so it fits in `maxWidth` pixels at `scale`. */
export function fitText(text: string, maxWidth: number, scale = 1): string {
  const cs = Array.from(text);
  const fits = Math.max(0, Math.floor(maxWidth / (ADVANCE * scale)));
  if (cs.length <= fits) return text;
  return fits <= 2 ? '.'.repeat(fits) : cs.slice(0, fits - 2).join('') + '..';
}

export interface TextOptions {
  /** Whole screen pixels per font pixel; default 2. */
  scale?: number;
  /** Any SVG paint; default '#222'. */
  color?: string;
  /** Where (x, y) sits along the text: its start, centre or end. Default 'start'. */
  anchor?: 'start' | 'middle' | 'end';
  /** Where y sits across the text: the glyph tops, or the middle of the capitals. Default 'top'. */
  valign?: 'top' | 'middle';
  /**
   * Turn the text 90 degrees to read bottom to top (a vertical axis label). Directions turn with it:
   * anchor then places y, valign places x, and the glyph tops face left.
   */
  rotate?: boolean;
}

/**
 * SVG markup for `text` as a single path of pixel squares. The origin is rounded to whole pixels
 * and every square is scale x scale, so edges land on pixel boundaries and nothing is blurred by
 * anti-aliasing: the rendered pixels are exactly `color`. Empty text gives ''.
 */
export function textSvg(text: string, x: number, y: number, opts: TextOptions = {}): string {
  const scale = opts.scale ?? 2;
  if (!Number.isInteger(scale) || scale < 1) throw new ConfigError(`text scale must be a positive whole number, got ${scale}`);
  const codes = chars(text);
  if (codes.length === 0) return '';
  const w = codes.length * ADVANCE * scale;
  const along = opts.anchor === 'middle' ? -w / 2 : opts.anchor === 'end' ? -w : 0;
  const across = opts.valign === 'middle' ? -(GLYPH_H * scale) / 2 : 0;
  // Rotated text is drawn unrotated about its origin, then turned -90 degrees about it, which
  // maps +x (along the text) to up and +y (across it) to right.
  const ox = Math.round(opts.rotate ? x : x + along);
  const oy = Math.round(opts.rotate ? y : y + across);
  const gx = opts.rotate ? ox + Math.round(along) : ox;
  const gy = opts.rotate ? oy + Math.round(across) : oy;
  const parts: string[] = [];
  codes.forEach((code, i) => {
    const rows = glyphOf(code);
    for (let r = 0; r < ROWS; r++) {
      const bits = rows[r]!;
      // One rectangle per horizontal run keeps the path short.
      for (let c = 0; c < GLYPH_W; c++) {
        if (!((bits >> c) & 1)) continue;
        let end = c;
        while (end + 1 < GLYPH_W && (bits >> (end + 1)) & 1) end++;
        const px = gx + (i * ADVANCE + c) * scale;
        const py = gy + r * scale;
        parts.push(`M${px} ${py}h${(end - c + 1) * scale}v${scale}h${-(end - c + 1) * scale}z`);
        c = end;
      }
    }
  });
  const fill = xmlAttr(opts.color ?? '#222');
  const path = `<path d="${parts.join('')}" fill="${fill}" shape-rendering="crispEdges"/>`;
  if (!opts.rotate) return path;
  return `<g transform="rotate(-90 ${ox} ${oy})">${path}</g>`;
}

function xmlAttr(s: string): string {
  return s.replace(/[&<>"]/g, (c) => `&${({ '&': 'amp', '<': 'lt', '>': 'gt', '"': 'quot' } as Record<string, string>)[c]};`);
}
