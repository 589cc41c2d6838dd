import { clock } from './output.js';

const MB = 1e6;

export function byteSize(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / MB).toFixed(1)} MB`;
}

/**
 * A progress line on stderr: redrawn in place on a terminal; on a pipe (logs, CI) one line per
 * tenth of the work, so a long job still shows it is alive without flooding the log.
 */
export class ProgressLine {
  private lastTenth = -1;
  private drawn = false;

  constructor(
    private readonly out: NodeJS.WriteStream = process.stderr,
    private readonly enabled = true,
  ) {}

  update(fraction: number, line: string): void {
    if (!this.enabled) return;
    const tenth = Math.floor(10 * fraction);
    if (this.out.isTTY) {
      this.out.write(`\r${line}\x1b[K`);
      this.drawn = true;
    } else if (tenth > this.lastTenth && fraction < 1) {
      this.lastTenth = tenth;
      this.out.write(`${line}\n`);
    }
  }

  /** The final line, always printed. */
  finish(line: string): void {
    if (this.enabled) this.out.write(`${this.drawn ? '\r' : ''}${line}${this.drawn ? '\x1b[K' : ''}\n`);
  }
}

export function bar(fraction: number, width = 24): string {
  return '#'.repeat(Math.round(Math.min(1, fraction) * width)).padEnd(width, '.');
}

/** Bytes written so far with MB/s and ETA (conversions). */
export class ByteProgress {
  private done = 0;
  private readonly start = performance.now();
  private readonly line: ProgressLine;

  constructor(
    private readonly label: string,
    private readonly total: number,
    out: NodeJS.WriteStream = process.stderr,
    enabled = true,
  ) {
    this.line = new ProgressLine(out, enabled);
  }

  add(bytes: number): void {
    this.done += bytes;
    this.line.update(this.done / Math.max(1, this.total), this.text());
  }

  /** The final line carries the average speed. */
  finish(): { bytes: number; seconds: number; bytesPerS: number } {
    const seconds = (performance.now() - this.start) / 1000;
    this.line.finish(this.text());
    return { bytes: this.done, seconds, bytesPerS: this.done / Math.max(seconds, 1e-9) };
  }

  private text(): string {
    const s = (performance.now() - this.start) / 1000;
    const frac = Math.min(1, this.done / Math.max(1, this.total));
    const rate = this.done / Math.max(s, 1e-9);
    const eta = rate > 0 ? (this.total - this.done) / rate : NaN;
    return `${this.label} [${bar(frac)}] ${(100 * frac).toFixed(0).padStart(3)}% ${byteSize(this.done)}/${byteSize(this.total)} ${(rate / MB).toFixed(1)} MB/s ${clock(s)} eta ${clock(eta)}`;
  }
}
