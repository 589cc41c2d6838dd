import { ConfigError, InputError } from '../../ops/errors.js';
import { fitText, GLYPH_H, textHeight, textSvg, textWidth } from './font.js';

/**
 * Evaluation charts as PNG: SVG rendered by sharp (librsvg), with all text drawn by the built-in
 * bitmap font so the pixels are the same on every machine. Layouts are exported so tests and users
 * can find a cell or a data point in the picture without re-deriving the geometry.
 */

export type Rgb = [number, number, number];
export interface Rect { x: number; y: number; w: number; h: number }

/** Shared by both charts; width and height are pixels, default 1000 x 600. */
interface Chart { title: string; xLabel: string; yLabel: string; width?: number; height?: number }

export interface HeatmapOptions extends Chart {
  /** Numbers are written as the paper does (32768 as 32K, see fmtNum); long labels are cut. */
  xTicks: readonly (string | number)[];
  yTicks: readonly (string | number)[];
  /** values[y][x]: a score in [0, 1], NaN where that cell was not run. Row 0 is drawn at the top. */
  values: readonly (readonly number[])[];
  legendLabel?: string;
}

/** The paper's needle-figure scale: 0 red, 0.5 yellow, 1 green. */
const STOPS: readonly Rgb[] = [[240, 73, 110], [235, 184, 57], [12, 215, 159]];
/** Not-run cells: this grey under hatching of NAN_HATCH. */
export const NAN_COLOR: Rgb = [224, 224, 224];
export const NAN_HATCH: Rgb = [168, 168, 168];
const INK = '#222', SOFT = '#555';
const S = 2, TITLE_S = 3; // font scales: labels and title
const TH = textHeight(S);
const TOP = 56, PAD = 12;

/** Colour of a score (clamped to [0, 1]); NaN gives NAN_COLOR. Linear in sRGB between the stops. */
export function scoreColor(v: number): Rgb {
  if (Number.isNaN(v)) return [...NAN_COLOR];
  const t = Math.min(1, Math.max(0, v)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(t));
  const a = STOPS[i]!, b = STOPS[i + 1]!, f = t - i;
  return [0, 1, 2].map((k) => Math.round(a[k]! + (b[k]! - a[k]!) * f)) as Rgb;
}

/** title: where the title's pixels are drawn. */
interface Layout { width: number; height: number; title: Rect }

/**
 * grid: all cells together; cells[y][x] matches values; legend: the colour bar, 1 at its top edge
 * and 0 at its bottom; x/yLabelled: indices of the ticks that get a label, the rest thinned out so
 * labels never overlap.
 */
export interface HeatmapLayout extends Layout { grid: Rect; cells: Rect[][]; legend: Rect; xLabelled: number[]; yLabelled: number[] }

/**
 * Cell geometry: margins are fixed (56 px above for the title; below, 62 px for tick labels and
 * the x label; right, 106 px for the colour bar, 132 with a legend label; left, 50 px plus the
 * widest y tick label), every cell is floor(room / count) whole pixels wide and high, and the grid
 * starts at the top-left of the room, so cell (x, y) is at grid.x + x * w, grid.y + y * h.
 */
export function heatmapLayout(opts: HeatmapOptions): HeatmapLayout {
  const W = pixels('width', opts.width ?? 1000), H = pixels('height', opts.height ?? 600);
  const { nx, ny } = checkGrid(opts);
  const left = PAD + TH + PAD + Math.max(...opts.yTicks.map((t) => textWidth(tickText(t), S))) + 12;
  const right = 106 + (opts.legendLabel ? 26 : 0);
  const cw = Math.floor((W - left - right) / nx), ch = Math.floor((H - TOP - 62) / ny);
  if (cw < 1 || ch < 1) throw new ConfigError(`heatmap of ${nx} x ${ny} cells does not fit in ${W} x ${H} pixels; use a larger width or height`);
  const grid = { x: left, y: TOP, w: cw * nx, h: ch * ny };
  const cells = Array.from({ length: ny }, (_, j) => Array.from({ length: nx }, (_, i) => ({ x: left + i * cw, y: TOP + j * ch, w: cw, h: ch })));
  const xStep = Math.ceil((Math.max(...opts.xTicks.map((t) => textWidth(tickText(t), S))) + 8) / cw);
  const every = (n: number, step: number): number[] => Array.from({ length: n }, (_, i) => i).filter((i) => i % step === 0);
  const legend = { x: grid.x + grid.w + 28, y: TOP, w: 22, h: grid.h };
  return { width: W, height: H, title: rect(titleRect(opts.title, W)), grid, cells, legend, xLabelled: every(nx, xStep), yLabelled: every(ny, Math.ceil((GLYPH_H * S + 4) / ch)) };
}

