import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { repoRoot, sharedFixtures } from './helpers/paths.js';

const copies = path.join(repoRoot, '__tests__', 'fixtures');

describe('fixture copies', () => {
  const names = fs.readdirSync(copies);

  it('carries at least the tiny-lwm-text reference model', () => {
    expect(names).toContain('tiny-lwm-text');
  });

  const haveShared = fs.existsSync(sharedFixtures);
  (haveShared ? it : it.skip)('are byte-identical to ../shared/fixtures', () => {
    for (const name of names) {
      for (const file of fs.readdirSync(path.join(sharedFixtures, name))) {
        const a = fs.readFileSync(path.join(sharedFixtures, name, file));
        const b = fs.readFileSync(path.join(copies, name, file));
        expect({ file: `${name}/${file}`, same: a.equals(b) }).toEqual({ file: `${name}/${file}`, same: true });
      }
    }
  });
});
