import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import { InputError } from '../../../ops/errors.js';
import { hfCacheRoot, incompleteFiles, resolveHfCache } from '../../../src/convert/hfCache.js';
import { tmpDir } from '../../helpers/paths.js';

const work = tmpDir('hf-cache');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const A = 'a'.repeat(8) + '1'.repeat(32);
const B = 'b'.repeat(40);
const A2 = 'a'.repeat(8) + '2'.repeat(32);

let n = 0;
/**
 * A cache as huggingface_hub writes it: content-addressed blobs, snapshot files that are relative
 * symlinks into them (nested files get one more '..'), refs holding the bare commit hash.
 */
function cache(repo: string, layout: { refs?: Record<string, string>; snapshots: Record<string, Record<string, string>> }): { root: string; repoDir: string; blob: (text: string) => string } {
  const root = path.join(work, `c${n++}`, 'hub');
  const repoDir = path.join(root, `models--${repo.replace('/', '--')}`);
  const blob = (text: string) => path.join(repoDir, 'blobs', crypto.createHash('sha256').update(text).digest('hex'));
  fs.mkdirSync(path.join(repoDir, 'blobs'), { recursive: true });
  for (const [ref, commit] of Object.entries(layout.refs ?? {})) {
    fs.mkdirSync(path.dirname(path.join(repoDir, 'refs', ref)), { recursive: true });
    fs.writeFileSync(path.join(repoDir, 'refs', ref), commit);
  }
  for (const [commit, files] of Object.entries(layout.snapshots)) {
    for (const [name, text] of Object.entries(files)) {
      const link = path.join(repoDir, 'snapshots', commit, name);
      fs.mkdirSync(path.dirname(link), { recursive: true });
      fs.writeFileSync(blob(text), text);
      fs.symlinkSync(path.relative(path.dirname(link), blob(text)), link);
    }
  }
  return { root, repoDir, blob };
}

const thrown = (f: () => unknown): Error => {
  try { f(); } catch (e) { return e as Error; }
  throw new Error('expected a throw');
};
const inputError = (f: () => unknown, ...parts: (string | RegExp)[]) => {
  const e = thrown(f);
  expect(e).toBeInstanceOf(InputError);
  expect(e.message).not.toContain('\n');
  for (const p of parts) expect(e.message).toMatch(p);
};

describe('hfCacheRoot follows huggingface_hub constants.py', () => {
  const home = '/home/u';
  const cases: [Record<string, string>, string][] = [
    [{}, '/home/u/.cache/huggingface/hub'],
    [{ HOME: '/h2' }, '/h2/.cache/huggingface/hub'],
    [{ XDG_CACHE_HOME: '/xdg' }, '/xdg/huggingface/hub'],
    [{ XDG_CACHE_HOME: '/xdg', HF_HOME: '/hf' }, '/hf/hub'],
    [{ HF_HOME: '/hf', HUGGINGFACE_HUB_CACHE: '/legacy' }, '/legacy'],
    [{ HF_HOME: '/hf', HUGGINGFACE_HUB_CACHE: '/legacy', HF_HUB_CACHE: '/new' }, '/new'],
    [{ HF_HOME: '~/hf' }, '/home/u/hf/hub'],
    [{ HF_HUB_CACHE: '$BASE/x/${SUB}', BASE: '/b', SUB: 's' }, '/b/x/s'],
    [{ HF_HUB_CACHE: '', HF_HOME: '/hf' }, '/hf/hub'],
  ];
  it.each(cases)('%j -> %s', (env, expected) => {
    expect(hfCacheRoot({ env, ...(env['HOME'] ? {} : { home }) })).toBe(expected);
  });
});

