import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../../ops/index.js';
import { badRequest, HttpError } from './errors.js';

/** The allowed media folder as given (made absolute) and as its real path; checked once at startup. */
export interface MediaRoot {
  given: string;
  real: string;
}

export function mediaRoot(dir: string): MediaRoot {
  let real: string;
  try {
    real = fs.realpathSync(dir);
  } catch {
    throw new ConfigError(`--allowed-media-dir ${dir}: no such folder`);
  }
  if (!fs.statSync(real).isDirectory()) throw new ConfigError(`--allowed-media-dir ${dir}: not a folder`);
  return { given: path.resolve(dir), real };
}

function inside(root: string, p: string): boolean {
  return p === root || p.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

/**
 * The real path of a media file a request names: a local path (relative ones are taken from the
 * allowed folder) or a file:// URL. Nothing outside the allowed folder is read or even looked up,
 * whether reached through `..` or through a symlink; remote URLs are never fetched.
 */
export function resolveMediaPath(url: string, root: MediaRoot, param: string): string {
  let p = url;
  const scheme = /^([a-z][a-z0-9+.-]+):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'file') {
    try {
      p = fileURLToPath(url);
    } catch (e) {
      throw badRequest(`${param}: not a usable file:// URL (${(e as Error).message})`, param, 'invalid_media_url');
    }
  } else if (scheme) {
    throw badRequest('remote media is not fetched; give a local path inside --allowed-media-dir', param, 'remote_media');
  }
  const denied = (): HttpError =>
    new HttpError(403, `${url}: outside the folder the server may read media from (--allowed-media-dir)`, { param, code: 'media_outside_allowed_dir' });
  // Paths under the folder's given name (which may be a symlink) count too; where they really lead is checked next.
  const lexical = path.resolve(root.real, p);
  if (!inside(root.real, lexical) && !inside(root.given, lexical)) throw denied();
  let real: string;
  try {
    real = fs.realpathSync(lexical);
  } catch {
    throw badRequest(`${url}: no such file in the allowed media folder`, param, 'media_not_found');
  }
  if (!inside(root.real, real)) throw denied();
  if (!fs.statSync(real).isFile()) throw badRequest(`${url}: not a file`, param, 'media_not_found');
  return real;
}
