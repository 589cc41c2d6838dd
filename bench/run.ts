/**
 * npm run bench: throughput of the current backend, as JSON (stdout and bench-results/).
 * Timings live here, never in tests. Later issues add native kernels and llama.cpp comparisons.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { createModel, generate, initBackend } from '../src/index.js';

function best(reps: number, fn: () => void): number {
  let min = Infinity;
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    fn();
    min = Math.min(min, performance.now() - t);
  }
  return min;
}

async function main(): Promise<void> {
  const backend = await initBackend();
  const results: Record<string, unknown>[] = [];

  for (const [m, k, n] of [[1, 1024, 1024], [128, 1024, 1024]] as const) {
    const a = tf.randomNormal([m, k]);
    const b = tf.randomNormal([n, k]);
    tf.matMul(a, b, false, true).dispose();
    const ms = best(3, () => tf.matMul(a, b, false, true).dataSync());
    results.push({ name: `matmul_transB_${m}x${k}x${n}`, ms, gflops: (2 * m * k * n) / ms / 1e6 });
    tf.dispose([a, b]);
  }

  const model = createModel('tiny');
  const prompt = Array.from({ length: 256 }, (_, i) => 1 + ((i * 7919) % 31999));
  await generate(model, prompt.slice(0, 8), { maxTokens: 2 });
  const r = await generate(model, prompt, { maxTokens: 32, stopTokens: [] });
  results.push({
    name: 'tiny_generate',
    prompt_tokens: prompt.length,
    prefill_tokens_per_s: (prompt.length * 1000) / r.timings.promptMs,
    decode_tokens_per_s: ((r.tokens.length - 1) * 1000) / r.timings.generateMs,
  });
  model.dispose();

  const report = {
    date: new Date().toISOString(),
    backend: backend.name,
    native: backend.native,
    cpus: os.cpus().length,
    cpu_model: os.cpus()[0]?.model,
    node: process.version,
    results,
  };
  const dir = path.resolve('bench-results');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, `bench-${Date.now()}.json`), JSON.stringify(report, null, 2) + '\n');
  process.stdout.write(JSON.stringify(report, null, 2) + '\n');
}

await main();
