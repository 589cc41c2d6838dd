// Peer benchmark and cross-check: llama.cpp (through node-llama-cpp, CPU only) on a GGUF that lwm
// wrote. Kept in its own package so llama.cpp's binaries never enter lwm's dependency tree.
//
//   node llamacpp.mjs --gguf FILE [--prompt-tokens 512] [--decode-tokens 64] [--threads 2] [--kv F16|F32]
//   node llamacpp.mjs --gguf FILE --check-expected expected.json [--threads 2] [--tolerance 1e-3]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';

const { values: args } = parseArgs({
  options: {
    gguf: { type: 'string' },
    'prompt-tokens': { type: 'string', default: '512' },
    'decode-tokens': { type: 'string', default: '64' },
    threads: { type: 'string', default: '2' },
    'check-expected': { type: 'string' },
    tolerance: { type: 'string', default: '1e-3' },
    seed: { type: 'string', default: '1' },
    kv: { type: 'string', default: 'F16' },
  },
});

function positiveInt(name) {
  const v = Number(args[name]);
  if (!Number.isInteger(v) || v <= 0) fail(`--${name} must be a positive integer, got ${JSON.stringify(args[name])}`);
  return v;
}

function fail(message) {
  console.error(`llamacpp.mjs: ${message}`);
  process.exit(2);
}

if (!args.gguf) fail('--gguf FILE is required');
const threads = positiveInt('threads');

// build: 'never' so a missing prebuilt binary fails here instead of trying to download and compile llama.cpp.
const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: args.gguf, gpuLayers: 0 });
const info = { llama_cpp: llama.llamaCppRelease.release, node_llama_cpp: '3.21.1', gpu: llama.gpu, threads };

try {
  if (args['check-expected']) await check(args['check-expected']);
  else await bench();
} finally {
  await model.dispose();
  await llama.dispose();
}

/**
 * Top-k [id, natural-log probability] from node-llama-cpp's (sorted) probability map. The map sums to
 * 1 only to about 1e-4 (a float32 softmax over the whole vocabulary), so it is renormalized first.
 */
function topOf(probabilities, k) {
  let sum = 0;
  for (const p of probabilities.values()) sum += p;
  const out = [];
  for (const [id, p] of probabilities) {
    if (out.length === k) break;
    out.push([id, Math.log(p / sum)]);
  }
  return out;
}

/** Largest log-prob difference, or Infinity when the top ids differ. */
function compareTop(got, want) {
  let diff = 0;
  for (let i = 0; i < want.length; i++) {
    if (!got[i] || got[i][0] !== want[i][0]) return Infinity;
    diff = Math.max(diff, Math.abs(got[i][1] - want[i][1]));
  }
  return diff;
}

