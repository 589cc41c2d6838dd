import * as fs from 'node:fs';
import * as path from 'node:path';
import { createModel, defaultTokenizer, initBackend, InputError } from '../../../src/index.js';
import { runVideoNeedleGrid } from '../../../src/eval/videoNeedle.js';
import { saveTinyVqgan } from '../../helpers/media.js';

// Runs a 1x1 video needle grid on a random tiny vision model outside jest's VM (tfjs there is ~100x
// slower) and prints the results, plus the refusal of a clip too long for the context, as JSON.
const workDir = process.argv[2]!;
await initBackend();
const model = createModel('tiny-vision', { seed: 1 });
const vqgan = saveTinyVqgan(path.join(workDir, 'vqgan'));
const target = { model, tokenizer: defaultTokenizer(), vqgan };
try {
  const progress: number[] = [];
  const grid = { lengths: [3], depths: [50], rounds: 1, seed: 7, workDir, maxTokens: 4 };
  const results = await runVideoNeedleGrid(target, { ...grid, onProgress: (done) => progress.push(done) });
  const clip = path.join(workDir, 'clips', fs.readdirSync(path.join(workDir, 'clips'))[0]!);
  const mtime = fs.statSync(clip).mtimeMs;
  // The same case again: the same number and clip (not rewritten), the same greedy answer.
  const again = await runVideoNeedleGrid(target, grid);
  const clipReused = fs.statSync(clip).mtimeMs === mtime;
  // LWM's sampling keeps frames 0, 4 and 9 of 10: a needle aimed at second 3 moves to 4, where the model sees it.
  const sampled = await runVideoNeedleGrid(target, { lengths: [10], depths: [30], maxFrames: 3, source: 'color', workDir, maxTokens: 2 });
  let refusal = '';
  try {
    await runVideoNeedleGrid(target, { lengths: [3, 40], depths: [0], workDir });
  } catch (e) {
    refusal = e instanceof InputError ? e.message : `not an InputError: ${String(e)}`;
  }
  process.stdout.write(JSON.stringify({ results, again, clipReused, sampled, progress, refusal }));
} finally {
  model.dispose();
}
