import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HttpError } from '../../../src/serve/errors.js';
import { mediaRoot, resolveMediaPath, type MediaRoot } from '../../../src/serve/mediaPath.js';
import { parseChatRequest, parseCompletionRequest } from '../../../src/serve/params.js';
import { SlotQueue } from '../../../src/serve/queue.js';
import { tmpDir } from '../../helpers/paths.js';

function refusal(f: () => unknown): HttpError {
  try {
    f();
  } catch (e) {
    if (e instanceof HttpError) return e;
    throw e;
  }
  throw new Error('expected an HttpError');
}

describe('parseChatRequest', () => {
  it('turns messages into LWM turns: leading system text, answers between user turns, same-role messages joined', () => {
    const r = parseChatRequest({
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'developer', content: 'Answer in French.' },
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello!' },
        { role: 'user', content: [{ type: 'text', text: 'Look:' }, { type: 'image_url', image_url: { url: 'a.png' } }] },
        { role: 'user', content: [{ type: 'video_url', video_url: { url: 'b.mp4' } }, { type: 'text', text: 'and this' }] },
      ],
    });
    expect(r.system).toBe('Be brief.\nAnswer in French.');
    expect(r.turns).toEqual([
      { text: 'Hi', media: [], answer: 'Hello!' },
      {
        text: 'Look:\nand this',
        media: [
          { url: 'a.png', param: 'messages[4].content[1].image_url.url' },
          { url: 'b.mp4', param: 'messages[5].content[0].video_url.url' },
        ],
      },
    ]);
  });

  it('defaults: greedy unless asked (temperature and top_k resolved later per text or vision), a fresh seed each time', () => {
    const r = parseChatRequest({ messages: [{ role: 'user', content: 'x' }] });
    expect(r).toMatchObject({ temperature: undefined, topK: undefined, topP: 1, minP: 0, repeatPenalty: 1, stop: [], stream: false, logprobs: false, maxTokens: undefined });
    const a = parseChatRequest({ messages: [{ role: 'user', content: 'x' }], max_tokens: 5, max_completion_tokens: 7, stop: 'END', seed: -1, top_p: 0 });
    expect(a).toMatchObject({ maxTokens: 7, stop: ['END'], seed: 2 ** 32 - 1 });
    expect(a.topP).toBeGreaterThan(0);
  });

  it('refuses what it cannot honour, naming the field', () => {
    const msg = [{ role: 'user', content: 'x' }];
    const cases: [unknown, string, RegExp][] = [
      [{ messages: msg, top_p: 1.5 }, 'top_p', /\[0, 1\]/],
      [{ messages: msg, min_p: 1 }, 'min_p', /\[0, 1\)/],
      [{ messages: msg, stop: ['a', ''] }, 'stop', /empty/],
      [{ messages: msg, stream: 'yes' }, 'stream', /true or false/],
      [{ messages: msg, presence_penalty: 0.5 }, 'presence_penalty', /repeat_penalty/],
      [{ messages: [{ role: 'tool', content: 'x' }] }, 'messages[0].role', /tool results/],
      [{ messages: [{ role: 'assistant', content: 'x' }, { role: 'user', content: 'y' }] }, 'messages[0].role', /start with a user message/],
      [{ messages: [{ role: 'user', content: 'x' }, { role: 'system', content: 'y' }, { role: 'user', content: 'z' }] }, 'messages[1].role', /system messages must come before/],
      [{ messages: [{ role: 'user', content: [{ type: 'input_audio' }] }] }, 'messages[0].content[0].type', /unsupported content part/],
      [{ messages: [{ role: 'user', content: 'x' }, { role: 'assistant', content: [{ type: 'image_url', image_url: { url: 'a.png' } }] }, { role: 'user', content: 'y' }] }, 'messages[1].content[0]', /user messages/],
      [[1, 2], '', /JSON object/],
    ];
    for (const [body, param, message] of cases) {
      const e = refusal(() => parseChatRequest(body));
      expect(e.status).toBe(400);
      expect(e.param ?? '').toBe(param);
      expect(e.message).toMatch(message);
    }
  });

  it('completions: a text prompt, token ids, or a one-element batch; legacy logprobs is a count', () => {
    expect(parseCompletionRequest({ prompt: 'hi' }).prompt).toBe('hi');
    expect(parseCompletionRequest({ prompt: [1, 2, 3] }).prompt).toEqual([1, 2, 3]);
    expect(parseCompletionRequest({ prompt: [[1, 2]] }).prompt).toEqual([1, 2]);
    expect(parseCompletionRequest({ prompt: 'x', logprobs: 3 })).toMatchObject({ logprobs: true, topLogprobs: 3 });
    expect(refusal(() => parseCompletionRequest({ prompt: ['a', 'b'] })).message).toMatch(/one per request/);
    expect(refusal(() => parseCompletionRequest({})).param).toBe('prompt');
    expect(refusal(() => parseCompletionRequest({ prompt: 'x', echo: true, logprobs: 1 })).param).toBe('echo');
  });
});

