import { spawnSync } from 'node:child_process';
import { expect } from '@jest/globals';
import { cliPath } from './paths.js';

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `lwm` command in a child process, as a user would. */
export function lwm(args: string[], opts: { env?: Record<string, string>; input?: string; cwd?: string; timeoutMs?: number } = {}): CliResult {
  const r = spawnSync(process.execPath, [cliPath, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
    input: opts.input,
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? 300_000,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/**
 * A failure as users must see it: exit code 1 and one line on stderr matching `pattern`, no stack
 * trace. `afterProgress` allows progress lines before it (commands that were under way).
 */
export function expectOneLineError(r: CliResult, pattern: RegExp, opts: { afterProgress?: boolean } = {}): void {
  expect(r.code).toBe(1);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  const lines = r.stderr.trim().split('\n');
  if (opts.afterProgress) expect(lines[lines.length - 1]).toMatch(pattern);
  else expect(lines).toEqual([expect.stringMatching(pattern)]);
}
