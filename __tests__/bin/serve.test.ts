import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { conversationTokens } from '../../src/chat/template.js';
import { loadTokenizer } from '../../data/index.js';
import { fixture } from '../helpers/paths.js';
import { events, expectApiError, lwm, openStream, request, startServe, waitForHealth, type ServeProcess } from '../src/serve/serveHelpers.js';

const model = fixture('tiny-lwm-text');
const KEY = 'test-key';
const auth = { Authorization: `Bearer ${KEY}` };
const question = 'What is the capital of France?';
const chatBody = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ messages: [{ role: 'user', content: question }], temperature: 0, max_tokens: 24, ...extra });

describe('lwm serve', () => {
  let s: ServeProcess;
  const post = (path: string, body: unknown, headers: Record<string, string> = auth) => request(`${s.url}${path}`, { body, headers });
  let answer: { content: string; tokens: number };

  beforeAll(async () => {
    s = await startServe(['-m', model, '--parallel', '2', '--api-key', KEY, '--model-name', 'tiny']);
    const r = await post('/v1/chat/completions', chatBody());
    expect(r.status).toBe(200);
    answer = { content: r.json.choices[0].message.content, tokens: r.json.usage.completion_tokens };
  });
  afterAll(async () => {
    const { code } = await s.stop();
    expect(code).toBe(0);
  });

  it('prints one startup line with the real port and the model name', () => {
    expect(s.startupLine).toBe(`lwm serve: listening on http://127.0.0.1:${s.port} (model tiny)`);
    expect(s.port).toBeGreaterThan(0);
  });

  it('answers what `lwm generate --prompt-tokens` gives on the same chat template tokens', async () => {
    const tok = loadTokenizer(model);
    const ids = conversationTokens(tok, [{ user: { text: question } }]).tokens;
    const g = lwm(['generate', '-m', model, '--prompt-tokens', ids.join(','), '-n', '24', '--json']);
    expect(g.code).toBe(0);
    const want = JSON.parse(g.stdout);
    const r = await post('/v1/chat/completions', chatBody());
    expect(r.json).toMatchObject({ object: 'chat.completion', model: 'tiny', choices: [{ index: 0, message: { role: 'assistant', content: want.text } }] });
    expect(r.json.id).toMatch(/^chatcmpl-/);
    expect(Number.isInteger(r.json.created)).toBe(true);
    expect(r.json.usage).toMatchObject({ prompt_tokens: ids.length, completion_tokens: want.tokens.length, total_tokens: ids.length + want.tokens.length });
    expect(r.json.choices[0].finish_reason).toBe(want.stopped_by === 'stop-token' ? 'stop' : 'length');
  });

  it('streams chunks that reassemble exactly into the non-streaming answer, then usage and [DONE]', async () => {
    const r = await post('/v1/chat/completions', chatBody({ stream: true, stream_options: { include_usage: true } }));
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/event-stream/);
    const { chunks, done } = events(r.text);
    expect(done).toBe(true);
    const id = chunks[0].id;
    for (const c of chunks) expect(c).toMatchObject({ id, object: 'chat.completion.chunk', model: 'tiny' });
    expect(chunks[0].choices[0].delta.role).toBe('assistant');
    const usage = chunks.at(-1);
    expect(usage.choices).toEqual([]);
    expect(usage.usage.completion_tokens).toBe(answer.tokens);
    const final = chunks.at(-2).choices[0];
    expect(final.finish_reason).toMatch(/^(stop|length)$/);
    const text = chunks.slice(0, -1).map((c) => c.choices[0].delta.content ?? '').join('');
    expect(text).toBe(answer.content);
    expect(chunks.slice(1, -2).every((c) => c.choices[0].finish_reason === null)).toBe(true);
  });

  it('cuts at a stop string exactly, streaming or not', async () => {
    const mid = Math.floor(answer.content.length / 2);
    const stop = answer.content.slice(mid, mid + 3);
    const want = answer.content.slice(0, answer.content.indexOf(stop));
    const r = await post('/v1/chat/completions', chatBody({ stop: [stop, 'never-seen-xyz'] }));
    expect(r.json.choices[0]).toMatchObject({ message: { content: want }, finish_reason: 'stop' });
    const st = events((await post('/v1/chat/completions', chatBody({ stop, stream: true }))).text);
    expect(st.chunks.map((c) => c.choices[0].delta.content ?? '').join('')).toBe(want);
    expect(st.chunks.at(-1).choices[0].finish_reason).toBe('stop');
  });

  it('reports logprobs: one entry per token, top alternatives sorted, the greedy choice first', async () => {
    const r = await post('/v1/chat/completions', chatBody({ logprobs: true, top_logprobs: 3, max_tokens: 8 }));
    const content = r.json.choices[0].logprobs.content;
    expect(content).toHaveLength(r.json.usage.completion_tokens);
    for (const e of content) {
      expect(Object.keys(e).sort()).toEqual(['bytes', 'logprob', 'token', 'top_logprobs']);
      expect(e.logprob).toBeLessThanOrEqual(0);
      expect(e.top_logprobs).toHaveLength(3);
      expect(e.top_logprobs[0]).toEqual({ token: e.token, bytes: e.bytes, logprob: e.logprob });
      const lps = e.top_logprobs.map((t: { logprob: number }) => t.logprob);
      expect([...lps].sort((a, b) => b - a)).toEqual(lps);
    }
    const bytes = Buffer.from(content.flatMap((e: { bytes: number[] }) => e.bytes)).toString('utf8');
    expect(bytes.replace(/^ /, '')).toBe(r.json.choices[0].message.content);
    expect((await post('/v1/chat/completions', chatBody())).json.choices[0].logprobs).toBeNull();
  });

  it('runs 8 concurrent requests with --parallel 2 (the rest queue), all with the same greedy answer', async () => {
    const rs = await Promise.all(Array.from({ length: 8 }, (_, i) => post('/v1/chat/completions', chatBody(i % 2 ? { stream: true } : {}))));
    for (const [i, r] of rs.entries()) {
      expect(r.status).toBe(200);
      const text = i % 2 ? events(r.text).chunks.map((c) => c.choices[0]?.delta.content ?? '').join('') : r.json.choices[0].message.content;
      expect(text).toBe(answer.content);
    }
  });

  it('/v1/completions continues a raw prompt (with BOS) as `lwm generate -p` does, streaming and echo too', async () => {
    const prompt = 'The quick brown fox';
    const g = lwm(['generate', '-m', model, '-p', prompt, '-n', '12', '--json']);
    const want = JSON.parse(g.stdout);
    const r = await post('/v1/completions', { prompt, max_tokens: 12, temperature: 0 });
    expect(r.json).toMatchObject({ object: 'text_completion', model: 'tiny', choices: [{ index: 0, text: want.text, logprobs: null }] });
    expect(r.json.id).toMatch(/^cmpl-/);
    expect(r.json.usage.prompt_tokens).toBe(want.prompt.length);
    const ids = await post('/v1/completions', { prompt: want.prompt, max_tokens: 12, temperature: 0 });
    expect(ids.json.choices[0].text).toBe(want.text);
    const st = events((await post('/v1/completions', { prompt, max_tokens: 12, temperature: 0, stream: true, echo: true })).text);
    expect(st.done).toBe(true);
    expect(st.chunks.map((c) => c.choices[0].text).join('')).toBe(prompt + want.text);
    const lp = await post('/v1/completions', { prompt, max_tokens: 4, temperature: 0, logprobs: 2 });
    expect(lp.json.choices[0].logprobs.tokens).toHaveLength(4);
    expect(lp.json.choices[0].logprobs.top_logprobs[0]).toEqual(expect.any(Object));
  });

  it('lists the model and reports health (health needs no key)', async () => {
    const m = await request(`${s.url}/v1/models`, { headers: auth });
    expect(m.json).toMatchObject({ object: 'list', data: [{ id: 'tiny', object: 'model', owned_by: 'lwm' }] });
    const h = await request(`${s.url}/health`);
    expect(h.status).toBe(200);
    expect(h.json).toMatchObject({ status: 'ok', parallel: 2, in_progress: 0, queued: 0 });
  });

  it('refuses a missing or wrong API key with 401', async () => {
    expectApiError(await post('/v1/chat/completions', chatBody(), {}), 401, /API key/);
    expectApiError(await post('/v1/chat/completions', chatBody(), { Authorization: 'Bearer wrong' }), 401);
    expectApiError(await request(`${s.url}/v1/models`, { headers: { Authorization: 'Bearer wrong' } }), 401);
  });

  it('refuses bad requests with 400-class JSON errors in OpenAI\'s shape', async () => {
    const bad = async (body: unknown, param: string | null, message: RegExp) => {
      const r = await post('/v1/chat/completions', body);
      expectApiError(r, 400, message);
      expect(r.json.error.type).toBe('invalid_request_error');
      expect(r.json.error.param).toBe(param);
    };
    expectApiError(await request(`${s.url}/v1/chat/completions`, { raw: '{"messages": [', headers: auth }), 400, /not valid JSON/);
    await bad({ ...chatBody(), model: 'gpt-4' }, 'model', /model 'gpt-4' is not served here/);
    await bad({ temperature: 0 }, 'messages', /messages is required/);
    await bad({ messages: [] }, 'messages', /empty/);
    await bad({ messages: [{ role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }] }, 'messages', /last message must be from the user/);
    await bad({ ...chatBody(), n: 2 }, 'n', /n must be 1/);
    await bad({ ...chatBody(), temperature: 'hot' }, 'temperature', /temperature must be a number/);
    await bad({ ...chatBody(), top_logprobs: 3 }, 'top_logprobs', /needs logprobs/);
    await bad({ ...chatBody(), max_tokens: -1 }, 'max_tokens', /max_tokens must be in/);
    await bad({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: '/tmp/x.png' } }] }] }, 'messages[0].content[0].image_url.url', /--allowed-media-dir/);
    expectApiError(await request(`${s.url}/v1/nope`, { headers: auth }), 404, /unknown request URL/);
    const m = await request(`${s.url}/v1/chat/completions`, { headers: auth });
    expectApiError(m, 405);
    expect(m.headers['allow']).toBe('POST');
    expectApiError(await request(`${s.url}/v1/chat/completions`, { raw: Buffer.alloc(11 * 2 ** 20, 32), headers: auth }), 413);
    // Still serving after all of that.
    expect((await post('/v1/chat/completions', chatBody({ max_tokens: 2 }))).status).toBe(200);
  });
});

