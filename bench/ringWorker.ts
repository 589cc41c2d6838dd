// One process of the ring benchmark: ring attention forward and forward+backward on this rank's
// share of a sequence, alone (no launcher: a group of one) or as a rank under `lwm launch`.
//   node ringWorker.js --seq S --heads H --dim D --layout L --iters N
// Rank 0 prints one JSON line.
import * as tf from '@tensorflow/tfjs';
import { initBackend, ringAttention, SoloGroup, type RingGroup, type RingLayout } from '../src/index.js';
import { ProcessGroup } from '../src/distributed/processGroup.js';
import { detectLaunch } from '../src/distributed/env.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
}

const seq = Number(arg('seq', '8192'));
const heads = Number(arg('heads', '8'));
const dim = Number(arg('dim', '128'));
const iters = Number(arg('iters', '2'));
const layout = arg('layout', 'zigzag') as RingLayout;

const info = await initBackend();
const launched = detectLaunch().size > 1;
const pg = launched ? await ProcessGroup.init() : null;
const group: RingGroup = pg ?? new SoloGroup();
const c = seq / group.size;
const rnd = (seed: number) => tf.randomNormal([1, c, heads, dim], 0, 1, 'float32', seed + 17 * group.rank) as tf.Tensor4D;
const [q, k, v, w] = [rnd(1), rnd(2), rnd(3), rnd(4)];
const opts = { group, layout, causal: true };
// Nothing returned from tidy: it would walk a typed array element by element.
const fwd = () => {
  const o = ringAttention(q, k, v, opts);
  o.dataSync();
  o.dispose();
};
const fwdBwd = () =>
  tf.tidy(() => {
    const g = tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => tf.sum(tf.mul(ringAttention(a as tf.Tensor4D, b as tf.Tensor4D, d as tf.Tensor4D, opts), w)))([q, k, v]);
    g.forEach((x) => x.dataSync());
  });

function timed(fn: () => void): { ms: number; waitMs: number } {
  let best = { ms: Infinity, waitMs: 0 };
  for (let i = 0; i < iters; i++) {
    pg?.barrier();
    pg?.resetStats();
    const t = performance.now();
    fn();
    const ms = performance.now() - t;
    const waitMs = pg ? pg.stats().waitMs : 0;
    if (ms < best.ms) best = { ms, waitMs };
  }
  return best;
}

fwd();
const f = timed(fwd);
const fb = timed(fwdBwd);
// Mean over ranks of the time each spent blocked on blocks; the slowest rank sets the pace.
const stats = Float32Array.of(f.ms, f.waitMs, fb.ms, fb.waitMs, process.resourceUsage().maxRSS / 1024);
const maxima = Float32Array.from(stats);
if (pg) {
  pg.allReduce(stats);
  for (let i = 0; i < stats.length; i++) stats[i]! /= group.size;
}
if (group.rank === 0) {
  const steps = group.size;
  process.stdout.write(
    JSON.stringify({
      ranks: group.size,
      threadsPerRank: info.threads,
      seq,
      localTokens: c,
      heads,
      dim,
      layout,
      fwdMs: stats[0],
      fwdWaitMsPerStep: stats[1]! / steps,
      fwdBwdMs: stats[2],
      fwdBwdWaitMsPerStep: stats[3]! / (2 * steps),
      maxRssMiB: maxima[4],
    }) + '\n',
  );
}
pg?.barrier();
await pg?.close();
