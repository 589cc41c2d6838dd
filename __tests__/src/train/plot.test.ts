import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from '@jest/globals';
import { ConfigError } from '../../../ops/errors.js';
import { lossCurvePng, lossCurveSvg } from '../../../src/train/plot.js';
import { oneLineError } from '../../helpers/tensors.js';
import { tmpDir } from '../../helpers/paths.js';


async function sizeOf(file: string): Promise<[number | undefined, number | undefined, string | undefined]> {
  const m = await sharp(file).metadata();
  return [m.width, m.height, m.format];
}

const train = { name: 'train', points: Array.from({ length: 300 }, (_, i) => [i * 10, 10.4 * Math.exp(-i / 60) + 1.5] as [number, number]) };
const evalLoss = { name: 'eval', points: [[0, 10.3], [1000, 3.1], [2000, 2.2], [2990, 1.9]] as [number, number][] };

describe('lossCurvePng', () => {
  it('writes a PNG of the requested size and leaves no temporary file', async () => {
    const dir = tmpDir('plot');
    const file = path.join(dir, 'loss.png');
    await lossCurvePng(file, [train, evalLoss], { title: 'LWM <debug> & "friends"', width: 640, height: 360 });
    expect(await sizeOf(file)).toEqual([640, 360, 'png']);
    await lossCurvePng(file, [train, evalLoss], { logY: true });
    expect(await sizeOf(file)).toEqual([800, 500, 'png']);
    expect(fs.readdirSync(dir)).toEqual(['loss.png']);
  });

  it('handles no series, empty series, a single point and non-finite values', async () => {
    const dir = tmpDir('plot');
    const inputs = [
      [],
      [{ name: 'train', points: [] }],
      [{ name: 'train', points: [[5, 2.5]] as [number, number][] }],
      [{ name: 'train', points: [[0, NaN], [1, Infinity], [NaN, 1], [2, 3], [3, -Infinity], [4, 2]] as [number, number][] }],
      [{ name: 'train', points: [[0, 0], [1, -1], [2, 5]] as [number, number][] }],
    ];
    for (const [i, series] of inputs.entries()) {
      for (const logY of [false, true]) {
        const file = path.join(dir, `p${i}${logY ? 'log' : ''}.png`);
        await lossCurvePng(file, series, { width: 300, height: 200, logY });
        expect(await sizeOf(file)).toEqual([300, 200, 'png']);
      }
    }
    expect(fs.readdirSync(dir).every((f) => /^p\d(log)?\.png$/.test(f))).toBe(true);
  });

  it('escapes text and draws only finite points', () => {
    const svg = lossCurveSvg([{ name: 'a<b>&"c"', points: [[0, 1], [1, NaN], [2, 3]] }], { title: "it's <b>", xLabel: 'x&y' });
    expect(svg).toContain('a&lt;b&gt;&amp;&quot;c&quot;');
    expect(svg).toContain('it&apos;s &lt;b&gt;');
    expect(svg).toContain('x&amp;y');
    expect(svg).not.toMatch(/NaN|Infinity/);
    expect(svg.match(/<circle /g)).toHaveLength(2);
    expect(lossCurveSvg([])).toContain('no data');
  });

  it('rejects sizes it cannot draw, and a failed render leaves no temporary file', async () => {
    expect(oneLineError(() => lossCurveSvg([], { width: 10 }), ConfigError)).toMatch(/plot width must be a whole number of pixels from 200 to 10000, got 10/);
    const dir = tmpDir('plot');
    await expect(lossCurvePng(path.join(dir, 'missing', 'x.png'), [train])).rejects.toThrow();
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});
