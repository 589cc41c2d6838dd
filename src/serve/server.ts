import { createHash, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ConfigError } from '../../ops/index.js';
import type { Tokenizer } from '../../data/index.js';
import type { LlamaModel } from '../../models/index.js';
import { MediaEncoder } from '../chat/media.js';
import { chatCompletions, completions, type EndpointContext, type RequestStats } from './endpoints.js';
import { HttpError } from './errors.js';
import { DEFAULT_MAX_BODY_BYTES, sendError, sendJson } from './http.js';
import { mediaRoot } from './mediaPath.js';
import { KvPool } from './kvPool.js';
import { SlotQueue } from './queue.js';

export interface ServerOptions {
  /** Default 127.0.0.1: only this machine can connect unless asked otherwise. */
  host?: string;
  /** Default 8080; 0 picks a free port (listen() says which). */
  port?: number;
  /** Requests must carry `Authorization: Bearer KEY` (all routes but /health). */
  apiKey?: string;
  /** Requests generating at once. Default 1. */
  parallel?: number;
  /**
   * KV caches of finished requests kept for reuse by requests that start the same way (the next
   * chat turn, another question on the same document). Default: parallel. 0 = none.
   */
  kvSlots?: number;
  /** Requests waiting for a slot at most; more get 503. Default 64. */
  maxQueue?: number;
  /** The only folder media paths may point into; without it images and videos are refused. */
  allowedMediaDir?: string;
  /** VQGAN folder for images and videos (vision models). */
  vqgan?: string;
  /** Where media VQ codes are cached. Default $LWM_CACHE_DIR/codes or ~/.cache/lwm/codes. */
  mediaCacheDir?: string;
  /** The id clients see in /v1/models and must use (or omit) as `model`. Default 'lwm'. */
  modelName?: string;
  /** System text when a conversation has no system message. Default LWM's. */
  system?: string;
  /** New tokens at most when a request gives no max_tokens. Default: up to the context. */
  defaultMaxTokens?: number;
  /** Default 10 MiB; larger bodies get 413. */
  maxBodyBytes?: number;
  /** Prompt tokens per forward pass. Default 512. */
  prefillChunk?: number;
  /** One line per request (method, path, status, tokens, ms). Default stderr; null: silent. */
  log?: ((line: string) => void) | null;
}

export interface ListenInfo {
  host: string;
  port: number;
  url: string;
}

export interface LwmServer {
  listen(): Promise<ListenInfo>;
  /**
   * Stops accepting, turns queued requests away (503) and resolves once in-flight requests are
   * done; with abort they are cancelled (503, or an error event in a stream) instead of finished.
   * A later call with abort cancels what an earlier graceful close is waiting for.
   */
  close(opts?: { abort?: boolean }): Promise<void>;
  /** Requests generating now and waiting for a slot. */
  load(): { inProgress: number; queued: number };
}

const CLIENT_GONE = new Error('the client closed the connection');
const SHUTDOWN = new Error('the server is shutting down');
const shuttingDown = (): HttpError => new HttpError(503, 'the server is shutting down', { code: 'shutting_down', headers: { Connection: 'close' } });

function checkInt(name: string, v: number | undefined, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (v !== undefined && !(Number.isInteger(v) && v >= min && v <= max)) throw new ConfigError(`${name} must be an integer in [${min}, ${max}], got ${v}`);
}

function sameSecret(given: string, expected: string): boolean {
  const h = (s: string): Buffer => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(given), h(expected));
}

/** The path without query, trailing slash or `/v1` (llama.cpp answers both forms). */
function routeOf(url: string | undefined): string {
  const p = (url ?? '/').split('?')[0]!.replace(/\/+$/, '') || '/';
  return p.startsWith('/v1/') ? p.slice(3) : p;
}