export function heatmapSvg(opts: HeatmapOptions): string {
  const L = heatmapLayout(opts);
  const { grid, legend: lg } = L;
  const out = svgOpen(L.width, L.height);
  out.push(`<defs><pattern id="nan" patternUnits="userSpaceOnUse" width="8" height="8"><rect width="8" height="8" fill="${rgb(NAN_COLOR)}"/>` +
    `<path d="M-2 2l4-4M0 8l8-8M6 10l4-4" stroke="${rgb(NAN_HATCH)}" stroke-width="2"/></pattern>` +
    `<linearGradient id="scale" x1="0" y1="1" x2="0" y2="0">${STOPS.map((c, i) => `<stop offset="${i / (STOPS.length - 1)}" stop-color="${rgb(c)}"/>`).join('')}</linearGradient></defs>`);
  L.cells.forEach((row, j) => row.forEach((c, i) => {
    const v = opts.values[j]![i]!;
    out.push(`<rect x="${c.x}" y="${c.y}" width="${c.w}" height="${c.h}" fill="${Number.isNaN(v) ? 'url(#nan)' : rgb(scoreColor(v))}" shape-rendering="crispEdges"/>`);
  }));
  out.push(frame(grid));
  const gb = grid.y + grid.h;
  for (const i of L.xLabelled) {
    const c = L.cells[0]![i]!, cx = c.x + Math.floor(c.w / 2);
    out.push(tick(cx, gb, cx, gb + 4), textSvg(tickText(opts.xTicks[i]!), cx, gb + 8, { scale: S, color: SOFT, anchor: 'middle' }));
  }
  for (const j of L.yLabelled) {
    const c = L.cells[j]![0]!, cy = c.y + Math.floor(c.h / 2);
    out.push(tick(grid.x - 5, cy, grid.x - 1, cy), textSvg(tickText(opts.yTicks[j]!), grid.x - 9, cy, { scale: S, color: SOFT, anchor: 'end', valign: 'middle' }));
  }
  out.push(labels(opts, grid, L.width), `<rect x="${lg.x}" y="${lg.y}" width="${lg.w}" height="${lg.h}" fill="url(#scale)"/>`, frame(lg));
  for (const [v, label] of [[0, '0'], [0.5, '0.5'], [1, '1']] as const) {
    const y = Math.round(lg.y + lg.h - v * lg.h);
    out.push(tick(lg.x + lg.w + 1, y, lg.x + lg.w + 5, y), textSvg(label, lg.x + lg.w + 9, y, { scale: S, color: SOFT, valign: 'middle' }));
  }
  if (opts.legendLabel) out.push(textSvg(fitText(opts.legendLabel, lg.h, S), lg.x + lg.w + 57, lg.y + lg.h / 2, { scale: S, color: INK, anchor: 'middle', rotate: true }));
  out.push('</svg>');
  return out.join('\n');
}

/** The heatmap as PNG bytes; see heatmapLayout for where everything is. */
export const heatmapPng = async (opts: HeatmapOptions): Promise<Buffer> => png(heatmapSvg(opts));

export interface LineSeries { name: string; points: readonly (readonly [x: number, y: number])[] }
export interface LineChartOptions extends Chart {
  /** Points with a non-finite coordinate (or x <= 0 on a log axis) are skipped. */
  series: readonly LineSeries[];
  /** Log2 x axis, ticks at powers of two (position buckets usually are). */
  logX?: boolean;
}

