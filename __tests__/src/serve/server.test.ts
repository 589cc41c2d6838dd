import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as tf from '@tensorflow/tfjs';
import { loadModel } from '../../../src/checkpoint/modelDir.js';
import { createServer, type LwmServer } from '../../../src/serve/index.js';
import { loadTokenizer } from '../../../data/index.js';
import type { LlamaModel } from '../../../models/index.js';
import { fixture } from '../../helpers/paths.js';
import { events, expectApiError, request, waitForHealth } from './serveHelpers.js';

describe('createServer (library API)', () => {
  const dir = fixture('tiny-lwm-text');
  let model: LlamaModel;
  let server: LwmServer;
  let url = '';
  const lines: string[] = [];

  beforeAll(async () => {
    model = loadModel(dir);
    server = createServer(model, loadTokenizer(dir), { port: 0, log: (l) => lines.push(l), system: 'Be brief.' });
    ({ url } = await server.listen());
  });
  afterAll(() => model.dispose());

  it('frees every tensor of a request; a failure inside generation is a 500 (an error event once streaming) and the server goes on', async () => {
    const body = { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 };
    await request(`${url}/v1/chat/completions`, { body });
    const before = tf.memory().numTensors;
    expect((await request(`${url}/v1/chat/completions`, { body: { ...body, logprobs: true, top_logprobs: 2 } })).status).toBe(200);
    expect(tf.memory().numTensors).toBe(before);
    const forward = model.forward;
    model.forward = () => {
      throw new Error('boom');
    };
    try {
      const r = await request(`${url}/v1/chat/completions`, { body });
      expectApiError(r, 500, /^internal error: boom$/);
      expect(r.json.error.type).toBe('server_error');
      const st = await request(`${url}/v1/chat/completions`, { body: { ...body, stream: true } });
      expect(st.status).toBe(200);
      expect(events(st.text).chunks.at(-1)).toMatchObject({ error: { message: 'internal error: boom', type: 'server_error' } });
    } finally {
      model.forward = forward;
    }
    expect(lines.filter((l) => l === 'error: internal error: boom')).toHaveLength(2);
    expect((await request(`${url}/v1/chat/completions`, { body })).status).toBe(200);
  });

  it('reuses the cache of an earlier request that starts the same way (cached_tokens), with the same answer as without reuse', async () => {
    const first = await request(`${url}/v1/chat/completions`, { body: { messages: [{ role: 'user', content: 'Name a colour.' }], max_tokens: 5 } });
    expect(first.json.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(0);
    const follow = {
      messages: [
        { role: 'user', content: 'Name a colour.' },
        { role: 'assistant', content: first.json.choices[0].message.content },
        { role: 'user', content: 'Another one?' },
      ],
      max_tokens: 5,
    };
    const second = await request(`${url}/v1/chat/completions`, { body: follow });
    expect(second.json.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(first.json.usage.prompt_tokens - 2);
    const fresh = createServer(model, loadTokenizer(dir), { port: 0, log: null, system: 'Be brief.', kvSlots: 0 });
    const { url: freshUrl } = await fresh.listen();
    try {
      const ref = await request(`${freshUrl}/v1/chat/completions`, { body: follow });
      expect(ref.json.usage.prompt_tokens_details.cached_tokens).toBe(0);
      expect(second.json.choices[0].message.content).toBe(ref.json.choices[0].message.content);
    } finally {
      await fresh.close();
    }
  });

  it('listens on a free port, answers, logs one line per request, and on close({abort}) cancels what is in flight with 503', async () => {
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const r = await request(`${url}/v1/chat/completions`, { body: { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3 } });
    expect(r.status).toBe(200);
    expect(r.json.model).toBe('lwm');
    expect(lines.at(-1)).toMatch(/^POST \/v1\/chat\/completions 200 \d+\+3 tokens \d+ ms$/);

    const long = { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4000, ignore_eos: true };
    const pending = request(`${url}/v1/chat/completions`, { body: long });
    await waitForHealth(url, (h) => h.in_progress === 1);
    const queued = request(`${url}/v1/chat/completions`, { body: long });
    await waitForHealth(url, (h) => h.queued === 1);
    const closing = server.close();
    // A graceful close waits; asking again with abort cancels the request being generated.
    await server.close({ abort: true });
    await closing;
    expectApiError(await pending, 503, /shutting down/);
    expectApiError(await queued, 503, /shutting down/);
    await expect(request(`${url}/health`)).rejects.toThrow();
  });
});
