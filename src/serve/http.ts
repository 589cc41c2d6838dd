import type { IncomingMessage, ServerResponse } from 'node:http';
import { badRequest, HttpError, toHttpError } from './errors.js';

export const DEFAULT_MAX_BODY_BYTES = 10 * 2 ** 20;

/**
 * The request body as JSON. An over-large body is still read (and dropped) up to a few times the
 * limit, so the client, still sending, gets the 413 instead of a reset connection.
 */
export async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const tooLarge = (): HttpError => new HttpError(413, `the request body is over the ${limit}-byte limit`, { code: 'request_too_large' });
  const declared = Number(req.headers['content-length']);
  const drainCap = 4 * limit;
  if (declared > drainCap) throw tooLarge();
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const c of req as AsyncIterable<Buffer>) {
      total += c.length;
      if (total <= limit) chunks.push(c);
      else if (total > drainCap) {
        req.destroy();
        break;
      }
    }
  } catch {
    throw badRequest('the request body was cut off before its end', null, 'incomplete_body');
  }
  if (total > limit) throw tooLarge();
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') throw badRequest('the request body is empty; send a JSON object', null, 'invalid_json');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw badRequest(`the request body is not valid JSON (${(e as Error).message})`, null, 'invalid_json');
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  const data = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(data), ...headers });
  res.end(data);
}

/** The OpenAI-shaped error; inside an already started event stream, as one last event. */
export function sendError(res: ServerResponse, err: unknown): HttpError {
  const e = toHttpError(err);
  if (res.destroyed) return e;
  if (res.headersSent) {
    if (!res.writableEnded) res.end(`data: ${JSON.stringify(e.body())}\n\n`);
    return e;
  }
  sendJson(res, e.status, e.body(), e.headers);
  return e;
}

/** Server-sent events as OpenAI streams them: `data: {json}` blocks, then `data: [DONE]`. */
export class EventStream {
  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive', 'X-Accel-Buffering': 'no' });
    res.flushHeaders();
  }

  send(obj: unknown): void {
    if (!this.res.destroyed) this.res.write(`data: ${JSON.stringify(obj)}\n\n`);
  }

  done(): void {
    if (!this.res.destroyed) this.res.end('data: [DONE]\n\n');
  }
}
