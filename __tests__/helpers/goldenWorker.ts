/**
 * Runs tiny-lwm-text's expected.json prompts through model folders in a plain Node process (tfjs
 * inside jest's VM is ~100x slower) and prints what each model generated, as JSON on stdout.
 * Usage: node dist/__tests__/helpers/goldenWorker.js EXPECTED_JSON MODEL_DIR... (GOLDEN_DTYPE=bf16: linear weights in bf16; GOLDEN_KV_DTYPE=bf16: a bf16 KV cache)
 */
import * as fs from 'node:fs';
import { generate, initBackend, loadModel } from '../../src/index.js';

interface Case {
  name: string;
  prompt: number[];
  greedy: number[];
}

const [expectedFile, ...dirs] = process.argv.slice(2);
await initBackend();
const cases = (JSON.parse(fs.readFileSync(expectedFile!, 'utf8')) as { cases: Case[] }).cases;
const out: Record<string, { name: string; tokens: number[]; top: [number, number][][] }[]> = {};
for (const dir of dirs) {
  const model = loadModel(dir, { dtype: (process.env['GOLDEN_DTYPE'] ?? 'f32') as 'f32' | 'bf16' | 'int8' });
  model.kvDtype = (process.env['GOLDEN_KV_DTYPE'] ?? 'f32') as 'f32' | 'bf16';
  try {
    out[dir] = [];
    for (const c of cases) {
      const r = await generate(model, c.prompt, { maxTokens: c.greedy.length, topLogprobs: 5, stopTokens: [] });
      out[dir].push({ name: c.name, tokens: r.tokens, top: r.steps.map((s) => s.top!) });
    }
  } finally {
    model.dispose();
  }
}
process.stdout.write(JSON.stringify(out));