/** Ticks are in data units; toPixel maps data coordinates to (unrounded) pixel coordinates. */
export interface LineChartLayout extends Layout { plot: Rect; xTicks: number[]; yTicks: number[]; toPixel(x: number, y: number): [number, number] }

/** Cycled through by series index; series i is drawn in SERIES_COLORS[i % length]. */
export const SERIES_COLORS: readonly Rgb[] = [[31, 119, 180], [214, 39, 40], [44, 160, 44], [255, 127, 14], [148, 103, 189], [140, 86, 75]];

export function lineChartLayout(opts: LineChartOptions): LineChartLayout {
  const W = pixels('width', opts.width ?? 1000), H = pixels('height', opts.height ?? 600);
  const pts = usable(opts).flat();
  const ys = niceAxis(pts.map((p) => p[1]));
  const left = PAD + TH + PAD + Math.max(...ys.ticks.map((t) => textWidth(fmtNum(t), S))) + 12;
  const plot = { x: left, y: TOP, w: W - left - 24, h: H - TOP - 62 };
  if (plot.w < 50 || plot.h < 50) throw new ConfigError(`line chart of ${W} x ${H} pixels leaves no room to plot; use a larger width or height`);
  let xs: { lo: number; hi: number; ticks: number[] };
  const fx = opts.logX ? Math.log2 : (v: number): number => v;
  if (opts.logX) {
    let lo = Infinity, hi = -Infinity;
    for (const p of pts) { lo = Math.min(lo, Math.floor(Math.log2(p[0]))); hi = Math.max(hi, Math.ceil(Math.log2(p[0]))); }
    if (lo > hi) [lo, hi] = [0, 10];
    if (lo === hi) [lo, hi] = [lo - 1, hi + 1];
    const widest = Math.max(...Array.from({ length: hi - lo + 1 }, (_, k) => textWidth(fmtNum(2 ** (lo + k)), S)));
    const step = Math.ceil((widest + 12) / (plot.w / (hi - lo)));
    xs = { lo, hi, ticks: Array.from({ length: Math.floor((hi - lo) / step) + 1 }, (_, k) => 2 ** (lo + k * step)) };
  } else xs = niceAxis(pts.map((p) => p[0]));
  return {
    width: W, height: H, title: rect(titleRect(opts.title, W)), plot, xTicks: xs.ticks, yTicks: ys.ticks,
    toPixel: (x, y) => [plot.x + ((fx(x) - xs.lo) / (xs.hi - xs.lo)) * plot.w, plot.y + plot.h - ((y - ys.lo) / (ys.hi - ys.lo)) * plot.h],
  };
}