describe('lwm serve queue and shutdown (--parallel 1 --max-queue 1)', () => {
  let s: ServeProcess;
  const slow = { messages: [{ role: 'user', content: 'Tell me a long story.' }], max_tokens: 4000, ignore_eos: true, stream: true };

  beforeAll(async () => {
    s = await startServe(['-m', model, '--parallel', '1', '--max-queue', '1']);
  });
  afterAll(async () => {
    await s.stop('SIGKILL');
  });

  it('turns a request beyond the queue away with 503 and Retry-After; hanging up frees the slot and the queue place', async () => {
    const first = await openStream(`${s.url}/v1/chat/completions`, slow);
    expect(first.first).toMatch(/^data: /);
    await waitForHealth(s.url, (h) => h.in_progress === 1);
    const second = openStream(`${s.url}/v1/chat/completions`, slow);
    await waitForHealth(s.url, (h) => h.queued === 1);
    const third = await request(`${s.url}/v1/chat/completions`, { body: slow });
    expectApiError(third, 503, /busy/);
    expect(third.headers['retry-after']).toBe('1');
    // The first hangs up mid-stream: the queued one gets its slot and starts streaming.
    first.destroy();
    const started = await second;
    started.destroy();
    await waitForHealth(s.url, (h) => h.in_progress === 0 && h.queued === 0);
    const after = await request(`${s.url}/v1/chat/completions`, { body: { messages: [{ role: 'user', content: 'hi' }], max_tokens: 3 } });
    expect(after.status).toBe(200);
    expect(s.stderr()).toMatch(/POST \/v1\/chat\/completions 200 \d+\+\d+ tokens \d+ ms \(client closed the connection\)/);
  });

  it('SIGTERM finishes the request in flight, then exits 0', async () => {
    const pending = request(`${s.url}/v1/chat/completions`, { body: { ...slow, stream: false, max_tokens: 300 } });
    await waitForHealth(s.url, (h) => h.in_progress === 1);
    const exited = s.stop('SIGTERM');
    const r = await pending;
    expect(r.status).toBe(200);
    expect(r.json.usage.completion_tokens).toBe(300);
    expect(r.json.choices[0].finish_reason).toBe('length');
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(s.stderr()).toMatch(/SIGTERM: shutting down; finishing 1 request/);
  });
});
