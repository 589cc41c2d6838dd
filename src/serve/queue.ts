import { HttpError } from './errors.js';

interface Waiter {
  grant: (release: () => void) => void;
  fail: (err: unknown) => void;
}

/**
 * At most `parallel` requests hold a slot; up to `maxQueue` more wait in arrival order, and any
 * beyond that are turned away at once (503), so a burst cannot pile up unbounded work.
 */
export class SlotQueue {
  private active = 0;
  private readonly waiting: Waiter[] = [];
  private closedWith: unknown = null;

  constructor(
    readonly parallel: number,
    readonly maxQueue: number,
  ) {
    if (!Number.isInteger(parallel) || parallel < 1) throw new RangeError(`parallel must be a positive integer, got ${parallel}`);
    if (!Number.isInteger(maxQueue) || maxQueue < 0) throw new RangeError(`maxQueue must be a non-negative integer, got ${maxQueue}`);
  }

  get inProgress(): number {
    return this.active;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Resolves with the function that gives the slot back; an abort while waiting leaves the queue. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (this.active < this.parallel && this.waiting.length === 0) {
      this.active++;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.maxQueue) {
      return Promise.reject(
        new HttpError(503, `the server is busy: ${this.active} requests in progress and ${this.waiting.length} waiting (--max-queue ${this.maxQueue}); retry later`, {
          code: 'queue_full',
          headers: { 'Retry-After': '1' },
        }),
      );
    }
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.waiting.indexOf(waiter);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
        fail: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  /** Turns every waiting request away, and every later one (at shutdown); slots held stay held. */
  close(err: unknown): void {
    this.closedWith = err;
    for (const w of this.waiting.splice(0)) w.fail(err);
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiting.shift();
      // The slot passes straight to the next waiter, so a newcomer cannot overtake the queue.
      if (next) next.grant(this.releaser());
      else this.active--;
    };
  }
}
