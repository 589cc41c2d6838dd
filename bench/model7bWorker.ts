/**
 * One measured run of a model folder in its own process (so its peak RSS is its own): load with
 * the given weight dtype, prefill a prompt of random ids, decode greedily. Prints JSON.
 * node dist/bench/model7bWorker.js DIR DTYPE PROMPT_TOKENS DECODE_TOKENS [KV_DTYPE]
 */
import { generate, initBackend, loadModel, lowpNative, type KvDtype, type WeightDtype } from '../src/index.js';

const [dir, dtype, prompt, decode, kv] = process.argv.slice(2);
const info = await initBackend();
const t0 = performance.now();
const model = loadModel(dir!, { dtype: dtype as WeightDtype });
const loadSeconds = (performance.now() - t0) / 1000;
model.kvDtype = (kv ?? 'f32') as KvDtype;
const ids = Array.from({ length: Number(prompt) }, (_, i) => 100 + ((i * 7919) % 30000));
const r = await generate(model, ids, { maxTokens: Number(decode), stopTokens: [], prefillChunk: 512 });
const steps = r.steps.length;
process.stdout.write(
  JSON.stringify({
    backend: info.name,
    nativeKernels: info.native,
    lowpNative: lowpNative(),
    dtype,
    kvDtype: model.kvDtype,
    weightBytes: model.params.bytes,
    loadSeconds,
    promptTokens: ids.length,
    prefillSeconds: r.timings.promptMs / 1000,
    prefillTokensPerS: (ids.length * 1000) / r.timings.promptMs,
    decodeTokens: steps,
    // The first token comes with the prefill; the rest are decode steps.
    decodeTokensPerS: steps > 1 ? ((steps - 1) * 1000) / r.timings.generateMs : null,
  }) + '\n',
);
model.dispose();
