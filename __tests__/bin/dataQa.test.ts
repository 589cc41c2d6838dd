import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import { expectOneLineError, lwm, type CliResult } from '../helpers/cli.js';
import { cliPath, fixture, tmpDir } from '../helpers/paths.js';
import { startQaServer, syntheticDocs, type QaServer, type ScriptedReply } from '../helpers/qaServer.js';
import { startServe } from '../src/serve/serveHelpers.js';

/** lwm data qa against a scripted server, lwm serve, and lwm train on its output. */

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

function docsFile(docs: number, sentences: number): string {
  const d = tmpDir('qa-docs');
  dirs.push(d);
  const f = path.join(d, 'docs.jsonl');
  fs.writeFileSync(f, syntheticDocs(docs, sentences, 5).map((text) => JSON.stringify({ text })).join('\n') + '\n');
  return f;
}

/** The command in a child process, without blocking this one (the scripted server lives here). */
function run(args: string[], onChild?: (kill: () => void) => void): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliPath, 'data', 'qa', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    onChild?.(() => child.kill('SIGKILL'));
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

const qaArgs = (docs: string, out: string, server: QaServer, extra: string[] = []) => [
  '--docs', docs, '--out', out, '--endpoint', server.url, '--model-name', 'scripted', '--chunk-tokens', '80', '--lengths', '300,700', '--no-progress', ...extra,
];

