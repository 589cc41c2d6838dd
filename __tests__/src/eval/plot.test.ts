import { describe, expect, it } from '@jest/globals';
import sharp from 'sharp';
import { ConfigError, InputError } from '../../../ops/errors.js';
import { ADVANCE, DESCENT, GLYPH_H, GLYPH_W, glyphRows, textSvg, textWidth } from '../../../src/eval/font.js';
import {
  fmtNum, heatmapLayout, heatmapPng, lineChartLayout, lineChartPng, NAN_COLOR, NAN_HATCH, scoreColor, SERIES_COLORS,
  type HeatmapOptions, type Rgb,
} from '../../../src/eval/plot.js';

interface Image { width: number; height: number; at(x: number, y: number): Rgb }

async function decode(png: Buffer): Promise<Image> {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const at = (x: number, y: number): Rgb => {
    const o = (Math.round(y) * info.width + Math.round(x)) * 3;
    return [data[o]!, data[o + 1]!, data[o + 2]!];
  };
  return { width: info.width, height: info.height, at };
}

const svg = (w: number, h: number, body: string): Buffer =>
  Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}"><rect width="${w}" height="${h}" fill="white"/>${body}</svg>`);

const isInk = ([r, g, b]: Rgb): boolean => r < 100 && g < 100 && b < 100;

function errorOf(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a throw');
}

describe('bitmap font', () => {
  it('has a glyph for every printable ASCII character, blank only for space', () => {
    for (let c = 32; c <= 126; c++) {
      const rows = glyphRows(String.fromCharCode(c));
      expect(rows).toHaveLength(GLYPH_H + DESCENT);
      expect(rows.every((r) => r.length === GLYPH_W)).toBe(true);
      expect(rows.join('').includes('#')).toBe(c !== 32);
    }
    // Letters must not collapse onto each other either (a corrupt table tends to repeat glyphs).
    const shapes = new Set(Array.from({ length: 94 }, (_, i) => glyphRows(String.fromCharCode(33 + i)).join('/')));
    expect(shapes.size).toBe(94);
    expect(glyphRows('é')).toEqual(glyphRows('?'));
  });

  it('draws distinct digits and an L shape where the table says', () => {
    const digits = '0123456789'.split('').map((d) => glyphRows(d).join('/'));
    expect(new Set(digits).size).toBe(10);
    expect(glyphRows('L')).toEqual(['#....', '#....', '#....', '#....', '#....', '#....', '#####', '.....']);
  });

  it('measures text as characters times the advance', () => {
    expect(ADVANCE).toBe(GLYPH_W + 1);
    expect(textWidth('', 3)).toBe(0);
    expect(textWidth('Depth 50%', 1)).toBe(9 * ADVANCE);
    expect(textWidth('1M', 2)).toBe(2 * ADVANCE * 2);
    expect(textWidth('a😀', 1)).toBe(2 * ADVANCE); // one character per code point
  });

  it('renders exactly the glyph pixels, scaled, at whole-pixel positions', async () => {
    const img = await decode(await sharp(svg(40, 40, textSvg('A', 10, 5, { scale: 3, color: '#000' }))).png().toBuffer());
    const rows = glyphRows('A');
    const want: string[] = [], got: string[] = [];
    for (let y = 0; y < 40; y++) {
      for (let x = 0; x < 40; x++) {
        const gx = Math.floor((x - 10) / 3), gy = Math.floor((y - 5) / 3);
        want.push(`${x},${y}:${rows[gy]?.[gx] === '#' ? '0,0,0' : '255,255,255'}`);
        got.push(`${x},${y}:${img.at(x, y).join(',')}`);
      }
    }
    expect(got).toEqual(want);
  });

  it('anchors text at its end or middle, and turns it for a vertical label', async () => {
    const w = textWidth('IIII', 2);
    const ink = async (body: string): Promise<{ x0: number; x1: number; y0: number; y1: number }> => {
      const img = await decode(await sharp(svg(120, 120, body)).png().toBuffer());
      const box = { x0: Infinity, x1: -Infinity, y0: Infinity, y1: -Infinity };
      for (let y = 0; y < 120; y++) for (let x = 0; x < 120; x++) {
        if (!isInk(img.at(x, y))) continue;
        box.x0 = Math.min(box.x0, x); box.x1 = Math.max(box.x1, x); box.y0 = Math.min(box.y0, y); box.y1 = Math.max(box.y1, y);
      }
      return box;
    };
    // The last column of every glyph is its spacing, so ink ends ADVANCE - GLYPH_W font pixels early.
    const end = await ink(textSvg('IIII', 100, 20, { anchor: 'end' }));
    expect(end.x0).toBeGreaterThanOrEqual(100 - w);
    expect(end.x1).toBeLessThan(100);
    expect(end.y0).toBe(20);
    const vertical = await ink(textSvg('IIII', 10, 60, { anchor: 'middle', rotate: true }));
    expect(vertical.y1 - vertical.y0).toBeGreaterThan(vertical.x1 - vertical.x0);
    expect(vertical.x0).toBe(10);
    expect(Math.abs((vertical.y0 + vertical.y1) / 2 - 60)).toBeLessThanOrEqual(3);
    expect(vertical.y1).toBeLessThan(60 + w / 2);
  });

  it('rejects a fractional scale', () => {
    expect(() => textSvg('x', 0, 0, { scale: 1.5 })).toThrow(ConfigError);
  });
});

