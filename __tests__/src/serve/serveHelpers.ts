import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as http from 'node:http';
import { expect } from '@jest/globals';
import { cliPath } from '../../helpers/paths.js';

/** `lwm serve` in a child process (tfjs runs at full speed there, not inside jest's VM). */
export interface ServeProcess {
  url: string;
  port: number;
  startupLine: string;
  child: ChildProcess;
  stderr(): string;
  /** Sends the signal and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function startServe(args: string[], env: Record<string, string> = {}): Promise<ServeProcess> {
  const child = spawn(process.execPath, [cliPath, 'serve', '--port', '0', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`lwm serve exited ${code} before listening: ${err}`)));
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /^lwm serve: listening on (http:\/\/[^\s]+:(\d+)) .*$/m.exec(out);
      if (!m) return;
      resolve({
        url: m[1]!,
        port: Number(m[2]),
        startupLine: m[0],
        child,
        stderr: () => err,
        stop: (signal = 'SIGTERM') => {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          return exited;
        },
      });
    });
  });
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  json: any;
}

/** One HTTP request over a fresh connection (no keep-alive, so a stopping server is never held up). */
export function request(url: string, opts: { method?: string; body?: unknown; raw?: string | Buffer; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const data = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
    const req = http.request(url, { method: opts.method ?? (data === undefined ? 'GET' : 'POST'), agent: false, headers: { 'Content-Type': 'application/json', ...opts.headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => {
        let json: unknown = null;
        try {
          json = JSON.parse(text);
        } catch {
          // event streams and empty bodies are not JSON
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  });
}

/** The JSON objects of an event stream, and whether it ended with `data: [DONE]`. */
export function events(text: string): { chunks: any[]; done: boolean } {
  const blocks = text.split('\n\n').filter((b) => b.trim() !== '');
  const done = blocks.at(-1) === 'data: [DONE]';
  const chunks = blocks.filter((b) => b !== 'data: [DONE]').map((b) => {
    expect(b.startsWith('data: ')).toBe(true);
    return JSON.parse(b.slice(6));
  });
  return { chunks, done };
}

/** Starts a streaming request and resolves once the first bytes arrive; destroy() hangs up. */
export function openStream(url: string, body: unknown, headers: Record<string, string> = {}): Promise<{ first: string; destroy(): void }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent: false, headers: { 'Content-Type': 'application/json', ...headers } }, (res) => {
      // Hanging up makes the response emit 'error' (aborted); that is the point, not a failure.
      res.on('error', () => {});
      res.setEncoding('utf8').once('data', (d: string) => resolve({ first: d, destroy: () => req.destroy() }));
    });
    req.on('error', (e) => {
      if (!req.destroyed) reject(e);
    });
    req.end(JSON.stringify(body));
  });
}

/** Polls /health until `ok` holds for it (no timing assertion: the test's own timeout bounds it). */
export async function waitForHealth(url: string, ok: (h: { in_progress: number; queued: number }) => boolean): Promise<void> {
  for (;;) {
    const h = await request(`${url}/health`);
    if (ok(h.json)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** An OpenAI-shaped error body with this status. */
export function expectApiError(r: Reply, status: number, message?: RegExp): void {
  expect(r.status).toBe(status);
  expect(r.headers['content-type']).toMatch(/^application\/json/);
  const e = r.json?.error;
  expect(e).toBeDefined();
  expect(Object.keys(e).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(typeof e.message).toBe('string');
  expect(typeof e.type).toBe('string');
  if (message) expect(e.message).toMatch(message);
}

/** `lwm ARGS` to completion. */
export function lwm(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
