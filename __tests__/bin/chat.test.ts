import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { createModel, defaultTokenizer, saveModel, userTurnTokens } from '../../src/index.js';
import { cliPath, fixture, tmpDir } from '../helpers/paths.js';
import { makeClip, saveTinyVqgan } from '../helpers/media.js';
import { expectOneLineError, lwm } from '../helpers/cli.js';

const model = fixture('tiny-lwm-text');
const tok = defaultTokenizer();

/** Tokens of BOS, the system text, "USER:" and the document: what --sp prefills. */
function documentTokens(file: string): number {
  return userTurnTokens(tok, { text: '', document: fs.readFileSync(file, 'utf8') }, true).documentTokens + 1;
}
let work: string;
beforeAll(() => {
  work = tmpDir('chat-cli');
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('lwm chat', () => {
  it('answers one question greedily with exactly what lwm generate gives on the same template tokens', () => {
    const q = 'What is the capital of France?';
    const chat = lwm(['chat', '-m', model, '-p', q, '-n', '12', '--json']);
    expect(chat.code).toBe(0);
    const ids = userTurnTokens(tok, { text: q }, true).tokens;
    const gen = lwm(['generate', '-m', model, '--prompt-tokens', ids.join(','), '-n', '12', '--json']);
    expect(gen.code).toBe(0);
    const a = JSON.parse(chat.stdout);
    const b = JSON.parse(gen.stdout);
    expect(a.tokens).toEqual(b.tokens);
    expect(a.text).toBe(b.text);
    expect(a.usage.prompt_tokens).toBe(ids.length);
    // Without --json the same text streams to stdout.
    expect(lwm(['chat', '-m', model, '-p', q, '-n', '12']).stdout).toBe(`${b.text}\n`);
  });

  it('applies every --stop of a repeated flag, cutting the answer before the first one found', () => {
    const full = JSON.parse(lwm(['chat', '-m', model, '-p', 'Tell me a story', '-n', '16', '--json']).stdout).text as string;
    const stop = full.slice(8, 12);
    const r = JSON.parse(lwm(['chat', '-m', model, '-p', 'Tell me a story', '-n', '16', '--json', '--stop', 'no such text', '--stop', stop]).stdout);
    expect(r.text).toBe(full.slice(0, full.indexOf(stop)));
    expect(r.stopped_by).toBe('stop-string');
  });

  it('keeps a multi-turn conversation over stdin; /reset starts again', () => {
    const q = 'What is the capital of France?';
    const r = lwm(['chat', '-m', model, '-n', '6', '--json'], { input: `${q}\nAnd of Italy?\n/reset\n${q}\n` });
    expect(r.code).toBe(0);
    const turns = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(turns).toHaveLength(3);
    const single = JSON.parse(lwm(['chat', '-m', model, '-p', q, '-n', '6', '--json']).stdout);
    expect(turns[0].tokens).toEqual(single.tokens);
    expect(turns[2].tokens).toEqual(single.tokens);
    // The second turn is only "</s>USER: And of Italy? ASSISTANT:".
    expect(turns[1].usage.prompt_tokens).toBe(1 + userTurnTokens(tok, { text: 'And of Italy?' }, false).tokens.length);
    expect(r.stderr).toMatch(/new conversation/);
  });

  it('reuses a --prompt-cache for a second question about the same document', () => {
    const doc = path.join(work, 'book.txt');
    fs.writeFileSync(doc, 'Once upon a time a fox lived by the river and counted the boats. '.repeat(30));
    const cache = path.join(work, 'book.kv');
    const one = JSON.parse(lwm(['chat', '-m', model, '-f', doc, '--prompt-cache', cache, '-p', 'Who lived there?', '-n', '4', '--json']).stdout);
    expect(one.usage.reused_prompt_tokens).toBe(0);
    const two = lwm(['chat', '-m', model, '-f', doc, '--prompt-cache', cache, '-p', 'What did it count?', '-n', '4', '--json', '--timings']);
    expect(two.code).toBe(0);
    expect(JSON.parse(two.stdout).usage.reused_prompt_tokens).toBe(documentTokens(doc));
    expect(two.stderr).toMatch(/prompt: \d+ tokens \(\d+ already cached\), [\d.]+ tok\/s, time to first token \d+ ms \| generated: 4 tokens/);
  });

  it('encodes a video once: a second run reads the cached codes without ffmpeg or the VQGAN', () => {
    const modelDir = path.join(work, 'vision-model');
    const m = createModel('tiny-vision', { overrides: { maxSeqLen: 4096 } });
    saveModel(modelDir, m);
    m.dispose();
    saveTinyVqgan(path.join(modelDir, 'vqgan'));
    const clip = makeClip(work, 'clip.mp4', 64, 48, 10, 6);
    const codes = path.join(work, 'codes');
    const args = ['chat', '-m', modelDir, '--video', clip, '--max-frames', '3', '--codes-cache', codes, '-p', 'What happens?', '-n', '3', '--json'];
    const first = lwm(args);
    expect(first.code).toBe(0);
    const a = JSON.parse(first.stdout);
    expect(a.media).toEqual([expect.objectContaining({ kind: 'video', frames: 3, cached: false })]);
    // The prompt holds the video: 3 frames x 257 tokens + <vision></vision>.
    expect(a.usage.prompt_tokens).toBeGreaterThan(3 * 257 + 6);
    const second = lwm(args, { env: { LWM_FFMPEG: path.join(work, 'no-such-ffmpeg') } });
    expect(second.code).toBe(0);
    const b = JSON.parse(second.stdout);
    expect(b.media).toEqual([expect.objectContaining({ frames: 3, cached: true })]);
    expect(b.tokens).toEqual(a.tokens);
    // Proof the check can fail: a new file with the broken ffmpeg does need decoding.
    const other = makeClip(work, 'other.mp4', 64, 48, 10, 4);
    const third = lwm([...args.slice(0, 3), '--video', other, ...args.slice(5)], { env: { LWM_FFMPEG: path.join(work, 'no-such-ffmpeg') } });
    expect(third.code).toBe(1);

    // --vision-first: the video precedes the question, so its prefill is cached for a new question.
    const pc = path.join(work, 'video.kv');
    const ask = (q: string) => JSON.parse(lwm([...args.slice(0, 9), '--vision-first', '--prompt-cache', pc, '-p', q, '-n', '2', '--json']).stdout);
    expect(ask('What happens?').usage.reused_prompt_tokens).toBe(0);
    const again = ask('Which colours are there?');
    const before = userTurnTokens(tok, { text: 'x', vision: [new Array(3 * 256).fill(0)] }, true, { visionFirst: true });
    expect(again.usage.reused_prompt_tokens).toBe(before.tokens.length - tok.encode('x ASSISTANT:').length);
  });

  it('--sp 2 prefills the document with RingAttention over two processes and answers as one process does', () => {
    const doc = path.join(work, 'ring.txt');
    // An odd token count, so the last rank's share is padded.
    fs.writeFileSync(doc, 'The keeper of the northern light wrote down every ship that passed, and the sea was calm. '.repeat(25) + 'End');
    const one = JSON.parse(lwm(['chat', '-m', model, '-f', doc, '-p', 'What did the keeper write?', '-n', '8', '--json']).stdout);
    const r = lwm(['chat', '-m', model, '-f', doc, '-p', 'What did the keeper write?', '-n', '8', '--json', '--sp', '2', '--timings']);
    expect(r.code).toBe(0);
    const two = JSON.parse(r.stdout);
    expect(two.tokens).toEqual(one.tokens);
    expect(two.usage.reused_prompt_tokens).toBe(documentTokens(doc));
    expect(r.stderr).toMatch(/document: \d+ tokens prefilled over 2 processes/);
    // The REPL stays on rank 0 (stdin and stdout are its own) after the shared prefill.
    const repl = lwm(['chat', '-m', model, '-f', doc, '-n', '4', '--json', '--sp', '2'], { input: 'What did the keeper write?\nAnd then?\n' });
    expect(repl.code).toBe(0);
    const turns = repl.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(turns).toHaveLength(2);
    expect(turns[0].tokens).toEqual(one.tokens.slice(0, 4));
    expectOneLineError(lwm(['chat', '-m', model, '-p', 'q', '--sp', '2']), /--sp N prefills a long --file document/, { afterProgress: true });
  });

  it('without --model uses the newest checkpoint of ./lwm-out (what lwm train wrote), else the random tiny preset', () => {
    const cwd = path.join(work, 'project');
    for (const step of ['step-00000002', 'step-00000010']) {
      const dir = path.join(cwd, 'lwm-out', 'checkpoints', step);
      fs.mkdirSync(dir, { recursive: true });
      for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(model, f), path.join(dir, f));
      fs.writeFileSync(path.join(dir, 'trainer.json'), '{}');
    }
    const q = 'What is the capital of France?';
    const r = lwm(['chat', '-p', q, '-n', '6', '--json'], { cwd });
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/using the newest training checkpoint .*step-00000010/);
    expect(JSON.parse(r.stdout).tokens).toEqual(JSON.parse(lwm(['chat', '-m', model, '-p', q, '-n', '6', '--json']).stdout).tokens);
    const bare = lwm(['chat', '-p', q, '-n', '2'], { cwd: work });
    expect(bare.code).toBe(0);
    expect(bare.stderr).toMatch(/built-in 'tiny' preset with random weights/);
  });

  it('gives one-line errors for bad input', () => {
    expectOneLineError(lwm(['chat', '-m', model, '-p', 'q', '--file', path.join(work, 'missing.txt')]), /--file .*missing\.txt: no such file/, { afterProgress: true });
    expectOneLineError(lwm(['chat', '-m', model, '-p', 'q', '--fps', '1', '--max-frames', '2']), /--fps or --max-frames, not both/, { afterProgress: true });
    const img = path.join(work, 'x.png');
    fs.writeFileSync(img, 'not really a png');
    expectOneLineError(lwm(['chat', '-m', model, '-p', 'q', '--image', img]), /need a VQGAN|text model/, { afterProgress: true });
    const long = path.join(work, 'long.txt');
    fs.writeFileSync(long, 'word '.repeat(5000));
    expectOneLineError(lwm(['chat', '-m', model, '-p', 'q', '-f', long]), /would need \d+ tokens .*context is 4096; pass --truncate/, { afterProgress: true });
    const cut = lwm(['chat', '-m', model, '-p', 'q', '-f', long, '--truncate', '-n', '2', '--json']);
    expect(cut.code).toBe(0);
    expect(JSON.parse(cut.stdout).usage.truncated_document_tokens).toBeGreaterThan(0);
    expect(cut.stderr).toMatch(/cut \d+ tokens from the end of the document/);
  });
});