/** An OpenAI-compatible HTTP server over one loaded model (see docs in bin/commands/serve.ts). */
export function createServer(model: LlamaModel, tokenizer: Tokenizer, opts: ServerOptions = {}): LwmServer {
  checkInt('port', opts.port, 0, 65535);
  checkInt('parallel', opts.parallel, 1);
  checkInt('max queue', opts.maxQueue, 0);
  checkInt('kv slots', opts.kvSlots, 0);
  checkInt('default max tokens', opts.defaultMaxTokens, 0);
  checkInt('max body bytes', opts.maxBodyBytes, 1);
  checkInt('prefill chunk', opts.prefillChunk, 1);
  if (opts.apiKey === '') throw new ConfigError('the API key is empty; give a non-empty key or none');
  const host = opts.host ?? '127.0.0.1';
  const log = opts.log === undefined ? (line: string) => process.stderr.write(`${line}\n`) : opts.log;
  const modelId = opts.modelName ?? 'lwm';
  const queue = new SlotQueue(opts.parallel ?? 1, opts.maxQueue ?? 64);
  const root = opts.allowedMediaDir !== undefined ? mediaRoot(opts.allowedMediaDir) : null;
  const media = opts.vqgan !== undefined ? new MediaEncoder({ vqgan: opts.vqgan, ...(opts.mediaCacheDir ? { cacheDir: opts.mediaCacheDir } : {}) }) : null;
  const ctx: EndpointContext = {
    model,
    tok: tokenizer,
    modelId,
    system: opts.system,
    defaultMaxTokens: opts.defaultMaxTokens,
    prefillChunk: opts.prefillChunk,
    maxBodyBytes: opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES,
    mediaRoot: root,
    media,
    queue,
    kvPool: new KvPool(model.config.numLayers, opts.kvSlots ?? opts.parallel ?? 1, () => model.newCache()),
    shutdown: SHUTDOWN,
  };
  const created = Math.floor(Date.now() / 1000);
  const controllers = new Set<AbortController>();
  const pending = new Set<Promise<void>>();
  let closing: Promise<void> | null = null;
  let closed: Promise<void> | null = null;

  const routes: Record<string, { method: string; run: (req: http.IncomingMessage, res: http.ServerResponse, stats: RequestStats, signal: AbortSignal) => Promise<void> | void }> = {
    '/health': { method: 'GET', run: (_q, res) => sendJson(res, 200, { status: 'ok', model: modelId, in_progress: queue.inProgress, queued: queue.queued, parallel: queue.parallel, max_queue: queue.maxQueue }) },
    '/models': {
      method: 'GET',
      run: (_q, res) =>
        sendJson(res, 200, {
          object: 'list',
          data: [{ id: modelId, object: 'model', created, owned_by: 'lwm', meta: { context_length: model.config.maxSeqLen, vision: model.isVision, vocab_size: model.config.vocabSize } }],
        }),
    },
    '/chat/completions': { method: 'POST', run: (req, res, stats, signal) => chatCompletions(ctx, req, res, stats, signal) },
    '/completions': { method: 'POST', run: (req, res, stats, signal) => completions(ctx, req, res, stats, signal) },
  };

  async function dispatch(req: http.IncomingMessage, res: http.ServerResponse, stats: RequestStats, signal: AbortSignal): Promise<void> {
    if (closing) throw shuttingDown();
    const path = routeOf(req.url);
    // Health stays open without the key, for load balancers and scripts waiting for startup.
    if (opts.apiKey !== undefined && path !== '/health') {
      const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
      if (!m || !sameSecret(m[1]!, opts.apiKey)) {
        throw new HttpError(401, 'missing or wrong API key; send "Authorization: Bearer KEY"', { code: 'invalid_api_key', headers: { 'WWW-Authenticate': 'Bearer' } });
      }
    }
    const route = routes[path];
    if (!route) throw new HttpError(404, `unknown request URL: ${req.method} ${req.url}; this server has /v1/chat/completions, /v1/completions, /v1/models and /health`, { code: 'unknown_url' });
    if (req.method !== route.method) throw new HttpError(405, `${req.method} is not allowed on ${path}; use ${route.method}`, { code: 'method_not_allowed', headers: { Allow: route.method } });
    await route.run(req, res, stats, signal);
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const t0 = performance.now();
    const stats: RequestStats = { promptTokens: 0, completionTokens: 0 };
    const controller = new AbortController();
    controllers.add(controller);
    // A client that leaves stops its generation and frees its slot (or its place in the queue).
    res.on('close', () => {
      if (!res.writableFinished) controller.abort(CLIENT_GONE);
    });
    try {
      await dispatch(req, res, stats, controller.signal);
    } catch (err) {
      if (controller.signal.reason !== CLIENT_GONE) {
        const e = sendError(res, err === SHUTDOWN ? shuttingDown() : err);
        if (e.status >= 500 && e.code !== 'shutting_down' && e.code !== 'queue_full' && log) log(`error: ${e.message}`);
      }
    } finally {
      controllers.delete(controller);
      if (log) {
        const gone = controller.signal.reason === CLIENT_GONE;
        const status = gone && !res.headersSent ? 499 : res.statusCode;
        const ms = Math.round(performance.now() - t0);
        log(`${req.method} ${req.url} ${status} ${stats.promptTokens}+${stats.completionTokens} tokens ${ms} ms${gone ? ' (client closed the connection)' : ''}`);
      }
    }
  }

  const server = http.createServer({ noDelay: true }, (req, res) => {
    const p = handle(req, res);
    pending.add(p);
    void p.finally(() => pending.delete(p));
  });

  return {
    listen(): Promise<ListenInfo> {
      return new Promise((resolve, reject) => {
        const onError = (e: NodeJS.ErrnoException): void => {
          const why = e.code === 'EADDRINUSE' ? 'the port is in use' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EADDRNOTAVAIL' ? 'no such address on this machine' : e.message;
          reject(new ConfigError(`cannot listen on ${host}:${opts.port ?? 8080}: ${why}`));
        };
        server.once('error', onError);
        server.listen(opts.port ?? 8080, host, () => {
          server.off('error', onError);
          const port = (server.address() as AddressInfo).port;
          resolve({ host, port, url: `http://${host.includes(':') ? `[${host}]` : host}:${port}` });
        });
      });
    },

    close(o: { abort?: boolean } = {}): Promise<void> {
      if (!closing) {
        closed = new Promise((r) => server.close(() => r()));
        server.closeIdleConnections();
        queue.close(shuttingDown());
        closing = (async () => {
          // Requests arriving on open keep-alive connections meanwhile are answered 503 and end too.
          while (pending.size) await Promise.allSettled([...pending]);
          server.closeAllConnections();
          await closed;
          media?.dispose();
          ctx.kvPool.dispose();
        })();
      }
      if (o.abort) for (const c of controllers) c.abort(SHUTDOWN);
      return closing;
    },

    load: () => ({ inProgress: queue.inProgress, queued: queue.queued }),
  };
}