describe('scoreColor', () => {
  it('goes red to yellow to green and greys out NaN', () => {
    const [r0, g0] = scoreColor(0), [r1, g1] = scoreColor(1), [rm, gm, bm] = scoreColor(0.5);
    expect(r0).toBeGreaterThan(g0);
    expect(g1).toBeGreaterThan(r1);
    expect(rm).toBeGreaterThan(200);
    expect(gm).toBeGreaterThan(150);
    expect(bm).toBeLessThan(100);
    expect(scoreColor(NaN)).toEqual(NAN_COLOR);
    expect(scoreColor(2)).toEqual(scoreColor(1));
  });
});

const grid = (): HeatmapOptions => ({
  title: 'Needle retrieval',
  xLabel: 'Context length',
  yLabel: 'Depth percent',
  xTicks: [1024, 8192, 65536, 1048576],
  yTicks: [0, 50, 100],
  values: [[0, 0.5, 1, NaN], [1, 0.25, 0.75, 0], [NaN, 1, 0.5, 0.1]],
  legendLabel: 'Accuracy',
});

describe('heatmapPng', () => {
  it('paints every cell centre in its score colour at the default size', async () => {
    const opts = grid();
    const png = await heatmapPng(opts);
    expect(await sharp(png).metadata()).toMatchObject({ format: 'png', width: 1000, height: 600 });
    const img = await decode(png);
    const L = heatmapLayout(opts);
    opts.values.forEach((row, j) => row.forEach((v, i) => {
      const c = L.cells[j]![i]!;
      const px = img.at(c.x + Math.floor(c.w / 2), c.y + Math.floor(c.h / 2));
      if (Number.isNaN(v)) {
        // Hatched grey: neutral, between the hatch and the background shade.
        expect(px[0]).toBe(px[1]);
        expect(px[1]).toBe(px[2]);
        expect(px[0]).toBeGreaterThanOrEqual(NAN_HATCH[0]);
        expect(px[0]).toBeLessThanOrEqual(NAN_COLOR[0]);
      } else {
        expect(px).toEqual(scoreColor(v));
      }
    }));
    // Row 0 is the top row, as in the paper (depth 0 at the top).
    expect(L.cells[0]![0]!.y).toBeLessThan(L.cells[2]![0]!.y);
    expect(L.cells[0]![1]!.x).toBe(L.cells[0]![0]!.x + L.cells[0]![0]!.w);
  });

  it('draws dark title text and a colour legend from 0 at the bottom to 1 at the top', async () => {
    const opts = { ...grid(), width: 640, height: 400 };
    const img = await decode(await heatmapPng(opts));
    expect([img.width, img.height]).toEqual([640, 400]);
    const L = heatmapLayout(opts);
    let dark = 0;
    for (let y = L.title.y; y < L.title.y + L.title.h; y++) for (let x = L.title.x; x < L.title.x + L.title.w; x++) if (isInk(img.at(x, y))) dark++;
    expect(dark).toBeGreaterThan(50);
    const near = (a: Rgb, b: Rgb): void => a.forEach((v, k) => expect(Math.abs(v - b[k]!)).toBeLessThanOrEqual(8));
    const { x, y, w, h } = L.legend;
    near(img.at(x + w / 2, y + 1), scoreColor(1));
    near(img.at(x + w / 2, y + h / 2), scoreColor(0.5));
    near(img.at(x + w / 2, y + h - 2), scoreColor(0));
  });

  it('thins tick labels so they do not overlap', () => {
    const n = 40;
    const L = heatmapLayout({ ...grid(), xTicks: Array.from({ length: n }, (_, i) => 1048576 * (i + 1)), values: grid().values.map(() => new Array<number>(n).fill(1)) });
    expect(L.xLabelled.length).toBeLessThan(n);
    expect(L.xLabelled[0]).toBe(0);
    const gap = (L.xLabelled[1]! - L.xLabelled[0]!) * L.cells[0]![0]!.w;
    expect(gap).toBeGreaterThanOrEqual(textWidth(fmtNum(1048576 * 40), 2));
    expect(heatmapLayout(grid()).xLabelled).toEqual([0, 1, 2, 3]);
  });

  it('is byte-for-byte reproducible', async () => {
    expect((await heatmapPng(grid())).equals(await heatmapPng(grid()))).toBe(true);
  });

  it('rejects bad grids with one-line errors', () => {
    const bad: [string, Partial<HeatmapOptions>, RegExp][] = [
      ['no rows', { values: [] }, /non-empty/],
      ['empty row', { values: [[]] }, /non-empty/],
      ['ragged', { values: [[0, 0, 0, 0], [0, 0, 0], [0, 0, 0, 0]] }, /row 1 has 3 entries but row 0 has 4/],
      ['above 1', { values: [[0, 0, 1.5, 0], [0, 0, 0, 0], [0, 0, 0, 0]] }, /\[y=0\]\[x=2\] is 1\.5/],
      ['negative', { values: [[0, 0, 0, 0], [0, -0.1, 0, 0], [0, 0, 0, 0]] }, /-0\.1/],
      ['infinite', { values: [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, Infinity]] }, /Infinity/],
      ['x ticks', { xTicks: [1, 2, 3] }, /3 xTicks but 4/],
      ['y ticks', { yTicks: [0, 1, 2, 3] }, /4 yTicks but 3/],
    ];
    for (const [, patch, msg] of bad) {
      const e = errorOf(() => heatmapLayout({ ...grid(), ...patch }));
      expect(e).toBeInstanceOf(InputError);
      expect(e.message).toMatch(msg);
      expect(e.message).not.toContain('\n');
    }
    expect(errorOf(() => heatmapLayout({ ...grid(), width: 50 }))).toBeInstanceOf(ConfigError);
    const many = Array.from({ length: 3 }, () => new Array<number>(2000).fill(1));
    expect(errorOf(() => heatmapLayout({ ...grid(), values: many, xTicks: many[0]! }))).toBeInstanceOf(ConfigError);
  });

  it('writes numeric ticks the way the paper does', () => {
    expect([1024, 32768, 1048576, 2097152, 1000, 50000, 1.5e6, 11.111111, 0].map(fmtNum)).toEqual(['1K', '32K', '1M', '2M', '1000', '50k', '1.5M', '11.11', '0']);
  });
});

