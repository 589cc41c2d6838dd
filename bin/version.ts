import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** dist/bin/version.js sits two levels below package.json. */
export function packageVersion(): string {
  return (require('../../package.json') as { version: string }).version;
}
