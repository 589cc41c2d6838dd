/**
 * zeromq.js allows one send in progress per socket, and a send to a peer that stopped reading
 * can wait for a long time; queueing here keeps callers synchronous and the order intact.
 */
export interface Sendable {
  send(frames: (Buffer | Uint8Array)[]): Promise<void>;
}

export class Outbox {
  private readonly queue: (Buffer | Uint8Array)[][] = [];
  private running = false;
  private waiters: (() => void)[] = [];

  constructor(private readonly socket: Sendable) {}

  push(frames: (Buffer | Uint8Array)[]): void {
    this.queue.push(frames);
    if (!this.running) void this.run();
  }

  /** Resolves once everything pushed so far was handed to libzmq. */
  drained(): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private async run(): Promise<void> {
    this.running = true;
    for (let frames = this.queue.shift(); frames; frames = this.queue.shift()) {
      try {
        await this.socket.send(frames);
      } catch {
        // The socket closed under us (shutdown or abort): there is no one left to deliver to.
      }
    }
    this.running = false;
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

/**
 * Resolves when a socket's event observer has stopped (after the socket closed). A worker thread
 * that ends while an observer or a receive is still pending aborts the whole process inside
 * zeromq.js (zeromq/zeromq.js#411), so shutdown waits for these before the thread may end.
 */
export function observerEnded(socket: { events: { on(type: 'end', cb: () => void): unknown } }): Promise<void> {
  return new Promise((resolve) => socket.events.on('end', () => resolve()));
}

/** Feeds every message of `socket` to `handle` until the socket closes. */
export async function pump(
  socket: AsyncIterable<Buffer[]>,
  handle: (frames: Buffer[]) => void,
  onError: (err: unknown) => void,
): Promise<void> {
  try {
    for await (const frames of socket) handle(frames);
  } catch (err) {
    onError(err);
  }
}
