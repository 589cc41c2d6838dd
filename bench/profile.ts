/**
 * Where the time goes: per-kernel totals of a prefill, a decode step and a training step of a
 * preset model, via tf.profile. `node dist/bench/profile.js [--preset 100m] [--seq 256] [--json]`.
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend, initParams, KVCache, LlamaModel, ParamStore, paramSpecs, presetConfig } from '../src/index.js';

interface Row {
  kernel: string;
  calls: number;
  ms: number;
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1]! : fallback;
}

async function profile(label: string, fn: () => void): Promise<{ label: string; wallMs: number; rows: Row[] }> {
  fn(); // warm-up: first calls pay allocation and JIT costs
  const t0 = performance.now();
  const info = await tf.profile(fn);
  const wallMs = performance.now() - t0;
  const by = new Map<string, Row>();
  for (const k of info.kernels) {
    const r = by.get(k.name) ?? { kernel: k.name, calls: 0, ms: 0 };
    r.calls++;
    r.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    by.set(k.name, r);
  }
  return { label, wallMs, rows: [...by.values()].sort((a, b) => b.ms - a.ms) };
}

async function main(): Promise<void> {
  const b = await initBackend();
  const preset = arg('preset', '100m');
  const seq = Number(arg('seq', '256'));
  const config = presetConfig(preset);
  const params = initParams(config, 0);
  const model = new LlamaModel(config, params);
  const ids = tf.tensor2d([Array.from({ length: seq }, (_, i) => 1 + ((i * 7919) % 31999))], [1, seq], 'int32');
  const results = [];

  results.push(await profile(`prefill ${seq}`, () => tf.tidy(() => void model.forward(ids, { lastOnly: true }).dataSync())));

  const cache = new KVCache(config.numLayers);
  tf.tidy(() => void model.forward(ids, { cache, lastOnly: true }).dataSync());
  const one = tf.tensor2d([[42]], [1, 1], 'int32');
  results.push(await profile(`decode (after ${seq})`, () => tf.tidy(() => void model.forward(one, { cache, lastOnly: true }).dataSync())));
  cache.dispose();

  // A training step: the same weights as variables, next-token cross-entropy, Adam.
  const vars = new Map<string, tf.Tensor>();
  for (const s of paramSpecs(config)) vars.set(s.name, tf.variable(params.get(s.name), true, s.name));
  const trainModel = new LlamaModel(config, new ParamStore(vars));
  const opt = tf.train.adam(1e-4);
  const inputs = ids.slice([0, 0], [1, seq - 1]) as tf.Tensor2D;
  const targets = ids.slice([0, 1], [1, seq - 1]);
  results.push(
    await profile(`train step ${seq - 1}`, () =>
      tf.tidy(() => {
        opt.minimize(() => {
          const logits = trainModel.forward(inputs);
          return tf.losses.softmaxCrossEntropy(tf.oneHot(tf.reshape(targets, [-1]), config.vocabSize), tf.reshape(logits, [-1, config.vocabSize])) as tf.Scalar;
        });
      }),
    ),
  );

  if (process.argv.includes('--json')) {
    process.stdout.write(JSON.stringify({ backend: b.name, native: b.nativeKernels, isa: b.isa, preset, seq, results }, null, 2) + '\n');
    return;
  }
  process.stdout.write(`backend ${b.name}, native: ${b.native ? b.nativeReason : 'off'}\n`);
  for (const r of results) {
    const total = r.rows.reduce((s, x) => s + x.ms, 0);
    process.stdout.write(`\n${r.label}: wall ${r.wallMs.toFixed(1)} ms, kernels ${total.toFixed(1)} ms\n`);
    for (const row of r.rows.slice(0, 12)) {
      process.stdout.write(`  ${row.kernel.padEnd(22)} ${String(row.calls).padStart(5)} calls ${row.ms.toFixed(1).padStart(9)} ms ${((100 * row.ms) / total).toFixed(1).padStart(5)}%\n`);
    }
  }
}

await main();