export function lineChartSvg(opts: LineChartOptions): string {
  const L = lineChartLayout(opts), p = L.plot, data = usable(opts), out = svgOpen(L.width, L.height);
  const f = (v: number): string => v.toFixed(2);
  for (const t of L.xTicks) {
    const x = Math.round(L.toPixel(t, L.yTicks[0]!)[0]);
    out.push(`<line x1="${x + 0.5}" y1="${p.y}" x2="${x + 0.5}" y2="${p.y + p.h}" stroke="#e6e6e6"/>`, textSvg(fmtNum(t), x, p.y + p.h + 8, { scale: S, color: SOFT, anchor: 'middle' }));
  }
  for (const t of L.yTicks) {
    const y = Math.round(L.toPixel(L.xTicks[0]!, t)[1]);
    out.push(`<line x1="${p.x}" y1="${y + 0.5}" x2="${p.x + p.w}" y2="${y + 0.5}" stroke="#e6e6e6"/>`, textSvg(fmtNum(t), p.x - 9, y, { scale: S, color: SOFT, anchor: 'end', valign: 'middle' }));
  }
  out.push(frame(p), labels(opts, p, L.width));
  if (data.every((d) => d.length === 0)) out.push(textSvg('no data', p.x + p.w / 2, p.y + p.h / 2, { scale: S, color: '#888', anchor: 'middle', valign: 'middle' }));
  data.forEach((d, i) => {
    const color = rgb(SERIES_COLORS[i % SERIES_COLORS.length]!);
    const xy = d.map(([x, y]) => L.toPixel(x, y));
    if (xy.length > 1) out.push(`<polyline points="${xy.map(([x, y]) => `${f(x)},${f(y)}`).join(' ')}" fill="none" stroke="${color}" stroke-width="3" stroke-linejoin="round"/>`);
    // A lone point has no line to show it, and sparse points are worth seeing individually.
    if (xy.length <= 50) for (const [x, y] of xy) out.push(`<circle cx="${f(x)}" cy="${f(y)}" r="4" fill="${color}"/>`);
  });
  if (opts.series.length > 0) {
    const names = opts.series.map((s) => fitText(s.name, p.w / 2, S));
    const bw = 44 + Math.max(...names.map((n) => textWidth(n, S))), bx = p.x + p.w - bw - 8, by = p.y + 8;
    out.push(`<rect x="${bx}" y="${by}" width="${bw}" height="${names.length * 22 + 8}" fill="white" fill-opacity="0.9" stroke="#bbb"/>`);
    names.forEach((n, i) => {
      const cy = by + 4 + 22 * i + 11;
      out.push(`<line x1="${bx + 8}" y1="${cy}" x2="${bx + 32}" y2="${cy}" stroke="${rgb(SERIES_COLORS[i % SERIES_COLORS.length]!)}" stroke-width="3"/>`, textSvg(n, bx + 38, cy, { scale: S, color: INK, valign: 'middle' }));
    });
  }
  out.push('</svg>');
  return out.join('\n');
}

/** The line chart as PNG bytes; see lineChartLayout for where everything is. */
export const lineChartPng = async (opts: LineChartOptions): Promise<Buffer> => png(lineChartSvg(opts));

function usable(opts: LineChartOptions): [number, number][][] {
  if (!Array.isArray(opts.series)) throw new InputError(`line chart series must be an array of { name, points }, got ${typeof opts.series}`);
  return opts.series.map((s, i) => {
    if (!s || typeof s.name !== 'string' || !Array.isArray(s.points)) throw new InputError(`line chart series ${i} must be { name: string, points: [x, y][] }`);
    const pts: readonly (readonly [number, number])[] = s.points;
    return pts.filter((q) => Number.isFinite(q[0]) && Number.isFinite(q[1]) && (!opts.logX || q[0] > 0)).map((q) => [q[0], q[1]] as [number, number]).sort((a, b) => a[0] - b[0]);
  });
}

function checkGrid(o: HeatmapOptions): { nx: number; ny: number } {
  const v = o.values;
  if (!Array.isArray(v) || v.length === 0 || !Array.isArray(v[0]) || v[0].length === 0) throw new InputError(`heatmap values must be a non-empty [y][x] grid of scores, got ${Array.isArray(v) ? `${v.length} rows` : typeof v}`);
  const nx = v[0].length, ny = v.length;
  v.forEach((row, j) => {
    if (!Array.isArray(row) || row.length !== nx) throw new InputError(`heatmap values row ${j} has ${Array.isArray(row) ? row.length : 'no'} entries but row 0 has ${nx}; every row needs one value per x tick`);
    row.forEach((s, i) => {
      if (typeof s !== 'number' || (!Number.isNaN(s) && !(s >= 0 && s <= 1))) throw new InputError(`heatmap value at [y=${j}][x=${i}] is ${String(s)}; scores must be in [0, 1], or NaN for a cell not run`);
    });
  });
  for (const [k, n, per] of [['x', nx, 'values per row; give one x tick per column'], ['y', ny, 'rows of values; give one y tick per row']] as const) {
    const t = k === 'x' ? o.xTicks : o.yTicks;
    if (!Array.isArray(t) || t.length !== n) throw new InputError(`heatmap has ${Array.isArray(t) ? t.length : 'no'} ${k}Ticks but ${n} ${per}`);
  }
  return { nx, ny };
}

