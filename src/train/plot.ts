import * as fs from 'node:fs';
import { ConfigError } from '../../ops/errors.js';

/**
 * Loss curves as a PNG: an SVG line chart rendered by sharp (librsvg), so no canvas or browser is
 * needed. Points whose step or value is not finite (or not > 0 on a log axis) are skipped: a NaN
 * loss is worth seeing in the logs, not worth losing the whole chart over.
 */

export interface Series {
  name: string;
  points: readonly (readonly [step: number, value: number])[];
}

export interface PlotOptions {
  title?: string;
  /** Pixels; default 800 x 500. */
  width?: number;
  height?: number;
  logY?: boolean;
  xLabel?: string;
  yLabel?: string;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];
const FONT = 'font-family="DejaVu Sans, Arial, sans-serif"';
const M = { left: 72, right: 24, top: 44, bottom: 52 };
let tmpCounter = 0;

/** Writes the chart to `file` (atomically: a temporary sibling renamed into place). */
export async function lossCurvePng(file: string, series: readonly Series[], opts: PlotOptions = {}): Promise<void> {
  const svg = lossCurveSvg(series, opts);
  const { default: sharp } = await import('sharp');
  const tmp = `${file}.tmp-${process.pid}-${tmpCounter++}`;
  try {
    await sharp(Buffer.from(svg)).png().toFile(tmp);
    fs.renameSync(tmp, file);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

export function lossCurveSvg(series: readonly Series[], opts: PlotOptions = {}): string {
  const W = pixels('width', opts.width ?? 800);
  const H = pixels('height', opts.height ?? 500);
  const logY = opts.logY ?? false;
  const data = series.map((s) => ({
    name: s.name,
    pts: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0)).slice().sort((a, b) => a[0] - b[0]),
  }));
  const all = data.flatMap((d) => d.pts);
  const xs = axis(all.map((p) => p[0]), false);
  const ys = axis(all.map((p) => p[1]), logY);
  const x0 = M.left, x1 = W - M.right, y0 = H - M.bottom, y1 = M.top;
  const px = (x: number): number => x0 + ((x - xs.lo) / (xs.hi - xs.lo)) * (x1 - x0);
  const py = (y: number): number => y0 - (((logY ? Math.log10(y) : y) - ys.lo) / (ys.hi - ys.lo)) * (y0 - y1);
  const f = (v: number): string => v.toFixed(1);

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
  ];
  for (const t of xs.ticks) {
    const x = f(px(t));
    out.push(`<line x1="${x}" y1="${y1}" x2="${x}" y2="${y0}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x}" y="${y0 + 18}" ${FONT} font-size="12" text-anchor="middle" fill="#333">${fmt(t)}</text>`);
  }
  for (const t of ys.ticks) {
    const v = logY ? 10 ** t : t;
    const y = f(py(v));
    out.push(`<line x1="${x0}" y1="${y}" x2="${x1}" y2="${y}" stroke="#e5e5e5"/>`);
    out.push(`<text x="${x0 - 8}" y="${y}" dy="4" ${FONT} font-size="12" text-anchor="end" fill="#333">${fmt(v)}</text>`);
  }
  out.push(`<rect x="${x0}" y="${y1}" width="${x1 - x0}" height="${y0 - y1}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${(x0 + x1) / 2}" y="${H - 12}" ${FONT} font-size="13" text-anchor="middle" fill="#333">${xml(opts.xLabel ?? 'step')}</text>`);
  const yl = (y0 + y1) / 2;
  out.push(`<text x="16" y="${yl}" transform="rotate(-90 16 ${yl})" ${FONT} font-size="13" text-anchor="middle" fill="#333">${xml(opts.yLabel ?? (logY ? 'loss (log scale)' : 'loss'))}</text>`);
  if (opts.title) out.push(`<text x="${W / 2}" y="26" ${FONT} font-size="16" font-weight="bold" text-anchor="middle" fill="#111">${xml(opts.title)}</text>`);
  if (all.length === 0) out.push(`<text x="${(x0 + x1) / 2}" y="${yl}" ${FONT} font-size="14" text-anchor="middle" fill="#888">no data</text>`);

  data.forEach((d, i) => {
    const color = COLORS[i % COLORS.length]!;
    const coords = d.pts.map(([x, y]) => `${f(px(x))},${f(py(y))}`);
    if (coords.length > 1) out.push(`<polyline points="${coords.join(' ')}" fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round"/>`);
    // A lone point (or a sparse series) has no line to show it, so mark the points themselves.
    if (coords.length <= 50) for (const c of coords) { const [cx, cy] = c.split(','); out.push(`<circle cx="${cx}" cy="${cy}" r="3" fill="${color}"/>`); }
  });

  if (data.length > 0) {
    const rowH = 18;
    const boxW = 36 + 7 * Math.max(...data.map((d) => d.name.length));
    const bx = x1 - boxW - 8, by = y1 + 8;
    out.push(`<rect x="${bx}" y="${by}" width="${boxW}" height="${data.length * rowH + 8}" fill="white" fill-opacity="0.85" stroke="#bbb"/>`);
    data.forEach((d, i) => {
      const cy = by + 4 + rowH * i + rowH / 2;
      out.push(`<line x1="${bx + 8}" y1="${cy}" x2="${bx + 28}" y2="${cy}" stroke="${COLORS[i % COLORS.length]}" stroke-width="3"/>`);
      out.push(`<text x="${bx + 34}" y="${cy}" dy="4" ${FONT} font-size="12" fill="#333">${xml(d.name)}</text>`);
    });
  }
  out.push('</svg>');
  return out.join('\n');
}

