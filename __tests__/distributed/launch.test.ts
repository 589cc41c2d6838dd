import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from '@jest/globals';
import { launch, type LaunchOptions } from '../../src/distributed/launch.js';
import { repoRoot, tmpDir } from '../helpers/paths.js';

const node = process.execPath;

/** Runs launch() with its output captured. */
async function run(opts: Omit<LaunchOptions, 'stdout' | 'stderr'>) {
  let stdout = '';
  let stderr = '';
  const sink = (f: (s: string) => void) => new Writable({ write: (c, _e, cb) => (f(c.toString()), cb()) });
  const t = Date.now();
  const r = await launch({ ...opts, stdout: sink((s) => (stdout += s)), stderr: sink((s) => (stderr += s)) });
  return { ...r, stdout, stderr, ms: Date.now() - t };
}

const lines = (s: string) => s.split('\n').filter(Boolean).sort();

describe('lwm launch', () => {
  it('gives each rank its variables and prefixes its lines, partial last lines included', async () => {
    const code = `const e = process.env; console.log([e.RANK, e.WORLD_SIZE, e.LOCAL_RANK, e.LOCAL_WORLD_SIZE, e.MASTER_ADDR, e.MASTER_PORT > 0, e.LWM_LOCAL_WORLD_SIZE, e.CUDA_VISIBLE_DEVICES ?? '-', e.EXTRA].join(' ')); console.error('to stderr'); process.stdout.write('no newline')`;
    const r = await run({ nprocs: 2, command: [node, '-e', code], env: { EXTRA: 'x', CUDA_VISIBLE_DEVICES: undefined } });
    expect(r.code).toBe(0);
    expect(r.failed).toBeNull();
    expect(lines(r.stdout)).toEqual(['[rank 0] 0 2 0 2 127.0.0.1 true 2 - x', '[rank 0] no newline', '[rank 1] 1 2 1 2 127.0.0.1 true 2 - x', '[rank 1] no newline']);
    expect(lines(r.stderr)).toEqual(['[rank 0] to stderr', '[rank 1] to stderr']);
    const gpus = await run({ nprocs: 2, gpus: true, command: [node, '-e', 'console.log(process.env.CUDA_VISIBLE_DEVICES)'] });
    expect(lines(gpus.stdout)).toEqual(['[rank 0] 0', '[rank 1] 1']);
  });

  it('one rank failing stops the others and its exit code becomes the launcher\'s', async () => {
    const code = 'if (process.env.RANK === "1") process.exit(3); setTimeout(() => {}, 60000)';
    const r = await run({ nprocs: 3, command: [node, '-e', code] });
    expect(r.code).toBe(3);
    expect(r.failed).toMatchObject({ rank: 1, code: 3 });
    expect(r.stderr).toMatch(/^lwm launch: rank 1 \(pid \d+\) exited with code 3; stopping the other 2 ranks\n$/);
    expect(r.ranks.filter((x) => x.rank !== 1).map((x) => x.signal)).toEqual(['SIGTERM', 'SIGTERM']);
    expect(r.ms).toBeLessThan(10_000);
  });

  it('a rank that ignores SIGTERM is SIGKILLed after the grace period', async () => {
    // Rank 0 fails only once rank 1 has installed its handler (it creates the marker file).
    const dir = tmpDir('launch');
    const marker = path.join(dir, 'ready');
    const code = `const fs = require('fs'); process.on('SIGTERM', () => {}); if (process.env.RANK === '1') fs.writeFileSync(${JSON.stringify(marker)}, ''); else setInterval(() => fs.existsSync(${JSON.stringify(marker)}) && process.exit(2), 20); setInterval(() => {}, 1000)`;
    const r = await run({ nprocs: 2, command: [node, '-e', code], killGraceMs: 500 });
    fs.rmSync(dir, { recursive: true, force: true });
    expect(r.code).toBe(2);
    expect(r.ranks[1]!.signal).toBe('SIGKILL');
  });

  it('a command that cannot start fails with one line and code 127', async () => {
    const r = await run({ nprocs: 2, command: ['/nonexistent/lwm-test-program'] });
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/^lwm launch: could not start rank \d \(spawn \/nonexistent\/lwm-test-program ENOENT\); stopping the other 1 rank\n$/);
  });

  it('SIGTERM to the launcher reaches every rank; the launcher then exits non-zero', async () => {
    const script = path.join(repoRoot, 'dist', '__tests__', 'distributed', 'scripts', 'launcher.js');
    const code = 'process.on("SIGTERM", () => { console.log("rank " + process.env.RANK + " got SIGTERM"); process.exit(0); }); console.log("up"); setInterval(() => {}, 1000)';
    const child = spawn(node, [script, '2', '--', node, '-e', code], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    let sent = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (!sent && (out.match(/up/g) ?? []).length === 2) {
        sent = true;
        child.kill('SIGTERM');
      }
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const [code_, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
    clearTimeout(killer);
    expect(signal).toBeNull();
    expect(code_).toBe(143);
    expect(lines(out)).toEqual(['[rank 0] rank 0 got SIGTERM', '[rank 0] up', '[rank 1] rank 1 got SIGTERM', '[rank 1] up']);
    expect(err).toBe('lwm launch: got SIGTERM; passing it to every rank\n');
  });
});
