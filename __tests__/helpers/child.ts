import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { repoRoot } from './paths.js';

/**
 * Runs an ES module body in a plain `node` (tfjs inside jest's VM is ~100x slower) and returns the
 * JSON it prints last. `$dist` in the code is the built tree's absolute path, for imports.
 */
export function nodeJson<T>(code: string, timeoutMs = 120_000): T {
  const dist = path.join(repoRoot, 'dist');
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code.replaceAll('$dist', dist)], { encoding: 'utf8', timeout: timeoutMs, cwd: repoRoot });
  if (r.status !== 0) throw new Error(`child node failed (${r.status ?? r.signal}): ${r.stderr.trim().split('\n').slice(-8).join('\n')}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]!) as T;
}