describe('SlotQueue', () => {
  it('grants slots in arrival order, turns away beyond maxQueue, and lets an aborted waiter leave', async () => {
    const q = new SlotQueue(1, 2);
    const order: string[] = [];
    const r1 = await q.acquire();
    const leaving = new AbortController();
    const p2 = q.acquire(leaving.signal);
    const p3 = q.acquire().then((r) => (order.push('third'), r));
    await expect(q.acquire()).rejects.toMatchObject({ status: 503, code: 'queue_full' });
    leaving.abort(new Error('gone'));
    await expect(p2).rejects.toThrow('gone');
    expect(q.queued).toBe(1);
    r1();
    r1(); // a second release is a no-op
    const r3 = await p3;
    expect(order).toEqual(['third']);
    expect(q.inProgress).toBe(1);
    r3();
    expect(q.inProgress).toBe(0);
    q.close(new Error('closed'));
    await expect(q.acquire()).rejects.toThrow('closed');
  });
});

describe('resolveMediaPath', () => {
  let dir = '';
  let root: MediaRoot;
  beforeAll(() => {
    dir = tmpDir('serve-paths');
    fs.mkdirSync(path.join(dir, 'allowed', 'sub'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'allowed', 'sub', 'a.png'), 'x');
    fs.writeFileSync(path.join(dir, 'secret.png'), 'x');
    fs.symlinkSync(path.join(dir, 'secret.png'), path.join(dir, 'allowed', 'out.png'));
    fs.symlinkSync(path.join(dir, 'allowed', 'sub', 'a.png'), path.join(dir, 'allowed', 'in.png'));
    // The allowed folder itself reached through a symlink is still itself.
    fs.symlinkSync(path.join(dir, 'allowed'), path.join(dir, 'alias'));
    root = mediaRoot(path.join(dir, 'alias'));
  });
  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('accepts files inside (relative, absolute, file://, symlinks that stay inside) and refuses the rest', () => {
    const a = path.join(dir, 'allowed', 'sub', 'a.png');
    expect(root).toEqual({ given: path.join(dir, 'alias'), real: path.join(dir, 'allowed') });
    expect(resolveMediaPath('sub/a.png', root, 'p')).toBe(a);
    expect(resolveMediaPath(path.join(dir, 'alias', 'sub', 'a.png'), root, 'p')).toBe(a);
    expect(resolveMediaPath(`file://${a}`, root, 'p')).toBe(a);
    expect(resolveMediaPath('in.png', root, 'p')).toBe(a);
    for (const url of ['out.png', '../secret.png', 'sub/../../secret.png', path.join(dir, 'secret.png'), '/etc/passwd']) {
      expect(refusal(() => resolveMediaPath(url, root, 'p'))).toMatchObject({ status: 403, param: 'p' });
    }
    expect(refusal(() => resolveMediaPath('http://x/a.png', root, 'p')).status).toBe(400);
    expect(refusal(() => resolveMediaPath('sub', root, 'p')).message).toMatch(/not a file/);
    expect(refusal(() => resolveMediaPath('nope.png', root, 'p')).message).toMatch(/no such file/);
    expect(() => mediaRoot(path.join(dir, 'missing'))).toThrow(/no such folder/);
  });
});