/**
 * Domain and ticks; on a log axis both are in log10 units. A linear domain is widened to whole tick
 * steps, a wide log one to whole decades, a narrow log one padded by 5%.
 */
function axis(values: number[], log: boolean): { lo: number; hi: number; ticks: number[] } {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    const u = log ? Math.log10(v) : v;
    lo = Math.min(lo, u);
    hi = Math.max(hi, u);
  }
  if (lo > hi) [lo, hi] = log ? [-1, 1] : [0, 1];
  if (lo === hi) {
    const pad = log ? 0.5 : Math.abs(lo) * 0.1 || 1;
    lo -= pad;
    hi += pad;
  }
  if (log) {
    if (hi - lo > 3) {
      lo = Math.floor(lo);
      hi = Math.ceil(hi);
      const step = Math.ceil((hi - lo) / 8);
      const ticks: number[] = [];
      for (let t = lo; t <= hi; t += step) ticks.push(t);
      return { lo, hi, ticks };
    }
    // A few decades or less: 1-2-5 (or finer) multiples keep several labelled lines on screen.
    const pad = (hi - lo) * 0.05;
    lo -= pad;
    hi += pad;
    const ticks: number[] = [];
    for (let k = Math.floor(lo); k <= Math.ceil(hi); k++) {
      for (const mult of hi - lo > 1.2 ? [1, 2, 5] : [1, 2, 3, 5, 7]) {
        const t = k + Math.log10(mult);
        if (t >= lo && t <= hi) ticks.push(t);
      }
    }
    return { lo, hi, ticks };
  }
  const step = niceStep((hi - lo) / 5);
  const first = Math.floor(lo / step) * step, last = Math.ceil(hi / step) * step;
  const ticks: number[] = [];
  for (let k = 0; first + k * step <= last + step * 1e-9; k++) ticks.push(first + k * step);
  return { lo: first, hi: last, ticks };
}

function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  const r = raw / p;
  return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 5 ? 5 : 10) * p;
}

/** Short tick labels: 250k, 1.5M, 1e-4, 0.25. */
function fmt(v: number): string {
  const a = Math.abs(v);
  const trim = (x: number): string => String(parseFloat(x.toPrecision(4)));
  if (a === 0) return '0';
  if (a >= 1e6) return `${trim(v / 1e6)}M`;
  if (a >= 1e4) return `${trim(v / 1e3)}k`;
  if (a < 1e-3) {
    const [m, e] = v.toExponential(2).split('e');
    return `${parseFloat(m!)}e${Number(e)}`;
  }
  return trim(v);
}

function xml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&${({ '&': 'amp', '<': 'lt', '>': 'gt', '"': 'quot', "'": 'apos' } as Record<string, string>)[c]};`);
}

function pixels(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 200 || v > 10000) throw new ConfigError(`plot ${name} must be a whole number of pixels from 200 to 10000, got ${v}`);
  return v;
}