async function check(file) {
  const expected = JSON.parse(readFileSync(file, 'utf8'));
  const tolerance = Number(args.tolerance);
  const longest = Math.max(...expected.cases.map((c) => c.prompt.length + c.greedy.length));
  // As the reference was made: f32 KV cache, no flash attention.
  const context = await model.createContext({
    contextSize: longest + 16,
    batchSize: longest + 16,
    threads,
    flashAttention: false,
    experimentalKvCacheKeyType: 'F32',
    experimentalKvCacheValueType: 'F32',
  });
  const next = { generateNext: { token: true, probabilities: true } };
  const seq = context.getSequence();
  let allPass = true;
  try {
    for (const c of expected.cases) {
      await seq.clearHistory();
      const prompt = await seq.controlledEvaluate(c.prompt.map((t) => [t, next]));
      let promptDiff = 0;
      c.prompt_top.forEach((want, i) => {
        promptDiff = Math.max(promptDiff, compareTop(topOf(prompt[i].next.probabilities, want.length), want));
      });
      // Greedy decoding feeds back llama.cpp's own choice, so a wrong token shows where it first diverged.
      const greedy = [];
      let stepDiff = 0;
      let out = prompt[c.prompt.length - 1].next;
      for (let k = 0; k < c.greedy.length; k++) {
        greedy.push(out.token);
        stepDiff = Math.max(stepDiff, compareTop(topOf(out.probabilities, c.steps[k].top.length), c.steps[k].top));
        if (k + 1 < c.greedy.length) out = (await seq.controlledEvaluate([[out.token, next]]))[0].next;
      }
      const greedyOk = greedy.every((t, i) => t === c.greedy[i]);
      const pass = greedyOk && promptDiff <= tolerance && stepDiff <= tolerance;
      allPass &&= pass;
      console.log(JSON.stringify({
        case: c.name,
        pass,
        greedy_match: greedyOk,
        greedy: greedyOk ? undefined : greedy,
        expected_greedy: greedyOk ? undefined : c.greedy,
        // Infinity (top-k ids differ) is not JSON.
        max_logprob_diff_prompt: Number.isFinite(promptDiff) ? promptDiff : 'top ids differ',
        max_logprob_diff_steps: Number.isFinite(stepDiff) ? stepDiff : 'top ids differ',
      }));
    }
  } finally {
    await context.dispose();
  }
  console.log(JSON.stringify({ check: file, pass: allPass, tolerance, ...info }));
  if (!allPass) process.exitCode = 1;
}

/** A fixed pseudo-random prompt (BOS first), so every run and every peer sees the same tokens. */
function promptTokens(n, vocab, seed) {
  let s = seed >>> 0 || 1;
  const out = [1];
  while (out.length < n) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out.push(3 + ((s >>> 0) % (vocab - 3)));
  }
  return out;
}

async function bench() {
  const n = positiveInt('prompt-tokens');
  const m = positiveInt('decode-tokens');
  const vocab = model.fileInsights.metadata?.llama?.vocab_size ?? 32000;
  const kv = args.kv.toUpperCase();
  if (kv !== 'F16' && kv !== 'F32') fail(`--kv must be F16 (llama.cpp's default) or F32, got ${JSON.stringify(args.kv)}`);
  const context = await model.createContext({
    contextSize: n + m + 16,
    batchSize: n,
    threads,
    flashAttention: false,
    experimentalKvCacheKeyType: kv,
    experimentalKvCacheValueType: kv,
  });
  try {
    // Warm-up (first-use allocations, page faults on the weights) outside the timed runs.
    const warm = context.getSequence();
    await warm.evaluateWithoutGeneratingNewTokens(promptTokens(Math.min(n, 32), vocab, 99));
    warm.dispose();

    const seq = context.getSequence();
    const prompt = promptTokens(n, vocab, Number(args.seed));
    const last = prompt.length - 1;
    const t0 = performance.now();
    const pre = await seq.controlledEvaluate([...prompt.slice(0, last), [prompt[last], { generateNext: { token: true } }]]);
    const t1 = performance.now();
    const token = pre[last].next.token;
    const generated = [];
    // Each iteration evaluates the previous token and greedily picks the next: one decode step.
    const it = seq.evaluate([token], { temperature: 0 });
    const t2 = performance.now();
    for (let i = 0; i < m; i++) {
      const r = await it.next();
      if (r.done) break;
      generated.push(r.value);
    }
    const t3 = performance.now();
    await it.return();
    seq.dispose();
    const prefillS = (t1 - t0) / 1000;
    const decodeS = (t3 - t2) / 1000;
    console.log(JSON.stringify({
      engine: 'llama.cpp',
      model: args.gguf,
      prefill_tokens: n,
      decode_tokens: generated.length,
      prefill_s: prefillS,
      decode_s: decodeS,
      prefill_tokens_per_s: n / prefillS,
      decode_tokens_per_s: generated.length / decodeS,
      kv_cache: kv,
      ...info,
    }));
  } finally {
    await context.dispose();
  }
}
