import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InputError } from '../../ops/errors.js';

/**
 * Finds a model repo that huggingface_hub already downloaded into its cache, read-only, so that
 * users can convert what `huggingface-cli download` fetched without a copy or a second download.
 * The layout and lookup order follow huggingface_hub (constants.py, snapshot_download offline):
 *   <cache>/models--<org>--<name>/{refs/<revision>, snapshots/<commit>/<file> -> ../../blobs/<etag>}
 */

export interface HfCacheOptions {
  /** Branch, tag, `refs/pr/N`, commit hash or a unique commit prefix (7+ hex); default `main`. */
  revision?: string;
  env?: NodeJS.ProcessEnv;
  /** Stands in for `~` (as $HOME does for Python's expanduser). */
  home?: string;
}

const COMMIT = /^[0-9a-f]{40}$/;

// Python's expanduser then expandvars, which huggingface_hub applies to HF_HOME and HF_HUB_CACHE;
// unknown $VARS stay as written, as in Python.
function expand(p: string, env: NodeJS.ProcessEnv, home: string): string {
  const u = p === '~' || p.startsWith('~/') ? home + p.slice(1) : p;
  return u.replace(/\$(\w+)|\$\{([^}]*)\}/g, (m, a?: string, b?: string) => env[(a ?? b)!] ?? m);
}

/** The hub cache folder huggingface_hub would use with this environment. */
export function hfCacheRoot(opts: Pick<HfCacheOptions, 'env' | 'home'> = {}): string {
  const env = opts.env ?? process.env;
  const home = opts.home ?? (env['HOME'] || os.homedir());
  // Empty values count as unset: Python would treat '' as the working folder, never what is meant.
  const get = (k: string) => env[k] || undefined;
  const hfHome = expand(get('HF_HOME') ?? path.join(get('XDG_CACHE_HOME') ?? path.join(home, '.cache'), 'huggingface'), env, home);
  return path.resolve(expand(get('HF_HUB_CACHE') ?? get('HUGGINGFACE_HUB_CACHE') ?? path.join(hfHome, 'hub'), env, home));
}

// huggingface_hub's validate_repo_id: it is what makes the '/' -> '--' folder name unambiguous.
function checkRepoId(repo: string): void {
  const ok = /^(\b[\w\-.]+\b\/)?\b[\w\-.]{1,96}\b$/.test(repo) && !repo.includes('--') && !repo.includes('..') && !repo.endsWith('.git');
  if (!ok) throw new InputError(`'${repo}' is not a Hugging Face repo id: use 'org/name' or a bare legacy name like 'gpt2' (letters, digits, '-', '_', '.'; no '--' or '..'), e.g. 'LargeWorldModel/LWM-Text-Chat-128K'`);
}

const list = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir, { withFileTypes: true }) : []).flatMap((e) =>
  e.isDirectory() ? list(path.join(dir, e.name)).map((f) => `${e.name}/${f}`) : [e.name]).sort();

const readJson = (file: string): unknown => {
  try { return JSON.parse(fs.readFileSync(file, 'utf8')); } catch { return undefined; }
};

/**
 * Files of a snapshot folder that an interrupted download or a pruned cache left unusable,
 * relative to `dir`: symlinks whose blob is gone, and shards an `*.index.json` names while some of
 * its other shards are present (all absent means they were filtered out, not interrupted).
 */
export function incompleteFiles(dir: string): string[] {
  const bad = new Set<string>();
  const files = list(dir);
  for (const f of files) if (fs.lstatSync(path.join(dir, f)).isSymbolicLink() && !fs.existsSync(path.join(dir, f))) bad.add(f);
  for (const f of files.filter((f) => f.endsWith('.index.json'))) {
    const map = (readJson(path.join(dir, f)) as { weight_map?: Record<string, string> } | undefined)?.weight_map;
    const shards = [...new Set(Object.values(map ?? {}))].map((s) => path.posix.join(path.posix.dirname(f), s));
    const missing = shards.filter((s) => !fs.existsSync(path.join(dir, s)));
    if (missing.length < shards.length) missing.forEach((s) => bad.add(s));
  }
  return [...bad].sort();
}

/**
 * The snapshot folder of `repo` at `revision` in the local Hugging Face cache; `revision` in the
 * result is the commit hash it resolved to. Never downloads or writes.
 */
export function resolveHfCache(repo: string, opts: HfCacheOptions = {}): { dir: string; cacheRoot: string; revision: string } {
  checkRepoId(repo);
  const cacheRoot = hfCacheRoot(opts);
  const repoDir = path.join(cacheRoot, `models--${repo.replace('/', '--')}`);
  const dl = (rev?: string) => `\`huggingface-cli download ${repo}${rev && rev !== 'main' ? ` --revision ${rev}` : ''}\``;
  if (!fs.existsSync(repoDir)) {
    throw new InputError(`${repo} is not in the Hugging Face cache (looked for ${repoDir}): download it with ${dl()}, or set HF_HUB_CACHE or HF_HOME to the cache that has it`);
  }
  const revision = opts.revision ?? 'main';
  // Refs are files under refs/ named by the revision, so one with '..' could read outside the repo.
  if (!revision || revision.split('/').some((s) => s === '' || s === '.' || s === '..')) {
    throw new InputError(`'${revision}' is not a revision: give a branch, tag or commit hash, e.g. main`);
  }
  const refs = list(path.join(repoDir, 'refs'));
  const snapshots = fs.existsSync(path.join(repoDir, 'snapshots'))
    ? fs.readdirSync(path.join(repoDir, 'snapshots'), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort()
    : [];
  const available = `refs: ${refs.join(', ') || 'none'}; snapshots: ${snapshots.join(', ') || 'none'}`;

  let commit: string | undefined;
  const refFile = path.join(repoDir, 'refs', revision);
  if (fs.existsSync(refFile) && fs.statSync(refFile).isFile()) {
    commit = fs.readFileSync(refFile, 'utf8').trim();
    if (!snapshots.includes(commit)) {
      throw new InputError(`${repo}: refs/${revision} points to commit ${commit}, which has no snapshot in ${repoDir}: re-download with ${dl(revision)}`);
    }
  } else if (/^[0-9a-fA-F]{7,40}$/.test(revision)) {
    const hits = snapshots.filter((s) => s.startsWith(revision.toLowerCase()));
    if (hits.length > 1) throw new InputError(`${repo}: commit prefix ${revision} matches ${hits.length} snapshots (${hits.join(', ')}): give more digits`);
    commit = hits[0];
  } else if (revision === 'main' && snapshots.length === 1 && COMMIT.test(snapshots[0]!)) {
    // A download pinned to a commit writes no refs/main; its only snapshot is what the user meant.
    commit = snapshots[0];
  }
  if (commit === undefined) {
    throw new InputError(`${repo}: revision '${revision}' is not in the cache at ${repoDir} (${available}): pass one of those or download it with ${dl(revision)}`);
  }

  const dir = path.join(repoDir, 'snapshots', commit);
  const bad = incompleteFiles(dir);
  if (bad.length) {
    const more = bad.length > 1 ? ` and ${bad.length - 1} more` : '';
    throw new InputError(`${repo}: ${bad[0]}${more} in ${dir} is incomplete (its blob is missing: an interrupted download or a pruned cache): re-download with ${dl(revision)}`);
  }
  return { dir, cacheRoot, revision: commit };
}
