import { LwmError } from '../src/index.js';

/** The only place the CLI formats failures: one line on stderr, exit code 1, stack only with --debug. */
export function reportError(command: string, err: unknown, debug: boolean): void {
  const e = err instanceof Error ? err : new Error(String(err));
  const oneLine = e.message.split('\n')[0];
  if (e instanceof LwmError) {
    process.stderr.write(`lwm ${command}: error: ${oneLine}\n`);
  } else {
    process.stderr.write(`lwm ${command}: internal error: ${oneLine} (this is a bug; rerun with --debug for the stack trace)\n`);
  }
  if (debug && e.stack) process.stderr.write(`${e.stack}\n`);
  process.exitCode = 1;
}

/** Wraps a command handler so every failure goes through reportError. */
export function handle<A extends { debug?: boolean }>(command: string, run: (args: A) => Promise<void>): (args: A) => Promise<void> {
  return async (args: A) => {
    try {
      await run(args);
    } catch (err) {
      reportError(command, err, Boolean(args.debug));
    }
  };
}

/** Seconds as m:ss, or h:mm:ss from an hour on; '--:--' when unknown (NaN, infinite, negative). */
export function clock(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '--:--';
  const t = Math.round(s);
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = String(t % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

/** Progress and notes go to stderr; stdout carries only the product. */
export function note(text: string): void {
  process.stderr.write(`${text}\n`);
}
