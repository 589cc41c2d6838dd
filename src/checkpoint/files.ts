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

/**
 * sha256 of each byte range as it is written, checked again by reading the finished file back:
 * a short write, a full disk that did not raise, or a writer bug shows up before the file is used.
 */
export class WrittenRanges {
  private readonly ranges: { name: string; offset: number; length: number; hash: ReturnType<typeof createHash> | string }[] = [];

  begin(name: string, offset: number): void {
    this.ranges.push({ name, offset, length: 0, hash: createHash('sha256') });
  }

  /** Bytes of the range begun last, in file order. */
  update(bytes: Uint8Array): void {
    const r = this.ranges[this.ranges.length - 1]!;
    (r.hash as ReturnType<typeof createHash>).update(bytes);
    r.length += bytes.length;
  }

  get count(): number {
    return this.ranges.length;
  }

  /** Throws naming the first range whose bytes on disk differ, or a file of the wrong size. */
  verify(file: string, expectedSize: number): void {
    const size = fs.statSync(file).size;
    if (size !== expectedSize) throw new LwmError(`${file}: is ${size} bytes after writing, expected ${expectedSize}; the disk may be full, free space and convert again`);
    const fd = fs.openSync(file, 'r');
    try {
      const buf = Buffer.alloc(8 * 1024 * 1024);
      for (const r of this.ranges) {
        const want = typeof r.hash === 'string' ? r.hash : (r.hash = r.hash.digest('hex'));
        const h = createHash('sha256');
        for (let done = 0; done < r.length; ) {
          const n = fs.readSync(fd, buf, 0, Math.min(buf.length, r.length - done), r.offset + done);
          if (n === 0) break;
          h.update(buf.subarray(0, n));
          done += n;
        }
        if (h.digest('hex') !== want) throw new LwmError(`${file}: tensor '${r.name}' reads back differently from what was written (sha256); the disk or filesystem is failing, convert again elsewhere`);
      }
    } finally {
      fs.closeSync(fd);
    }
  }
}

/**
 * Removes `<dir>/<prefix><pid>` entries left by writers that were killed (their pid is gone), so an
 * interrupted run costs nothing beyond its own leftovers and the next run cleans them.
 */
export function removeStaleTemporaries(dir: string, prefix: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const removed: string[] = [];
  for (const name of fs.readdirSync(dir)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length));
    if (!Number.isInteger(pid) || pid <= 0 || isProcessAlive(pid)) continue;
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** Flushes a file or folder entry to disk, so a rename that follows survives a power cut. */
export function fsyncPath(p: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(p, 'r');
    fs.fsyncSync(fd);
  } catch {
    // Directory fsync is not supported everywhere; durability is best effort, atomicity is not.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
