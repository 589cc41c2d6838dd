import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the nearest folder above this file with lwm's package.json. */
export const repoRoot = (() => {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(dir, 'package.json')) || !fs.readFileSync(path.join(dir, 'package.json'), 'utf8').includes('"name": "lwm"')) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the lwm repository root');
    dir = up;
  }
  return dir;
})();

/** Test data made outside the project, shared by every checkout that has it. */
export const sharedFixtures = path.resolve(repoRoot, '..', 'shared', 'fixtures');

/**
 * A fixture folder: ../shared/fixtures/NAME when this checkout sits next to shared/, else the
 * byte-identical copy the repo carries (fixtures.test.ts checks that they match).
 */
export function fixture(name: string): string {
  const shared = path.join(sharedFixtures, name);
  return fs.existsSync(shared) ? shared : path.join(repoRoot, '__tests__', 'fixtures', name);
}

export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(fs.realpathSync(process.env['TMPDIR'] ?? '/tmp'), `lwm-test-${prefix}-`));
}

export const cliPath = path.join(repoRoot, 'dist', 'bin', 'lwm.js');
