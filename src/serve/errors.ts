import { LwmError } from '../../ops/index.js';

/** OpenAI's error types, plus llama.cpp's `unavailable_error` for a full queue or a shutdown. */
export type ApiErrorType = 'invalid_request_error' | 'authentication_error' | 'permission_error' | 'unavailable_error' | 'server_error';

export interface ApiErrorBody {
  error: { message: string; type: ApiErrorType; param: string | null; code: string | null };
}

/** An error the client gets as `{error:{message,type,param,code}}` with this HTTP status. */
export class HttpError extends Error {
  readonly type: ApiErrorType;
  readonly param: string | null;
  readonly code: string | null;
  readonly headers: Record<string, string>;

  constructor(
    readonly status: number,
    message: string,
    opts: { type?: ApiErrorType; param?: string | null; code?: string | null; headers?: Record<string, string> } = {},
  ) {
    super(message);
    this.name = 'HttpError';
    this.type = opts.type ?? defaultType(status);
    this.param = opts.param ?? null;
    this.code = opts.code ?? null;
    this.headers = opts.headers ?? {};
  }

  body(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

function defaultType(status: number): ApiErrorType {
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 503) return 'unavailable_error';
  return status >= 500 ? 'server_error' : 'invalid_request_error';
}

export function badRequest(message: string, param: string | null = null, code: string | null = null): HttpError {
  return new HttpError(400, message, { param, code });
}

/**
 * The HTTP form of any failure: the library's own errors (a prompt longer than the context, a
 * token outside the vocabulary) are the client's to fix, so 400; anything else is a bug, so 500.
 */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  const message = (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
  if (err instanceof LwmError) return badRequest(message);
  return new HttpError(500, `internal error: ${message}`);
}
