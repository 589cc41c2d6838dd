import type { Argv, CommandModule } from 'yargs';
import { createServer, type LwmServer } from '../../src/serve/index.js';
import { initBackend, InputError, loadTokenizer } from '../../src/index.js';
import { chooseModel, chooseVqgan } from '../modelChoice.js';
import { handle, note } from '../output.js';
import { checkMemory } from './plan.js';

interface ServeArgs {
  model?: string;
  preset?: string;
  dtype?: string;
  'kv-dtype'?: string;
  host: string;
  port: number;
  'api-key'?: string;
  parallel: number;
  'max-queue': number;
  'kv-slots'?: number;
  'allowed-media-dir'?: string;
  vqgan?: string;
  'codes-cache'?: string;
  'model-name'?: string;
  system?: string;
  'max-tokens'?: number;
  quiet: boolean;
  debug?: boolean;
}

export const serveCommand: CommandModule<object, ServeArgs> = {
  command: 'serve',
  describe: 'OpenAI-compatible HTTP server: /v1/chat/completions (streaming, images, videos), /v1/completions, /v1/models, /health',
  builder: (y: Argv) =>
    y
      .option('model', { alias: 'm', type: 'string', describe: 'Model folder (default: newest ./lwm-out checkpoint, else the random tiny preset)' })
      .option('preset', { type: 'string', describe: 'Random-weight model of a preset' })
      .option('dtype', { type: 'string', default: 'auto', choices: ['auto', 'f32', 'bf16', 'int8'], describe: 'Linear weights in float32, bf16 or int8 (auto: f32 unless that takes over half the memory)' })
      .option('kv-dtype', { type: 'string', default: 'f32', choices: ['f32', 'bf16'], describe: 'KV cache in float32 or bf16 (half the memory per token of context)' })
      .option('host', { type: 'string', default: '127.0.0.1', describe: 'Address to bind (0.0.0.0 exposes the server to the network)' })
      .option('port', { type: 'number', default: 8080, describe: 'Port (0 picks a free one; the startup line says which)' })
      .option('api-key', { type: 'string', describe: 'Require "Authorization: Bearer KEY" (default $LWM_API_KEY; /health stays open)' })
      .option('parallel', { type: 'number', default: 1, describe: 'Requests generating at once; the rest wait in arrival order' })
      .option('max-queue', { type: 'number', default: 64, describe: 'Requests waiting at most; beyond that 503 with Retry-After' })
      .option('kv-slots', { type: 'number', describe: 'KV caches of finished requests kept, so a request starting the same way (next chat turn, same document) runs only its new tokens (default: --parallel; 0 = off)' })
      .option('allowed-media-dir', { type: 'string', describe: 'The only folder image/video paths in requests may point into (none: media refused)' })
      .option('vqgan', { type: 'string', describe: "VQGAN folder for images and videos (default: the model folder's vqgan/)" })
      .option('codes-cache', { type: 'string', describe: 'Folder for cached VQGAN codes (default $LWM_CACHE_DIR or ~/.cache/lwm, then codes/)' })
      .option('model-name', { type: 'string', describe: 'Model id in /v1/models and requests (default: the model folder name)' })
      .option('system', { type: 'string', describe: 'System text for conversations without a system message (default LWM\'s "You are a helpful assistant.")' })
      .option('max-tokens', { type: 'number', describe: 'New tokens at most when a request gives no max_tokens (default: up to the context)' })
      .option('quiet', { alias: 'q', type: 'boolean', default: false, describe: 'No per-request log lines on stderr' })
      .epilogue(
        'Sampling: requests without temperature are greedy for text and use LWM\'s vision-chat 0.2 / top_k 50 with images or videos; ' +
          'send temperature 1 for OpenAI\'s default. llama.cpp extensions: top_k, min_p, repeat_penalty, repeat_last_n, ignore_eos. ' +
          'Media parts: image_url / video_url with a local path or file:// URL, or video {path}, inside --allowed-media-dir. ' +
          'Try: curl localhost:8080/v1/chat/completions -d \'{"messages":[{"role":"user","content":"Hello"}]}\'',
      )
      .example('$0 serve -m ./LWM-Text-Chat-1M', 'Serve on http://127.0.0.1:8080')
      .example('$0 serve -m ./LWM-Chat-1M --allowed-media-dir ~/videos --parallel 2 --api-key secret', 'Vision chat over local videos, two requests at once')
      .example('$0 serve --port 0 --quiet', 'The random tiny model on a free port (the startup line says which)') as unknown as Argv<ServeArgs>,
  handler: handle<ServeArgs>('serve', runServe),
};

