import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LwmError } from '../../ops/errors.js';

/** sha256 (hex) of a file, read in 8 MiB chunks so a multi-GB file is never in memory. */
export function sha256OfFile(file: string): string {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new LwmError(code === 'ENOENT' ? `${file}: no such file` : `${file}: cannot open (${code ?? String(e)})`);
  }
  try {
    const hash = createHash('sha256');
    const buf = Buffer.alloc(8 * 1024 * 1024);
    for (let pos = 0; ; ) {
      const n = fs.readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
      pos += n;
    }
    return hash.digest('hex');
  } finally {
    fs.closeSync(fd);
  }
}

/** Whether a process exists (EPERM: it does, but is not ours); decides if its temporaries are stale. */
export function isProcessAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Replaces the folder `target` by the finished folder `tmp`: the old one steps aside under a hidden
 * name tagged `tag`, the new one takes its name (the old one comes back if that fails), then the old
 * one is removed. A reader sees the old folder or the new one, never a mix.
 */
export function swapDirectory(tmp: string, target: string, tag: string): void {
  const old = path.join(path.dirname(target), `.${path.basename(target)}.old-${tag}`);
  fs.renameSync(target, old);
  try {
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.renameSync(old, target);
    throw e;
  }
  fs.rmSync(old, { recursive: true, force: true });
}
