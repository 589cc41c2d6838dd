import * as fs from 'node:fs';
import { InputError } from '../../ops/errors.js';
import { jsonlLines, parseJsonlLine } from '../../data/examples.js';
import { passkeyPrompt, scorePasskey } from '../../data/passkey.js';
import { loadTokenizer } from '../../data/tokenizer.js';
import { loadModel } from '../checkpoint/modelDir.js';
import { generate } from '../generate.js';

export interface PasskeyScore {
  correct: number;
  total: number;
  accuracy: number;
}

/**
 * Greedy answers of a model folder to held-out passkey records (JSONL with text, question and
 * passkey), prompted exactly as training laid them out: BOS + the unlossed fields joined by a space.
 */
export async function passkeyAccuracy(modelDir: string, manifest: string, opts: { limit?: number } = {}): Promise<PasskeyScore> {
  const model = loadModel(modelDir);
  const tok = loadTokenizer(modelDir);
  let correct = 0;
  let total = 0;
  try {
    for (const l of jsonlLines(fs.readFileSync(manifest, 'utf8')).slice(0, opts.limit ?? Infinity)) {
      const r = parseJsonlLine(l.text, l.line, manifest).value as { text?: unknown; question?: unknown; passkey?: unknown };
      if (typeof r.text !== 'string' || typeof r.question !== 'string' || typeof r.passkey !== 'string') {
        throw new InputError(`${manifest}:${l.line}: a passkey record needs string text, question and passkey`);
      }
      const prompt = [tok.bosId, ...tok.encode(passkeyPrompt({ text: r.text, question: r.question }))];
      const out = await generate(model, prompt, { maxTokens: r.passkey.length + 2, stopTokens: [tok.eosId] });
      if (scorePasskey(tok.decode(out.steps.map((s) => s.token)), r.passkey)) correct++;
      total++;
    }
  } finally {
    model.dispose();
  }
  return { correct, total, accuracy: total ? correct / total : 0 };
}