function checkArgs(a: ServeArgs): void {
  const ints: [string, number | undefined, number][] = [
    ['port', a.port, 0],
    ['parallel', a.parallel, 1],
    ['max-queue', a['max-queue'], 0],
    ['max-tokens', a['max-tokens'], 0],
    ['kv-slots', a['kv-slots'], 0],
  ];
  for (const [name, v, min] of ints) {
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new InputError(`--${name} must be an integer >= ${min}, got ${v}`);
  }
  if (a.port > 65535) throw new InputError(`--port must be at most 65535, got ${a.port}`);
}

async function runServe(a: ServeArgs): Promise<void> {
  checkArgs(a);
  const apiKey = a['api-key'] ?? (process.env['LWM_API_KEY'] || undefined);
  if (apiKey === '') throw new InputError('--api-key is empty; give a key or leave the flag out');
  await initBackend();
  const context = await checkMemory('serve', { model: a.model, preset: a.preset, flags: a, caches: a.parallel + (a['kv-slots'] ?? a.parallel), capHint: 'fewer --parallel or --kv-slots leave room for more' });
  const choice = chooseModel('serve', { model: a.model, preset: a.preset, dtype: a.dtype, kvDtype: a['kv-dtype'], context });
  // Each request's cache is allocated once for the context the memory plan accepted.
  choice.model.kvCapacity = choice.model.config.maxSeqLen;
  try {
    const vqgan = chooseVqgan(a.vqgan, choice.dir);
    if (choice.model.isVision && !vqgan) note('lwm serve: no VQGAN (pass --vqgan DIR): requests with images or videos will be refused');
    const name = a['model-name'] ?? choice.name;
    const server = createServer(choice.model, loadTokenizer(choice.dir), {
      host: a.host,
      port: a.port,
      apiKey,
      parallel: a.parallel,
      maxQueue: a['max-queue'],
      ...(a['kv-slots'] !== undefined ? { kvSlots: a['kv-slots'] } : {}),
      allowedMediaDir: a['allowed-media-dir'],
      vqgan,
      mediaCacheDir: a['codes-cache'],
      modelName: name,
      system: a.system,
      defaultMaxTokens: a['max-tokens'],
      log: a.quiet ? null : (line) => note(`lwm serve: ${line}`),
    });
    const { url } = await server.listen();
    if (!apiKey && !['127.0.0.1', 'localhost', '::1'].includes(a.host)) note(`lwm serve: bound to ${a.host} without --api-key: anyone who can reach this port can use the model`);
    process.stdout.write(`lwm serve: listening on ${url} (model ${name})\n`);
    await untilSignal(server);
  } finally {
    choice.model.dispose();
  }
}

/** The first SIGINT/SIGTERM lets in-flight requests finish; a second cancels them. */
function untilSignal(server: LwmServer): Promise<void> {
  return new Promise((resolve, reject) => {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      if (++signals > 1) {
        void server.close({ abort: true });
        return;
      }
      const { inProgress, queued } = server.load();
      note(`lwm serve: ${sig}: shutting down${inProgress ? `; finishing ${inProgress} request(s) (${sig} again cancels them)` : ''}${queued ? `, turning ${queued} waiting away` : ''}`);
      server.close().then(
        () => {
          process.off('SIGINT', onSignal);
          process.off('SIGTERM', onSignal);
          resolve();
        },
        reject,
      );
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
