import * as fs from 'node:fs';
import * as path from 'node:path';

/** Every file under root by relative path, with its bytes (for byte-identical comparisons of outputs). */
export function treeBytes(root: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string): void => {
    for (const n of fs.readdirSync(d).sort()) {
      const p = path.join(d, n);
      if (fs.statSync(p).isDirectory()) walk(p);
      else out.set(path.relative(root, p), fs.readFileSync(p));
    }
  };
  walk(root);
  return out;
}