describe('lineChartPng', () => {
  const opts = {
    title: 'Perplexity by position',
    xLabel: 'position',
    yLabel: 'perplexity',
    logX: true,
    series: [
      { name: 'lwm', points: [[1024, 12], [4096, 9], [32768, 6]] as [number, number][] },
      { name: 'base', points: [[1024, 11], [4096, 14], [32768, 30], [-1, 5], [2048, NaN]] as [number, number][] },
    ],
  };

  it('decodes at the expected size with each series colour along its line', async () => {
    const png = await lineChartPng({ ...opts, width: 800, height: 500 });
    expect(await sharp(png).metadata()).toMatchObject({ format: 'png', width: 800, height: 500 });
    const img = await decode(png);
    const L = lineChartLayout({ ...opts, width: 800, height: 500 });
    expect(L.xTicks).toContain(1024);
    expect(L.xTicks).toContain(32768);
    opts.series.forEach((s, i) => {
      // Midway between the first two points (in log-x space) lies on the straight segment.
      const [ax, ay] = L.toPixel(s.points[0]![0], s.points[0]![1]), [bx, by] = L.toPixel(s.points[1]![0], s.points[1]![1]);
      expect(img.at(Math.floor((ax + bx) / 2), Math.floor((ay + by) / 2))).toEqual(SERIES_COLORS[i]);
    });
    let dark = 0;
    for (let y = L.title.y; y < L.title.y + L.title.h; y++) for (let x = L.title.x; x < L.title.x + L.title.w; x++) if (isInk(img.at(x, y))) dark++;
    expect(dark).toBeGreaterThan(50);
  });

  it('renders an empty chart rather than failing', async () => {
    const meta = await sharp(await lineChartPng({ ...opts, series: [{ name: 'none', points: [] }] })).metadata();
    expect([meta.width, meta.height]).toEqual([1000, 600]);
    expect(() => lineChartLayout({ ...opts, series: [{ name: 'x', points: 'no' as never }] })).toThrow(InputError);
  });
});
