/**
 * Chat throughput as a user sees it: ChatSession prompt speed (whole prefill, chunked through the
 * KV cache), time to first token and generation speed, for the tiny and ~100M presets; a 4K
 * document on 100m; and with --long (or LWM_BENCH_LONG=1) a 32K-token document on 100m.
 * Standalone: node dist/bench/chat.js [--long] prints JSON.
 */
import { fileURLToPath } from 'node:url';
import { ChatSession, createModel, defaultTokenizer, initBackend } from '../src/index.js';

export interface ChatRun {
  preset: string;
  documentTokens: number;
  promptTokens: number;
  promptTokensPerS: number;
  timeToFirstTokenMs: number;
  generated: number;
  generateTokensPerS: number;
}

/** A document of about `tokens` tokens of plain words (deterministic). */
function document(tokens: number): string {
  const words = 'the river keeper counted boats at night while the light turned north over stone and sea'.split(' ');
  const out: string[] = [];
  // About 1.06 tokens per word with this vocabulary; the exact count is reported.
  for (let i = 0; out.length < tokens / 1.07; i++) out.push(words[(i * 7 + (i >> 3)) % words.length]!);
  return out.join(' ');
}

async function run(preset: string, docTokens: number, generate: number, context: number): Promise<ChatRun> {
  const model = createModel(preset, { seed: 1, overrides: { maxSeqLen: context, ropeTheta: context > 4096 ? 1e6 : 10000 } });
  const tok = defaultTokenizer();
  const s = new ChatSession(model, tok, { prefillChunk: 512 });
  try {
    const doc = docTokens ? document(docTokens) : undefined;
    const r = await s.reply({ text: 'What did the keeper count?', document: doc }, { maxTokens: generate, stopTokens: [] });
    return {
      preset,
      documentTokens: docTokens,
      promptTokens: r.promptTokens,
      promptTokensPerS: (r.promptTokens * 1000) / r.timings.promptMs,
      timeToFirstTokenMs: r.timings.promptMs,
      generated: r.tokens.length,
      generateTokensPerS: ((r.tokens.length - 1) * 1000) / r.timings.generateMs,
    };
  } finally {
    s.dispose();
    model.dispose();
  }
}

export async function chatBench(quick: boolean, long: boolean): Promise<ChatRun[]> {
  const plan: [string, number, number, number][] = [['tiny', 0, 64, 4096], ['100m', 0, quick ? 16 : 32, 4096]];
  if (!quick) plan.push(['100m', 4000, 32, 8192]);
  if (long) plan.push(['100m', 32000, 8, 32768]);
  const runs: ChatRun[] = [];
  for (const p of plan) {
    runs.push(await run(...p));
    process.stderr.write(`chat bench: ${JSON.stringify(runs.at(-1))}\n`);
  }
  return runs;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  await initBackend();
  const runs = await chatBench(process.argv.includes('--quick'), process.argv.includes('--long') || process.env['LWM_BENCH_LONG'] === '1');
  process.stdout.write(JSON.stringify(runs, null, 2) + '\n');
}
