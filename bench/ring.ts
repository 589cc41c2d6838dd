// Ring attention benchmark: a ring of 2 processes (one core each, `lwm launch`) against one
// process with both cores on the same total sequence (causal, zigzag), and the memory per token
// that bounds the longest sequence a process's attention holds in 24 GiB.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const worker = path.join(here, 'ringWorker.js');
const cli = path.join(here, '..', 'bin', 'lwm.js');
const GiB = 1024 ** 3;

export interface RingRun {
  ranks: number;
  seq: number;
  localTokens: number;
  heads: number;
  dim: number;
  fwdMs: number;
  fwdWaitMsPerStep: number;
  fwdBwdMs: number;
  fwdBwdWaitMsPerStep: number;
  maxRssMiB: number;
}

function run(ranks: number, args: string[]): RingRun {
  const env = { ...process.env };
  for (const k of ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'OMPI_COMM_WORLD_SIZE', 'SLURM_NTASKS', 'LWM_LOCAL_WORLD_SIZE']) delete env[k];
  const cmd = ranks === 1 ? [worker, ...args] : [cli, 'launch', '-n', String(ranks), '--', process.execPath, worker, ...args];
  const r = spawnSync(process.execPath, cmd, { encoding: 'utf8', env, timeout: 900_000 });
  if (r.status !== 0) throw new Error(`ring bench (${ranks} process${ranks > 1 ? 'es' : ''}) failed: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
  const line = r.stdout.trim().split('\n').filter((l) => l.includes('{')).pop()!;
  return JSON.parse(line.slice(line.indexOf('{'))) as RingRun;
}

/** Peak RSS = fixed + slope * local tokens, from two sizes; the local length that fits `budget`. */
function fit(a: RingRun, b: RingRun, budget: number) {
  const slope = ((b.maxRssMiB - a.maxRssMiB) * 1024 * 1024) / (b.localTokens - a.localTokens);
  const fixed = a.maxRssMiB * 1024 * 1024 - slope * a.localTokens;
  return { bytesPerLocalToken: slope, fixedMiB: fixed / 2 ** 20, maxLocalTokens: Math.floor((budget - fixed) / slope) };
}

export function ringBench(quick: boolean): { json: Record<string, unknown>; rows: [string, string][] } {
  const seq = quick ? 4096 : 8192;
  const args = ['--seq', String(seq), '--heads', '8', '--dim', '128', '--layout', 'zigzag', '--iters', quick ? '1' : '2'];
  const one = run(1, args);
  const two = run(2, args);
  // The same ring without load balancing: rank 1 holds the second half and does 3x rank 0's work.
  const plain = run(2, args.map((a) => (a === 'zigzag' ? 'contiguous' : a)));
  const ratio = one.fwdBwdMs / two.fwdBwdMs;
  const json: Record<string, unknown> = {
    one_process: one,
    ring_of_2: two,
    ring_of_2_contiguous: plain,
    throughput_ratio_fwd_bwd: ratio,
    throughput_ratio_fwd: one.fwdMs / two.fwdMs,
    throughput_ratio_fwd_bwd_contiguous: one.fwdBwdMs / plain.fwdBwdMs,
  };
  const rows: [string, string][] = [
    [`ring attn s=${seq} h=8 causal zigzag, 1 proc`, `fwd ${one.fwdMs.toFixed(0)} ms, fwd+bwd ${one.fwdBwdMs.toFixed(0)} ms`],
    [`ring attn same, 2 procs x 1 core`, `fwd ${two.fwdMs.toFixed(0)} ms, fwd+bwd ${two.fwdBwdMs.toFixed(0)} ms`],
    ['ring of 2 vs 1 process, throughput', `x${ratio.toFixed(2)} (fwd+bwd), waiting ${two.fwdWaitMsPerStep.toFixed(1)} / ${two.fwdBwdWaitMsPerStep.toFixed(1)} ms per step (fwd / fwd+bwd)`],
    ['same ring, contiguous layout', `fwd+bwd ${plain.fwdBwdMs.toFixed(0)} ms (x${(one.fwdBwdMs / plain.fwdBwdMs).toFixed(2)}), waiting ${plain.fwdBwdWaitMsPerStep.toFixed(1)} ms per step`],
  ];
  if (!quick) {
    // LWM-7B attention shape (32 heads x 128), forward + backward, at two lengths.
    const mem = (ranks: number, s: number) => run(ranks, ['--seq', String(s), '--heads', '32', '--dim', '128', '--layout', 'zigzag', '--iters', '1']);
    const single = fit(mem(1, 4096), mem(1, 8192), 24 * GiB);
    const ring = fit(mem(2, 4096), mem(2, 8192), 24 * GiB);
    json['memory_7b_attention_fwd_bwd'] = {
      note: 'peak RSS of one process, fitted linearly over two lengths; extrapolated, not run at the limit',
      single,
      ringRank: ring,
      maxSeqSingleProcess: single.maxLocalTokens,
      maxSeqRingOf2: 2 * ring.maxLocalTokens,
    };
    rows.push(['7B attn fwd+bwd memory, 1 process', `${(single.bytesPerLocalToken / 1024).toFixed(0)} KiB/token -> ~${single.maxLocalTokens} tokens in 24 GiB`]);
    rows.push(['same, per ring rank (24 GiB each)', `${(ring.bytesPerLocalToken / 1024).toFixed(0)} KiB/local token -> ring of 2 ~${2 * ring.maxLocalTokens} tokens`]);
  }
  return { json, rows };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = ringBench(process.argv.includes('--quick'));
  for (const [k, v] of r.rows) process.stdout.write(`  ${k.padEnd(44)} ${v}\n`);
  process.stdout.write(JSON.stringify(r.json, null, 2) + '\n');
}
