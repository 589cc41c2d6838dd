// One process of the training benchmark (alone, or one rank under `lwm launch`): times optimizer
// updates of a preset on a random row with every target weighted, prints JSON (rank 0).
import * as tf from '@tensorflow/tfjs';
import { createModel, detectLaunch, initBackend, layoutIndices, ProcessGroup, Trainer, type LossBatch } from '../src/index.js';

const [preset, seqArg, stepsArg, remat] = process.argv.slice(2) as [string, string, string, string | undefined];
const seq = Number(seqArg);
const steps = Number(stepsArg);
await initBackend();
const launched = detectLaunch();
const group = launched.size > 1 ? await ProcessGroup.init() : undefined;
const size = group?.size ?? 1;
const rank = group?.rank ?? 0;
const model = createModel(preset, { seed: 1, overrides: { maxSeqLen: Math.max(seq, 4096) } });
const trainer = new Trainer(model, { lr: () => 1e-4, group, layout: 'zigzag', remat: remat === 'remat' });
model.dispose();
const cols = size > 1 ? layoutIndices(seq, size, rank, 'zigzag') : Int32Array.from({ length: seq }, (_, i) => i);
const n = cols.length;
const batch: LossBatch = {
  rows: 1,
  length: n,
  inputTokens: Int32Array.from(cols, (c) => 1 + ((c * 7919) % 31999)),
  targetTokens: Int32Array.from(cols, (c) => 1 + (((c + 1) * 7919) % 31999)),
  inputVisionMask: new Uint8Array(n),
  targetVisionMask: new Uint8Array(n),
  segmentIds: new Int32Array(n),
  positions: Int32Array.from(cols),
  lossWeights: new Float32Array(n).fill(1 / seq),
};
trainer.step([batch]);
const times: number[] = [];
for (let i = 0; i < steps; i++) {
  group?.barrier();
  const t0 = performance.now();
  trainer.step([batch]);
  times.push(performance.now() - t0);
}
const ms = Math.min(...times);
if (rank === 0) process.stdout.write(JSON.stringify({ preset, seq, ranks: size, remat: remat === 'remat', stepMs: ms, tokensPerSecond: (seq * 1000) / ms, rssMiB: process.memoryUsage().rss / 2 ** 20, numTensors: tf.memory().numTensors }) + '\n');
trainer.dispose();
await group?.close();
