/**
 * A scripted OpenAI-compatible server for `lwm data qa`: it answers each chat request with what a
 * script says for that passage and try (a good pair, malformed text, an empty answer, an answer
 * not in the passage, an HTTP 500, or no answer at all), and logs every request it answered.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

export type ScriptedReply = 'good' | 'malformed' | 'empty' | 'ungrounded' | 'http500' | 'hold';

export interface QaServer {
  url: string;
  /** Passages of the requests answered with a body (not held ones), in order. */
  answered: string[];
  /** Every request received, held ones included. */
  received: string[];
  close(): Promise<void>;
}

/** The passage between <passage> tags of a prompt. */
export function passageOf(prompt: string): string {
  return /<passage>\n([\s\S]*)\n<\/passage>/.exec(prompt)?.[1] ?? '';
}

/**
 * A grounded pair for a passage of sentences like "The code of item D-S is NNNNN.": asks for the
 * first item's code and answers it.
 */
export function goodReply(passage: string): string {
  const m = /The code of item (\S+) is (\d+)\./.exec(passage);
  if (!m) return 'Question: What is the first word of the passage?\nAnswer: ' + (passage.split(/\s+/)[0] ?? '');
  return `Question: What is the code of item ${m[1]}?\nAnswer: The code of item ${m[1]} is ${m[2]}.`;
}

const text: Record<Exclude<ScriptedReply, 'http500' | 'hold'>, (p: string) => string> = {
  good: goodReply,
  malformed: () => 'I am sorry, but I cannot help with that request.',
  empty: () => 'Question: What is described here?\nAnswer:',
  ungrounded: () => 'Question: What colour is the sky on Mars?\nAnswer: Butterscotch pink clouds drifting westward.',
};

/**
 * `script(passage, tryNo)` decides each reply; tryNo counts earlier requests for the same passage
 * (0 first). `onRequest` sees each request as it arrives (e.g. to kill the client).
 */
export async function startQaServer(
  script: (passage: string, tryNo: number, index: number) => ScriptedReply,
  onRequest?: (passage: string, index: number) => void,
): Promise<QaServer> {
  const answered: string[] = [];
  const received: string[] = [];
  const tries = new Map<string, number>();
  const held: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => (body += d));
    req.on('end', () => {
      const prompt = (JSON.parse(body) as { messages: { content: string }[] }).messages[0]!.content;
      const passage = passageOf(prompt);
      const index = received.length;
      received.push(passage);
      const tryNo = tries.get(passage) ?? 0;
      tries.set(passage, tryNo + 1);
      const what = script(passage, tryNo, index);
      onRequest?.(passage, index);
      if (what === 'hold') {
        held.push(res);
        return;
      }
      if (what === 'http500') {
        res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":{"message":"scripted failure"}}');
        return;
      }
      answered.push(passage);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ id: 'x', object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: text[what](passage) }, finish_reason: 'stop' }] }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/v1`,
    answered,
    received,
    close: () =>
      new Promise<void>((r) => {
        for (const h of held) h.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Documents of numbered sentences ("The code of item D-S is NNNNN."), some longer filler ones. */
export function syntheticDocs(docs: number, sentences: number, seed = 1): string[] {
  let s = seed;
  const rand = () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
  const filler = ['The river ran past the old mill and the bakery on the corner.', 'Nobody in the village could remember when the bridge was built!', 'Was it the miller who first kept the ledger of items?'];
  return Array.from({ length: docs }, (_, d) => {
    const parts: string[] = [];
    for (let i = 0; i < sentences; i++) {
      parts.push(`The code of item ${d}-${i} is ${10000 + Math.floor(rand() * 89999)}.`);
      if (rand() < 0.4) parts.push(filler[Math.floor(rand() * filler.length)]!);
      if (rand() < 0.1) parts.push('\n\n');
    }
    return parts.join(' ').replace(/ \n\n /g, '\n\n');
  });
}
