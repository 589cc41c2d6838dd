import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export interface FfmpegLocation {
  path: string;
  /** Where it came from: LWM_FFMPEG, ffmpeg-static, @ffmpeg-installer/ffmpeg or PATH. */
  source: string;
}

/**
 * Finds ffmpeg without downloading anything: the LWM_FFMPEG override, then the npm packages that
 * ship a binary (ffmpeg-static is optional because its installer downloads; @ffmpeg-installer
 * carries the binary inside npm), then PATH. Null when there is none.
 */
export function findFfmpeg(): FfmpegLocation | null {
  const env = process.env['LWM_FFMPEG'];
  if (env) return { path: env, source: 'LWM_FFMPEG' };
  const fromPackage = (pkg: string, pick: (m: unknown) => unknown): FfmpegLocation | null => {
    try {
      const p = pick(require(pkg));
      return typeof p === 'string' && isExecutable(p) ? { path: p, source: pkg } : null;
    } catch {
      return null;
    }
  };
  const found =
    fromPackage('ffmpeg-static', (m) => m) ??
    fromPackage('@ffmpeg-installer/ffmpeg', (m) => (m as { path?: string }).path);
  if (found) return found;
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, 'ffmpeg');
    if (isExecutable(p)) return { path: p, source: 'PATH' };
  }
  return null;
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}
