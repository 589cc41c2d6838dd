import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadCheckpoint } from '../../src/train/checkpoint.js';
import { cliPath, tmpDir } from '../helpers/paths.js';
import { expectOneLineError, lwm } from '../helpers/cli.js';

let dir = '';
let data = '';
const f = (...p: string[]): string => path.join(dir, ...p);

/** Metric lines with a training loss, as exact JSON text (bit-identical comparison). */
function losses(out: string): string[] {
  return fs
    .readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>)
    .filter((o) => o['loss'] !== undefined)
    .map((o) => `${o['step']}:${o['loss']}:${o['grad_norm']}`);
}

// A tiny text model on a JSONL file, short rows: each update takes a fraction of a second.
const base = (out: string): string[] => ['train', '--data', data, '--preset', 'tiny', '--seq-len', '64', '--batch-size', '2', '--steps', '10', '--lr', '3e-3', '--warmup-steps', '2', '--eval-every', '0', '--save-every', '3', '--keep', '2', '--log-every', '1', '--out', out];

beforeAll(() => {
  dir = tmpDir('train-cli');
  data = f('text.jsonl');
  const words = ['the cat', 'a dog', 'runs', 'jumps', 'over', 'the moon', 'quickly', 'and then'];
  const lines = Array.from({ length: 40 }, (_, i) => JSON.stringify({ text: Array.from({ length: 24 }, (_, j) => words[(i * 7 + j * 3) % words.length]).join(' ') }));
  fs.writeFileSync(data, lines.join('\n') + '\n');
});
afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('lwm train', () => {
  it('--eval-retrieval passkey: a passkey grid on the model being trained at every evaluation, logged to metrics.jsonl', () => {
    const out = f('retrieval');
    const r = lwm([...base(out), '--eval-every', '5', '--eval-retrieval', 'passkey', '--eval-contexts', '64', '--eval-depths', '0,100']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/passkey at step 5: \d+\.\d% \(64: \d+%\)/);
    const rows = fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const acc = rows.filter((o) => o['passkey_accuracy'] !== undefined);
    expect(acc.map((o) => o['step'])).toEqual([5, 10]);
    for (const o of acc) expect([0, 0.5, 1]).toContain(o['passkey_accuracy']);
    expectOneLineError(lwm([...base(f('retrieval-bad')), '--eval-retrieval', 'needle', '--eval-depths', '0,101']), /--eval-depths takes a comma list of integers in \[0, 100\]/);
  });

  it('killed (SIGKILL) mid-run and resumed, gives the same losses bit for bit as an uninterrupted run', async () => {
    const whole = lwm(base(f('whole')));
    expect(whole.code).toBe(0);
    expect(whole.stdout).toMatch(/trained 10 updates/);
    const want = losses(f('whole'));
    expect(want).toHaveLength(10);

    const child = spawn(process.execPath, [cliPath, ...base(f('killed'))], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    await new Promise<void>((resolve) => {
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        if (/step 7\/10/.test(err)) child.kill('SIGKILL');
      });
      child.on('exit', () => resolve());
    });
    expect(child.signalCode).toBe('SIGKILL');
    const resumed = lwm([...base(f('killed')), '--resume']);
    expect(resumed.code).toBe(0);
    expect(losses(f('killed'))).toEqual(want);
    // The kept checkpoints are the newest two, each a loadable model folder.
    expect(fs.readdirSync(f('killed', 'checkpoints')).sort()).toEqual(['step-00000009', 'step-00000010']);
    expect(fs.existsSync(f('killed', 'loss.png'))).toBe(true);
  });

  it('killed while writing a checkpoint, the previous one stays loadable and --resume continues from it', () => {
    const out = f('crash');
    const r = lwm(base(out), { env: { LWM_TEST_CRASH_IN_SAVE: '6' } });
    expect(r.signal).toBe('SIGKILL');
    const names = fs.readdirSync(path.join(out, 'checkpoints'));
    expect(names.filter((n) => n.startsWith('step-'))).toEqual(['step-00000003']);
    expect(names.some((n) => n.startsWith('.step-00000006.tmp-'))).toBe(true);
    expect(loadCheckpoint(path.join(out, 'checkpoints', 'step-00000003')).state.step).toBe(3);
    const again = lwm([...base(out), '--resume']);
    expect(again.code).toBe(0);
    expect(fs.readdirSync(path.join(out, 'checkpoints')).sort()).toEqual(['step-00000009', 'step-00000010']);
    expect(losses(out)).toEqual(losses(f('whole')));
  });

  it('Ctrl-C (SIGINT) saves a checkpoint at the current update and exits cleanly', async () => {
    const out = f('sigint');
    const child = spawn(process.execPath, [cliPath, ...base(out), '--save-every', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const code = await new Promise<number | null>((resolve) => {
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
        if (/step 3\/10/.test(err) && !child.killed) child.kill('SIGINT');
      });
      child.on('exit', (c) => resolve(c));
    });
    expect(code).toBe(0);
    const m = /stopped \(interrupted\) after (\d+) updates/.exec(stdout);
    expect(m).not.toBeNull();
    const step = Number(m![1]);
    expect(step).toBeGreaterThanOrEqual(3);
    expect(loadCheckpoint(path.join(out, 'checkpoints', `step-${String(step).padStart(8, '0')}`)).state.step).toBe(step);
  });

  it('--sp 2 (two processes, RingAttention) gives the losses and gradient norms of --sp 1', () => {
    const args = (out: string, sp: string) => [...base(out), '--steps', '3', '--save-every', '0', '--sp', sp, '--seq-len', '64'];
    const one = lwm(args(f('sp1'), '1'));
    const two = lwm(args(f('sp2'), '2'));
    expect(one.code).toBe(0);
    expect(two.code).toBe(0);
    const parse = (out: string) => losses(out).map((l) => l.split(':').map(Number));
    const a = parse(f('sp1'));
    const b = parse(f('sp2'));
    expect(b).toHaveLength(3);
    a.forEach((row, i) => {
      expect(Math.abs(row[1]! - b[i]![1]!)).toBeLessThan(1e-4 * row[1]!);
      expect(Math.abs(row[2]! - b[i]![2]!)).toBeLessThan(1e-3 * row[2]!);
    });
  });

  it('reads a YAML config whose keys are the flags; flags win', () => {
    const cfg = f('run.yaml');
    fs.writeFileSync(cfg, `data: ${data}\npreset: tiny\nseq-len: 64\nbatch-size: 2\nsteps: 50\nsave-every: 0\neval-every: 0\nlr: 0.001\n`);
    const r = lwm(['train', '--config', cfg, '--steps', '2', '--out', f('yaml')]);
    expect(r.code).toBe(0);
    expect(losses(f('yaml'))).toHaveLength(2);
  });

  it('bad settings are one-line errors', () => {
    expectOneLineError(lwm([...base(f('bad1')), '--lr', '-1']), /--lr/);
    expectOneLineError(lwm([...base(f('bad2')), '--sp', '2', '--seq-len', '66']), /--seq-len 66 must be divisible by 4 for --sp 2/);
    expectOneLineError(lwm([...base(f('bad3')), '--data', f('missing.jsonl')]), /missing\.jsonl: no such data/);
    expectOneLineError(lwm([...base(f('bad4')), '--batch-size', '3', '--grad-accum', '2']), /--batch-size 3 is not divisible by --grad-accum 2/);
    expectOneLineError(lwm(['train', '--config', f('nope.yaml')]), /--config .*nope\.yaml: cannot be read/);
    expectOneLineError(lwm(base(f('whole'))), /already holds checkpoints; pass --resume/);
  });
});
