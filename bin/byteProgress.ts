import { clock } from './output.js';

const MB = 1e6;

export function byteSize(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / MB).toFixed(1)} MB`;
}

/**
 * A byte-count progress bar on stderr: redrawn in place on a terminal; on a pipe (logs, CI) one line
 * per tenth of the work, so a long conversion still shows it is alive without flooding the log.
 */
export class ByteProgress {
  private done = 0;
  private readonly start = performance.now();
  private lastTenth = -1;
  private drawn = false;

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
    private readonly enabled = true,
  ) {}

  add(bytes: number): void {
    this.done += bytes;
    if (!this.enabled) return;
    const tenth = Math.floor((10 * this.done) / Math.max(1, this.total));
    if (this.out.isTTY) {
      this.out.write(`\r${this.line()}\x1b[K`);
      this.drawn = true;
    } else if (tenth > this.lastTenth && this.done < this.total) {
      this.lastTenth = tenth;
      this.out.write(`${this.line()}\n`);
    }
  }

  /** The final line, always printed (it carries the average speed). */
  finish(): { bytes: number; seconds: number; bytesPerS: number } {
    const seconds = (performance.now() - this.start) / 1000;
    if (this.enabled) this.out.write(`${this.drawn ? '\r' : ''}${this.line()}${this.drawn ? '\x1b[K' : ''}\n`);
    return { bytes: this.done, seconds, bytesPerS: this.done / Math.max(seconds, 1e-9) };
  }

  private line(): string {
    const s = (performance.now() - this.start) / 1000;
    const frac = Math.min(1, this.done / Math.max(1, this.total));
    const width = 24;
    const bar = '#'.repeat(Math.round(frac * width)).padEnd(width, '.');
    const rate = this.done / Math.max(s, 1e-9);
    const eta = rate > 0 ? (this.total - this.done) / rate : NaN;
    return `${this.label} [${bar}] ${(100 * frac).toFixed(0).padStart(3)}% ${byteSize(this.done)}/${byteSize(this.total)} ${(rate / MB).toFixed(1)} MB/s ${clock(s)} eta ${clock(eta)}`;
  }
}
