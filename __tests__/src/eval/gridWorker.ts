/**
 * Runs small retrieval grids on the random tiny model in a plain Node process (tfjs inside jest's
 * VM is ~100x slower) and prints what run.test.ts checks, as JSON on stdout.
 */
import * as tf from '@tensorflow/tfjs';
import { createModel, defaultTokenizer, initBackend, KVCache, prefillCache } from '../../../src/index.js';
import { runRetrievalGrid, type RetrievalGridOptions } from '../../../src/eval/run.js';

await initBackend();
const model = createModel('tiny', { seed: 3 });
const tok = defaultTokenizer();
const grid: RetrievalGridOptions = { contexts: [200, 300], depths: [0, 100], rounds: 1, maxTokens: 16, seed: 7 };
const progress: number[][] = [];

const before = tf.memory().numTensors;
const needle = await runRetrievalGrid(model, tok, { ...grid, onProgress: (d, n, eta) => progress.push([d, n, eta]) });
const afterNeedle = tf.memory().numTensors;
const again = await runRetrievalGrid(model, tok, grid);
const passkey = await runRetrievalGrid(model, tok, { ...grid, kind: 'passkey' });
const multi = await runRetrievalGrid(model, tok, { contexts: [300], depths: [10, 40, 70], rounds: 2, needles: 3, retrieve: 2, maxTokens: 4 });

// The --sp path: a prefill hook that fills a cache (here locally) must answer the same.
let hooked = 0;
const viaHook = await runRetrievalGrid(model, tok, {
  ...grid,
  prefill: async (tokens) => {
    hooked++;
    const cache = new KVCache(model.config.numLayers);
    await prefillCache(model, tokens, cache);
    return cache;
  },
});
const helper = await runRetrievalGrid(model, tok, { ...grid, prefill: async () => null });
const ac = new AbortController();
const aborted = await runRetrievalGrid(model, tok, { ...grid, signal: ac.signal, onRound: () => ac.abort() });
const after = tf.memory().numTensors;
model.dispose();

process.stdout.write(JSON.stringify({ needle, again, passkey, multi, viaHook, hooked, helper, aborted, progress, tensors: { before, afterNeedle, after } }));
