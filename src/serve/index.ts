export { createServer, type ServerOptions, type LwmServer, type ListenInfo } from './server.js';
export { HttpError, type ApiErrorBody, type ApiErrorType } from './errors.js';
export { SlotQueue } from './queue.js';
export { resolveMediaPath, mediaRoot, type MediaRoot } from './mediaPath.js';
export { parseChatRequest, parseCompletionRequest, DEFAULT_TEMPERATURE, DEFAULT_TOP_K, type ChatRequest, type CompletionRequest, type SamplingParams } from './params.js';
