import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, describe, expect, it } from '@jest/globals';
import {
  ChatSession,
  conversationTokens,
  generate,
  InputError,
  initBackend,
  loadModel,
  loadTokenizer,
  userTurnTokens,
} from '../../../src/index.js';
import { fixture, tmpDir } from '../../helpers/paths.js';

await initBackend();
const dir = fixture('tiny-lwm-text');
const model = loadModel(dir);
const tok = loadTokenizer(dir);
afterAll(() => model.dispose());

const greedy = { maxTokens: 10, temperature: 0, stopTokens: [] as number[] };

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Next-token logits after `tokens`, computed from scratch (no history, no prompt cache). */
async function freshLogits(tokens: number[]): Promise<Float32Array> {
  let out: Float32Array | null = null;
  await generate(model, tokens, { maxTokens: 1, onLogits: (l) => (out = Float32Array.from(l)) });
  return out!;
}

describe('ChatSession on the tiny fixture model', () => {
  it('answers greedily with exactly what generate gives for the same template tokens', async () => {
    const s = new ChatSession(model, tok);
    try {
      const reply = await s.reply({ text: 'What is the capital of France?' }, greedy);
      const prompt = userTurnTokens(tok, { text: 'What is the capital of France?' }, true).tokens;
      const ref = await generate(model, prompt, greedy);
      expect(reply.tokens).toEqual(ref.tokens);
      expect(reply.text).toBe(tok.decode(ref.tokens));
      expect(reply.promptTokens).toBe(prompt.length);
    } finally {
      s.dispose();
    }
  });

  it('runs a second turn through the KV cache with the logits of recomputing the whole history (1e-4)', async () => {
    const s = new ChatSession(model, tok);
    try {
      const first = await s.reply({ text: 'Name a colour.' }, greedy);
      let cached: Float32Array | null = null;
      await s.reply({ text: 'And another one?' }, { ...greedy, onLogits: (l, step) => step === 0 && (cached = Float32Array.from(l)) });
      const history = conversationTokens(tok, [{ user: { text: 'Name a colour.' }, answer: first.tokens }, { user: { text: 'And another one?' } }]).tokens;
      expect(s.tokens.tokens.slice(0, history.length)).toEqual(history);
      // The second turn ran only its own tokens (plus the first answer's last one).
      expect(s.turns).toBe(2);
      expect(maxAbsDiff(cached!, await freshLogits(history))).toBeLessThan(1e-4);
    } finally {
      s.dispose();
    }
  });

  it('cuts the answer exactly at a stop string', async () => {
    const s = new ChatSession(model, tok);
    const full = (await s.reply({ text: 'Tell me a story.' }, { ...greedy, maxTokens: 16 })).text;
    s.reset();
    const stop = full.slice(6, 9);
    const cut = await s.reply({ text: 'Tell me a story.' }, { ...greedy, maxTokens: 16, stop: [stop] });
    s.dispose();
    expect(cut.text).toBe(full.slice(0, full.indexOf(stop)));
    expect(cut.stoppedBy).toBe('stop-string');
  });

  it('a saved prompt cache gives identical next-token logits when loaded, and a shared document start is reused', async () => {
    const work = tmpDir('prompt-cache');
    const file = path.join(work, 'doc.kv');
    const document = 'The lighthouse keeper counted ships every night. '.repeat(20);
    const opts = { ...greedy, maxTokens: 3 };
    const capture = () => {
      const box: { logits: Float32Array | null } = { logits: null };
      return { box, onLogits: (l: Float32Array, step: number) => step === 0 && (box.logits = Float32Array.from(l)) };
    };
    const a = capture();
    const s1 = new ChatSession(model, tok, { promptCache: file, prefillChunk: 64 });
    const r1 = await s1.reply({ text: 'How many ships?', document }, { ...opts, onLogits: a.onLogits });
    s1.dispose();
    expect(r1.reusedTokens).toBe(0);
    expect(fs.existsSync(file)).toBe(true);

    const b = capture();
    const s2 = new ChatSession(model, tok, { promptCache: file, prefillChunk: 64 });
    const r2 = await s2.reply({ text: 'How many ships?', document }, { ...opts, onLogits: b.onLogits });
    s2.dispose();
    expect(r2.reusedTokens).toBe(r1.promptTokens - 1);
    expect(Array.from(b.box.logits!)).toEqual(Array.from(a.box.logits!));
    expect(r2.tokens).toEqual(r1.tokens);

    const c = capture();
    const s3 = new ChatSession(model, tok, { promptCache: file, prefillChunk: 64 });
    const r3 = await s3.reply({ text: 'Who counted them?', document }, { ...opts, onLogits: c.onLogits });
    s3.dispose();
    const docLen = userTurnTokens(tok, { text: 'x', document }, true).documentTokens + 1;
    expect(r3.reusedTokens).toBe(docLen);
    const prompt = userTurnTokens(tok, { text: 'Who counted them?', document }, true).tokens;
    expect(maxAbsDiff(c.box.logits!, await freshLogits(prompt))).toBeLessThan(1e-4);
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('refuses a prompt cache made with other weights', async () => {
    const work = tmpDir('prompt-cache-other');
    const file = path.join(work, 'doc.kv');
    const s1 = new ChatSession(model, tok, { promptCache: file });
    await s1.reply({ text: 'Hello', document: 'Some text here.' }, { ...greedy, maxTokens: 1 });
    s1.dispose();
    const other = loadModel(dir, { ropeTheta: 10000 });
    const s2 = new ChatSession(other, tok, { promptCache: file });
    await expect(s2.reply({ text: 'Hello', document: 'Some text here.' }, greedy)).rejects.toThrow(/other model weights/);
    s2.dispose();
    other.dispose();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('says how many tokens an over-long message has and how many fit; --truncate cuts the document instead', async () => {
    const small = loadModel(dir, { maxSeqLen: 96 });
    const s = new ChatSession(small, tok);
    const document = 'word '.repeat(200);
    await expect(s.reply({ text: 'Count the words.', document }, greedy)).rejects.toThrow(/would need \d+ tokens .* context is 96; pass --truncate/);
    await expect(s.reply({ text: 'Count the words.' }, greedy)).resolves.toBeDefined();
    s.reset();
    const r = await s.reply({ text: 'Count the words.', document }, { ...greedy, truncate: true });
    expect(r.truncatedTokens).toBeGreaterThan(0);
    expect(r.promptTokens + greedy.maxTokens).toBeLessThanOrEqual(96);
    s.dispose();
    small.dispose();
    await expect(Promise.resolve()).resolves.toBeUndefined();
  });

  it('leaves the conversation unchanged after a refused message, and frees every tensor', async () => {
    const before = tf.memory().numTensors;
    const s = new ChatSession(model, tok);
    await s.reply({ text: 'Hi' }, greedy);
    const kept = s.tokens.tokens.length;
    await expect(s.reply({ text: 'x', images: ['/nonexistent.png'] }, greedy)).rejects.toThrow(InputError);
    expect(s.tokens.tokens.length).toBe(kept);
    // An abandoned stream (a consumer that stops reading) rolls back too.
    const it = s.send({ text: 'Go on' }, greedy);
    await it.next();
    await it.return(undefined as never);
    expect(s.tokens.tokens.length).toBe(kept);
    await s.reply({ text: 'Go on' }, greedy);
    s.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});
