// Training throughput: optimizer updates per second of a preset at one row of `seq` tokens, as one
// process (all cores) and as a ring of 2 processes (`lwm launch`, one core each), with MFU against
// the machine's measured peak. The row is fully weighted, so both heads' FLOPs count.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { presetConfig } from '../src/index.js';
import { headFlops, trainFlopsPerToken } from '../src/train/run.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const worker = path.join(here, 'trainWorker.js');
const cli = path.join(here, '..', 'bin', 'lwm.js');

export interface TrainRun {
  preset: string;
  seq: number;
  ranks: number;
  remat: boolean;
  stepMs: number;
  tokensPerSecond: number;
  mfu: number;
  rssMiB: number;
}

function run(preset: string, seq: number, ranks: number, steps: number, peak: number, remat = false): TrainRun | string {
  const env = { ...process.env };
  for (const k of ['RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'LOCAL_WORLD_SIZE', 'OMPI_COMM_WORLD_SIZE', 'SLURM_NTASKS', 'LWM_LOCAL_WORLD_SIZE']) delete env[k];
  const args = [worker, preset, String(seq), String(steps), remat ? 'remat' : 'plain'];
  const cmd = ranks === 1 ? args : [cli, 'launch', '-n', String(ranks), '--', process.execPath, ...args];
  const r = spawnSync(process.execPath, cmd, { encoding: 'utf8', env, timeout: 1_800_000 });
  const line = r.stdout.split('\n').find((l) => l.replace(/^\[rank 0\] /, '').startsWith('{'));
  if (r.status !== 0 || !line) return `failed (${r.status ?? r.signal}): ${r.stderr.trim().split('\n').pop() ?? ''}`;
  const o = JSON.parse(line.replace(/^\[rank 0\] /, '')) as Omit<TrainRun, 'mfu'>;
  const c = presetConfig(preset);
  const flopsPerToken = trainFlopsPerToken(c, seq) + headFlops(c, false);
  return { ...o, mfu: (o.tokensPerSecond * flopsPerToken) / (peak * 1e9) };
}

export function trainBench(quick: boolean, peak: number): { runs: (TrainRun | string)[] } {
  const [preset, seq, steps] = quick ? ['debug', 1024, 1] : ['100m', 4096, 2];
  return { runs: [run(preset, seq, 1, steps, peak), run(preset, seq, 2, steps, peak), ...(quick ? [] : [run(preset, seq, 1, steps, peak, true)])] };
}
