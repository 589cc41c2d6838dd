// Ring attention over real processes and the real transport (`lwm launch`), against the virtual
// ring in this process: the same arithmetic in the same order, so the bytes must be identical.
import { describe, expect, it } from '@jest/globals';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { defaultBlockKernel, layoutIndices, tfjsBlockKernel } from '../../src/index.js';
import { initBackend } from '../../src/backend.js';
import { cliPath, repoRoot, tmpDir } from '../helpers/paths.js';
import { makeRingCase, virtualRing } from '../helpers/ringCase.js';
import { lossSum, MODEL_LAYOUT, MODEL_TOKENS, modelGrads, modelInputs, OP_CASES, testModel, opCaseName } from '../helpers/ringProcessCases.js';

await initBackend();
const script = path.join(repoRoot, 'dist', '__tests__', 'distributed', 'scripts', 'ringRank.js');

function launch(n: number, out: string, mode: string): void {
  const r = spawnSync(process.execPath, [cliPath, 'launch', '-n', String(n), '--', process.execPath, script, out, mode], {
    encoding: 'utf8',
    timeout: 150_000,
    env: { ...process.env, LWM_RING_TIMEOUT: '60' },
  });
  if (r.status !== 0) throw new Error(`lwm launch -n ${n} exited ${r.status ?? r.signal}:\n${r.stderr}\n${r.stdout}`);
}

const read = (file: string) => {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
};

describe('ring attention over real processes', () => {
  for (const n of [2, 3, 4]) {
    it(`N=${n}: output, log-sum-exp and gradients equal the virtual ring bit for bit, every layout`, () => {
      const out = tmpDir(`ring${n}`);
      launch(n, out, 'op');
      for (const spec of OP_CASES) {
        const c = makeRingCase({ n, layout: spec.layout, causal: spec.causal, seed: 1000 + n });
        const want = virtualRing(c, spec.kernel === 'tfjs' ? tfjsBlockKernel : defaultBlockKernel(), spec.kernel === 'tfjs' ? 5 : 0);
        for (let r = 0; r < n; r++) {
          const w = want[r]!;
          const expected = Float32Array.from([w.o, w.lse, w.dq, w.dk, w.dv].flatMap((a) => Array.from(a)));
          const got = read(path.join(out, `${opCaseName(spec)}-r${r}.bin`));
          const same = Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(expected.buffer));
          if (!same) throw new Error(`N=${n} ${opCaseName(spec)} rank ${r}: the process ring differs from the virtual ring`);
        }
      }
      fs.rmSync(out, { recursive: true, force: true });
    });
  }
});

describe('a model over a ring', () => {
  for (const n of [2, 3]) {
    it(`N=${n} ${MODEL_LAYOUT}, packed documents with RoPE positions reset per document: logits and all-reduced weight gradients equal one process's`, () => {
      const out = tmpDir(`model${n}`);
      launch(n, out, 'model');
      const model = testModel();
      const x = modelInputs(n);
      const s = x.s;
      const fwd = (m: typeof model) => m.forward(x.ids, { attentionMask: x.mask, segmentIds: x.segmentIds, positions: x.positions });
      const lt = fwd(model);
      const logits = lt.dataSync() as Float32Array;
      lt.dispose();
      const vocab = logits.length / s;
      for (let r = 0; r < n; r++) {
        const got = read(path.join(out, `model-logits-r${r}.bin`));
        const idx = layoutIndices(s, n, r, MODEL_LAYOUT);
        let err = 0;
        idx.forEach((g, a) => {
          if (g >= MODEL_TOKENS) return; // padding rows mean nothing
          for (let j = 0; j < vocab; j++) err = Math.max(err, Math.abs(got[a * vocab + j]! - logits[g * vocab + j]!));
        });
        expect(err).toBeLessThan(1e-4);
      }
      const ref = modelGrads(model, (m) => lossSum(fwd(m), x.labels, x.weights));
      const rank0 = read(path.join(out, 'model-grads-r0.bin'));
      expect(rank0.length).toBe(1 + ref.grads.reduce((n, g) => n + g.length, 0));
      let scale = Math.abs(ref.loss);
      let err = Math.abs(rank0[0]! - ref.loss);
      let at = 1;
      for (const g of ref.grads) {
        for (let i = 0; i < g.length; i++) {
          scale = Math.max(scale, Math.abs(g[i]!));
          err = Math.max(err, Math.abs(rank0[at + i]! - g[i]!));
        }
        at += g.length;
      }
      expect(err / scale).toBeLessThan(1e-4);
      // All-reduce leaves every rank with the same bytes.
      for (let r = 1; r < n; r++) expect(fs.readFileSync(path.join(out, `model-grads-r${r}.bin`)).equals(fs.readFileSync(path.join(out, 'model-grads-r0.bin')))).toBe(true);
      tf.dispose([x.ids, x.labels, x.weights, x.segmentIds, x.positions, x.mask]);
      model.dispose();
      fs.rmSync(out, { recursive: true, force: true });
    });
  }
});

describe('a rank that dies mid-step', () => {
  // Started without `lwm launch`, as mpirun or srun would: the surviving ranks must notice by themselves.
  it('SIGKILL of rank 1 inside ring attention: every other rank exits non-zero within 30 s, naming rank 1', async () => {
    const out = tmpDir('die');
    const port = 20000 + (process.pid % 20000);
    const ranks = [0, 1, 2].map((rank) => {
      const env = { ...process.env, RANK: String(rank), WORLD_SIZE: '3', LOCAL_RANK: String(rank), LOCAL_WORLD_SIZE: '3', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), LWM_LOCAL_WORLD_SIZE: '3' };
      const child = spawn(process.execPath, [script, out, 'die'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const killer = setTimeout(() => child.kill('SIGKILL'), 90_000);
      return new Promise<{ rank: number; code: number | null; signal: string | null; stderr: string; at: number }>((resolve) =>
        child.on('exit', (code, signal) => {
          clearTimeout(killer);
          resolve({ rank, code, signal, stderr, at: Date.now() });
        }),
      );
    });
    const results = await Promise.all(ranks);
    expect(results[1]!.signal).toBe('SIGKILL');
    const died = Number(fs.readFileSync(path.join(out, 'started-r1'), 'utf8'));
    for (const r of [results[0]!, results[2]!]) {
      expect(r.signal).toBeNull(); // it exited by itself, not by this test's 90 s guard
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/rank 1\b/);
      expect((r.at - died) / 1000).toBeLessThan(30);
      expect(fs.existsSync(path.join(out, `finished-r${r.rank}`))).toBe(false);
    }
    fs.rmSync(out, { recursive: true, force: true });
  });
});