/** A loopback port nothing listens on (just released). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const stats = (out: string) => JSON.parse(fs.readFileSync(path.join(out, 'stats.json'), 'utf8'));
const dataset = (out: string) => fs.readFileSync(path.join(out, 'dataset.jsonl'), 'utf8');

describe('lwm data qa', () => {
  it('drops malformed, empty and ungrounded replies after its retries and counts them; retries server errors', async () => {
    const docs = docsFile(2, 60);
    const order: string[] = [];
    // By the order chunks are first seen: 0 malformed, 1 empty, 2 ungrounded (always); 3 malformed
    // once then good; 4 an HTTP 500 then good; the rest good.
    const script = (p: string, tryNo: number): ScriptedReply => {
      if (!order.includes(p)) order.push(p);
      const k = order.indexOf(p);
      if (k === 0) return 'malformed';
      if (k === 1) return 'empty';
      if (k === 2) return 'ungrounded';
      if (k === 3 && tryNo === 0) return 'malformed';
      if (k === 4 && tryNo === 0) return 'http500';
      return 'good';
    };
    const server = await startQaServer(script);
    const out = tmpDir('qa-drop');
    dirs.push(out);
    const r = await run(qaArgs(docs, out, server, ['--parallel', '1', '--attempts', '2']));
    await server.close();
    expect(r.stderr).toMatch(/^data qa: 2 documents, \d+ chunks, pairs kept \d+, dropped 3 \(unparseable 1, empty 1, ungrounded 1\); examples per length 300: \d+, 700: \d+$/m);
    expect(r.code).toBe(0);
    const s = stats(out);
    const chunks = s.chunks;
    expect(s.pairs).toEqual({ kept: chunks - 3, dropped: 3, droppedBy: { unparseable: 1, empty: 1, ungrounded: 1 }, retried: 4, fromCache: 0, requested: chunks + 4 });
    // Three dropped chunks asked twice each, chunk 3 twice, chunk 4 twice (the 500 is not a reply).
    expect(server.received.length).toBe(chunks + 3 + 1 + 1);
    expect(server.answered.length).toBe(chunks + 4);
    const records = dataset(out).trim().split('\n').map((l) => JSON.parse(l));
    expect(records.length).toBe(s.examples);
    expect(s.examples).toBe(s.lengths['300'].examples + s.lengths['700'].examples);
    // Dropped chunks appear as context but never with a pair.
    for (const rec of records) {
      for (let t = 0; rec[`a${t}`] !== undefined; t++) expect(rec[`a${t}`]).toMatch(/^The code of item \d+-\d+ is \d+\.$/);
    }
  });

  it('resumes after a kill with the same output as an uninterrupted run, never asking for a chunk twice', async () => {
    const docs = docsFile(3, 80);
    const clean = await startQaServer(() => 'good');
    const outA = tmpDir('qa-a');
    const outB = tmpDir('qa-b');
    dirs.push(outA, outB);
    expect((await run(qaArgs(docs, outA, clean, ['--seed', '3']))).code).toBe(0);
    await clean.close();
    const total = stats(outA).chunks;
    expect(clean.answered.length).toBe(total);

    // Killed while the server holds its 20th request.
    let kill: () => void = () => {};
    const first = await startQaServer((_, __, i) => (i === 19 ? 'hold' : 'good'), (_, i) => i === 19 && kill());
    const killed = await run(qaArgs(docs, outB, first, ['--seed', '3', '--parallel', '1']), (k) => (kill = k));
    await first.close();
    expect(killed.signal).toBe('SIGKILL');
    expect(fs.existsSync(path.join(outB, 'dataset.jsonl'))).toBe(false);
    expect(first.answered.length).toBe(19);

    const second = await startQaServer(() => 'good');
    const resumed = await run(qaArgs(docs, outB, second, ['--seed', '3']));
    await second.close();
    expect(resumed.code).toBe(0);
    expect(dataset(outB)).toBe(dataset(outA));
    const asked = [...first.answered, ...second.answered];
    expect(new Set(asked).size).toBe(asked.length);
    expect(asked.length).toBe(total);
    expect(stats(outB).pairs.fromCache).toBe(19);

    // A third run asks for nothing.
    const third = await startQaServer(() => 'good');
    expect((await run(qaArgs(docs, outB, third, ['--seed', '3']))).code).toBe(0);
    await third.close();
    expect(third.received).toEqual([]);
    expect(dataset(outB)).toBe(dataset(outA));
  });

  it('stops with one line when the server keeps failing, keeping what was done', async () => {
    const docs = docsFile(1, 30);
    const server = await startQaServer((_, __, i) => (i < 3 ? 'good' : 'http500'));
    const out = tmpDir('qa-fail');
    dirs.push(out);
    const r = await run(qaArgs(docs, out, server, ['--parallel', '1', '--server-retries', '1']));
    await server.close();
    expectOneLineError(r, /^lwm data qa: error: http:\/\/127\.0\.0\.1:\d+\/v1\/chat\/completions failed 2 times \(last: HTTP 500: .*scripted failure.*\); .* rerun to resume$/);
    expect(fs.existsSync(path.join(out, 'dataset.jsonl'))).toBe(false);
    const cached = fs.readdirSync(path.join(out, 'cache')).flatMap((d) => fs.readdirSync(path.join(out, 'cache', d)));
    expect(cached.length).toBe(3);
    expect(cached.every((f) => f.endsWith('.json'))).toBe(true);
  });

  it('refuses bad options and inputs with one line', async () => {
    const out = tmpDir('qa-bad');
    dirs.push(out);
    expectOneLineError(lwm(['data', 'qa', '--docs', path.join(out, 'nope.jsonl'), '--out', out, '--endpoint', 'http://127.0.0.1:9/v1', '--model-name', 'x']), /^lwm data qa: error: --docs .*nope\.jsonl: no such file or folder/);
    expectOneLineError(lwm(['data', 'qa', '--docs', out, '--out', out]), /give exactly one of --model DIR .* or --endpoint URL/);
    expectOneLineError(lwm(['data', 'qa', '--docs', out, '--out', out, '--endpoint', 'http://x/v1']), /--endpoint needs --model-name/);
    const docs = docsFile(1, 5);
    expectOneLineError(lwm(['data', 'qa', '--docs', docs, '--out', out, '--endpoint', 'http://127.0.0.1:9/v1', '--model-name', 'x', '--lengths', '4096,abc']), /--lengths must be integers >= 16/);
    const bad = path.join(out, 'bad.jsonl');
    fs.writeFileSync(bad, '{"text": "fine."}\n{"body": 3}\n');
    expectOneLineError(lwm(['data', 'qa', '--docs', bad, '--out', out, '--endpoint', 'http://127.0.0.1:9/v1', '--model-name', 'x']), /bad\.jsonl:2: a document line needs a string "text"/);
    // Nothing listens on the port: connection refused after the retries.
    const port = await closedPort();
    expectOneLineError(
      lwm(['data', 'qa', '--docs', docs, '--out', out, '--endpoint', `http://127.0.0.1:${port}/v1`, '--model-name', 'x', '--server-retries', '1', '--no-progress']),
      /failed 2 times \(last: ECONNREFUSED\); check that the server is up/,
    );
  });

  it('writes the pairs with a local model folder (--model) and caches them per model', () => {
    const docs = docsFile(1, 8);
    const out = tmpDir('qa-local');
    dirs.push(out);
    const args = ['data', 'qa', '--docs', docs, '--out', out, '-m', fixture('tiny-lwm-text'), '--chunk-tokens', '60', '--lengths', '100', '--attempts', '1', '--max-tokens', '8', '--json'];
    const r = lwm(args);
    expect(r.code).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.model).toMatch(/^local:tiny-lwm-text@[0-9a-f]{12}$/);
    expect(s.pairs.requested).toBe(s.chunks);
    expect(s.pairs.kept + s.pairs.dropped).toBe(s.chunks);
    const again = JSON.parse(lwm(args).stdout);
    expect(again.pairs).toMatchObject({ requested: 0, fromCache: s.chunks });
  });

  it('runs end to end against lwm serve with the tiny fixture model, and lwm train trains on the output', async () => {
    const serve = await startServe(['-m', fixture('tiny-lwm-text'), '--model-name', 'tiny']);
    const docs = docsFile(1, 14);
    const out = tmpDir('qa-serve');
    dirs.push(out);
    let r: CliResult;
    try {
      r = await run(['--docs', docs, '--out', out, '--endpoint', `${serve.url}/v1`, '--model-name', 'tiny', '--chunk-tokens', '60', '--lengths', '200', '--attempts', '2', '--parallel', '2', '--max-tokens', '24']);
    } finally {
      await serve.stop();
    }
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/data qa \[#+\] \d+\/\d+ chunks/);
    const s = stats(out);
    // The tiny model writes noise: every chunk was asked (twice when rejected) and accounted for.
    expect(s.pairs.kept + s.pairs.dropped).toBe(s.chunks);
    expect(s.pairs.requested).toBe(s.chunks + s.pairs.retried);
    expect(s.model).toBe('endpoint:tiny');
    expect(fs.existsSync(path.join(out, 'dataset.jsonl'))).toBe(true);

    // Training data from the scripted server (the tiny model's pairs are mostly rejected).
    const server = await startQaServer(() => 'good');
    const trainDocs = docsFile(2, 40);
    const trainData = tmpDir('qa-train');
    dirs.push(trainData);
    expect((await run(qaArgs(trainDocs, trainData, server, ['--lengths', '200,256']))).code).toBe(0);
    await server.close();
    const trainOut = tmpDir('qa-train-out');
    dirs.push(trainOut);
    const t = lwm(['train', '--data', trainData, '--preset', 'tiny', '--seq-len', '256', '--steps', '3', '--batch-size', '2', '--out', trainOut, '--eval-every', '0', '--save-every', '3']);
    expect(t.stderr).not.toMatch(/error/);
    expect(t.code).toBe(0);
    expect(fs.readdirSync(path.join(trainOut, 'checkpoints')).length).toBeGreaterThan(0);
  }, 300_000);
});