describe('resolveHfCache', () => {
  const repo = 'LargeWorldModel/LWM-Text-Chat-128K';
  const c = cache(repo, {
    refs: { main: `${A}\n`, 'v1.0': B, 'refs/pr/3': A2 },
    snapshots: {
      [A]: { 'config.json': '{"v":"main"}', 'tokenizer/vocab.json': '{}' },
      [B]: { 'config.json': '{"v":"tag"}' },
      [A2]: { 'config.json': '{"v":"pr"}' },
    },
  });
  const env = { HF_HUB_CACHE: c.root };

  it('resolves main through refs/main to its snapshot, whose symlinks read as the files', () => {
    const r = resolveHfCache(repo, { env });
    expect(r).toEqual({ dir: path.join(c.repoDir, 'snapshots', A), cacheRoot: c.root, revision: A });
    expect(fs.readFileSync(path.join(r.dir, 'config.json'), 'utf8')).toBe('{"v":"main"}');
    expect(fs.lstatSync(path.join(r.dir, 'config.json')).isSymbolicLink()).toBe(true);
  });

  it('resolves a tag, a PR ref, a full commit hash and a unique prefix', () => {
    expect(resolveHfCache(repo, { env, revision: 'v1.0' }).revision).toBe(B);
    expect(resolveHfCache(repo, { env, revision: 'refs/pr/3' }).revision).toBe(A2);
    expect(resolveHfCache(repo, { env, revision: B }).dir).toBe(path.join(c.repoDir, 'snapshots', B));
    expect(resolveHfCache(repo, { env, revision: 'BBBBBBB' }).revision).toBe(B);
    inputError(() => resolveHfCache(repo, { env, revision: 'aaaaaaaa' }), /matches 2 snapshots/, A, A2);
  });

  it('finds the cache through HF_HOME and XDG_CACHE_HOME too', () => {
    const hfHome = path.dirname(c.root);
    expect(resolveHfCache(repo, { env: { HF_HOME: hfHome } }).revision).toBe(A);
    expect(resolveHfCache(repo, { env: { HUGGINGFACE_HUB_CACHE: c.root, HF_HOME: '/nowhere' } }).revision).toBe(A);
    fs.symlinkSync(hfHome, path.join(work, 'huggingface'));
    expect(resolveHfCache(repo, { env: { XDG_CACHE_HOME: work } }).cacheRoot).toBe(path.join(work, 'huggingface', 'hub'));
    fs.mkdirSync(path.join(work, 'h', '.cache'), { recursive: true });
    fs.symlinkSync(hfHome, path.join(work, 'h', '.cache', 'huggingface'));
    expect(resolveHfCache(repo, { env: {}, home: path.join(work, 'h') }).revision).toBe(A);
  });

  it('names a missing revision and lists what the cache has', () => {
    inputError(() => resolveHfCache(repo, { env, revision: 'v2' }), "revision 'v2'", 'refs: main, refs/pr/3, v1.0', `snapshots: ${A}, ${A2}, ${B}`, `--revision v2`);
    inputError(() => resolveHfCache(repo, { env, revision: 'c'.repeat(40) }), 'not in the cache');
    inputError(() => resolveHfCache(repo, { env, revision: '../../x' }), 'not a revision');
  });

  it('says which folder was searched when the repo is not cached', () => {
    inputError(() => resolveHfCache('org/absent', { env }), path.join(c.root, 'models--org--absent'), '`huggingface-cli download org/absent`', 'HF_HUB_CACHE', 'HF_HOME');
  });

  it('rejects repo ids huggingface_hub rejects and accepts canonical ones', () => {
    for (const bad of ['', 'a/b/c', 'org--x/y', '../x', 'x.git', '-x/y', 'org/na me']) inputError(() => resolveHfCache(bad, { env }), 'not a Hugging Face repo id');
    const g = cache('gpt2', { snapshots: { [A]: { 'config.json': '{}' } } });
    expect(resolveHfCache('gpt2', { env: { HF_HUB_CACHE: g.root } }).dir).toBe(path.join(g.root, 'models--gpt2', 'snapshots', A));
  });

  it('uses the only snapshot when a pinned download wrote no refs/main, and refuses to guess between two', () => {
    const one = cache('o/one', { snapshots: { [B]: { 'config.json': '{}' } } });
    expect(resolveHfCache('o/one', { env: { HF_HUB_CACHE: one.root } }).revision).toBe(B);
    const two = cache('o/two', { snapshots: { [A]: { 'config.json': '{}' }, [B]: { 'config.json': '{}' } } });
    inputError(() => resolveHfCache('o/two', { env: { HF_HUB_CACHE: two.root } }), "revision 'main'", 'refs: none', `snapshots: ${A}, ${B}`);
  });

  it('reports a ref whose snapshot folder is gone', () => {
    const r = cache('o/ref', { refs: { main: A }, snapshots: { [B]: { 'config.json': '{}' } } });
    inputError(() => resolveHfCache('o/ref', { env: { HF_HUB_CACHE: r.root } }), `refs/main points to commit ${A}`, 're-download');
  });
});

describe('incomplete downloads', () => {
  it('names a snapshot file whose blob is missing', () => {
    const c = cache('o/dangling', { refs: { main: A }, snapshots: { [A]: { 'config.json': '{}', 'model.safetensors': 'weights' } } });
    fs.rmSync(c.blob('weights'));
    const dir = path.join(c.repoDir, 'snapshots', A);
    expect(incompleteFiles(dir)).toEqual(['model.safetensors']);
    inputError(() => resolveHfCache('o/dangling', { env: { HF_HUB_CACHE: c.root } }), 'model.safetensors in', 'incomplete', '`huggingface-cli download o/dangling`');
  });

  it('flags missing shards of a partly downloaded index, not an index whose shards were all filtered out', () => {
    const map = (ext: string) => JSON.stringify({ weight_map: { a: `m-1.${ext}`, b: `m-2.${ext}`, c: `m-2.${ext}` } });
    const c = cache('o/shards', {
      snapshots: { [A]: { 'model.safetensors.index.json': map('safetensors'), 'm-1.safetensors': 'one', 'pytorch_model.bin.index.json': map('bin') } },
    });
    expect(incompleteFiles(path.join(c.repoDir, 'snapshots', A))).toEqual(['m-2.safetensors']);
  });
});