/** Linear ticks at 1-2-5 steps over the data, the domain widened to whole steps. */
function niceAxis(vals: number[]): { lo: number; hi: number; ticks: number[] } {
  let lo = Math.min(...vals), hi = Math.max(...vals);
  if (!(lo <= hi)) [lo, hi] = [0, 1];
  if (lo === hi) [lo, hi] = [lo - (Math.abs(lo) * 0.1 || 1), hi + (Math.abs(hi) * 0.1 || 1)];
  const raw = (hi - lo) / 5, p = 10 ** Math.floor(Math.log10(raw)), r = raw / p;
  const step = (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * p;
  const first = Math.floor(lo / step), last = Math.ceil(hi / step);
  // Multiplying whole step counts avoids the drift repeated addition gives (0.30000000000000004).
  const ticks = Array.from({ length: last - first + 1 }, (_, k) => parseFloat(((first + k) * step).toPrecision(12)));
  return { lo: ticks[0]!, hi: ticks[ticks.length - 1]!, ticks };
}

/** Token counts read as the paper writes them: 32768 is 32K, 1048576 is 1M; others to 4 digits. */
export function fmtNum(v: number): string {
  const a = Math.abs(v);
  const trim = (x: number): string => String(parseFloat(x.toPrecision(4)));
  if (Number.isInteger(v) && a >= 1 << 20 && a % (1 << 20) === 0) return `${v / (1 << 20)}M`;
  if (Number.isInteger(v) && a >= 1024 && a % 1024 === 0) return `${v / 1024}K`;
  if (a >= 1e6) return `${trim(v / 1e6)}M`;
  if (a >= 1e4) return `${trim(v / 1e3)}k`;
  return trim(v);
}

function tickText(t: string | number): string {
  return fitText(typeof t === 'number' ? fmtNum(t) : String(t), 120, S);
}

/** The title at scale 3, or 2 (then cut) when that would not fit the width. */
function titleRect(title: string, W: number): Rect & { text: string; scale: number } {
  const scale = textWidth(title, TITLE_S) <= W - 2 * PAD ? TITLE_S : S;
  const text = fitText(title, W - 2 * PAD, scale), w = textWidth(text, scale);
  return { x: Math.round(W / 2 - w / 2), y: 16, w, h: textHeight(scale), text, scale };
}

/** Title, and axis labels centred on the grid or plot `g` (below it and left of it). */
function labels(o: Chart, g: Rect, W: number): string {
  const t = titleRect(o.title, W);
  return [
    textSvg(t.text, t.x, t.y, { scale: t.scale, color: '#111' }),
    textSvg(fitText(o.xLabel, g.w, S), g.x + g.w / 2, g.y + g.h + 8 + TH + 8, { scale: S, color: INK, anchor: 'middle' }),
    textSvg(fitText(o.yLabel, g.h, S), PAD, g.y + g.h / 2, { scale: S, color: INK, anchor: 'middle', rotate: true }),
  ].join('\n');
}

const rect = (r: Rect): Rect => ({ x: r.x, y: r.y, w: r.w, h: r.h });
const rgb = (c: Rgb): string => `rgb(${c.join(',')})`;

const svgOpen = (W: number, H: number): string[] => [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`, `<rect width="${W}" height="${H}" fill="white"/>`];

/** A one-pixel outline just outside `r`, so it never covers the edge pixels of what it frames. */
function frame(r: Rect): string {
  return `<rect x="${r.x - 0.5}" y="${r.y - 0.5}" width="${r.w + 1}" height="${r.h + 1}" fill="none" stroke="#333"/>`;
}

const tick = (x1: number, y1: number, x2: number, y2: number): string => `<path d="M${x1} ${y1}L${x2} ${y2}" stroke="#333" shape-rendering="crispEdges"/>`;

async function png(svg: string): Promise<Buffer> {
  const { default: sharp } = await import('sharp');
  return sharp(Buffer.from(svg)).png().toBuffer();
}

function pixels(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 200 || v > 10000) throw new ConfigError(`plot ${name} must be a whole number of pixels from 200 to 10000, got ${v}`);
  return v;
}
