// Drivers for the ring programs of core.ts: one rank over a real RingGroup, or every rank of a
// simulated ring in one process (tests, and a way to check a layout without launching processes).
import { InputError, LwmError } from '../errors.js';
import type { RingProgram } from './core.js';
import { sameTag, tagString, type RingArray, type RingGroup, type RingTag } from './types.js';

/** Runs one rank's program, blocking on the group for every receive. */
export function runOnGroup<T>(program: RingProgram<T>, group: RingGroup): T {
  let input: RingArray[] | undefined;
  for (;;) {
    const step = program.next(input);
    if (step.done) return step.value;
    const op = step.value;
    input = undefined;
    if (op.kind === 'send') group.sendNext(op.tag, op.arrays);
    else input = group.recvPrev(op.tag);
  }
}

const copy = (a: RingArray): RingArray => (a instanceof Float32Array ? Float32Array.from(a) : Int32Array.from(a));

/**
 * Runs the programs of ranks 0..N-1 in lockstep with in-memory mailboxes. Messages are copied
 * on send, as the real transport does, so a program that reused a sent array would show here too.
 */
export function runVirtualRing<T>(programs: RingProgram<T>[]): T[] {
  const n = programs.length;
  const mail: { tag: RingTag; arrays: RingArray[] }[][] = programs.map(() => []);
  const waiting: (RingTag | null)[] = programs.map(() => null);
  const results: (T | undefined)[] = programs.map(() => undefined);
  const done = programs.map(() => false);
  let input: (RingArray[] | undefined)[] = programs.map(() => undefined);

  const advance = (r: number): boolean => {
    let moved = false;
    for (;;) {
      if (waiting[r]) {
        const msg = mail[r]!.shift();
        if (!msg) return moved;
        if (!sameTag(msg.tag, waiting[r]!)) {
          throw new LwmError(`virtual ring: rank ${r} expected ${tagString(waiting[r]!)} but got ${tagString(msg.tag)}`);
        }
        input[r] = msg.arrays;
        waiting[r] = null;
      }
      const step = programs[r]!.next(input[r]);
      input[r] = undefined;
      moved = true;
      if (step.done) {
        done[r] = true;
        results[r] = step.value;
        return true;
      }
      const op = step.value;
      if (op.kind === 'send') mail[(r + 1) % n]!.push({ tag: op.tag, arrays: op.arrays.map(copy) });
      else waiting[r] = op.tag;
    }
  };

  while (done.some((d) => !d)) {
    let progressed = false;
    for (let r = 0; r < n; r++) if (!done[r] && advance(r)) progressed = true;
    if (!progressed) {
      const stuck = waiting.map((t, r) => (t && !done[r] ? `rank ${r} waits for ${tagString(t)}` : '')).filter(Boolean);
      throw new LwmError(`virtual ring deadlock: ${stuck.join('; ')}`);
    }
  }
  for (let r = 0; r < n; r++) {
    if (mail[r]!.length > 0) throw new LwmError(`virtual ring: rank ${r} finished with ${mail[r]!.length} unread message(s), first ${tagString(mail[r]![0]!.tag)}`);
  }
  return results as T[];
}

/** A group of one: blockwise attention is ring attention without messages. */
export class SoloGroup implements RingGroup {
  readonly rank = 0;
  readonly size = 1;
  private calls = 0;
  sendNext(): void {
    throw new InputError('a group of one has no neighbour to send to');
  }
  recvPrev(): RingArray[] {
    throw new InputError('a group of one has no neighbour to receive from');
  }
  nextCall(): number {
    return this.calls++;
  }
}
