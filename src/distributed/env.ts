import { InputError } from '../../ops/errors.js';

export type LaunchSource = 'torchrun' | 'openmpi' | 'slurm' | 'single';

/** Where this process sits in a multi-process run, as its launcher described it. */
export interface LaunchInfo {
  rank: number;
  size: number;
  localRank: number;
  localSize: number;
  masterAddr: string;
  masterPort: number;
  source: LaunchSource;
}

type Env = Record<string, string | undefined>;

export const DEFAULT_MASTER_ADDR = '127.0.0.1';
export const DEFAULT_MASTER_PORT = 29500;

const HINT = 'launch with `lwm launch -n N -- <command>`, torchrun, mpirun or srun, or unset it for a single process';

function int(env: Env, name: string, min: number): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  // Number('1e3') and parseInt('3abc') both accept junk a launcher never writes.
  if (!/^\s*\d+\s*$/.test(raw)) throw new InputError(`${name}=${JSON.stringify(raw)} is not a non-negative integer; ${HINT}`);
  const v = Number(raw);
  if (v < min) throw new InputError(`${name}=${v} must be at least ${min}; ${HINT}`);
  return v;
}

/**
 * Slurm writes SLURM_TASKS_PER_NODE as e.g. "2(x3),1" (counts per node, compressed); the node's
 * own entry is SLURM_NODEID's.
 */
function slurmTasksOnNode(spec: string, node: number): number | undefined {
  const counts: number[] = [];
  for (const part of spec.split(',')) {
    const m = /^(\d+)(?:\(x(\d+)\))?$/.exec(part.trim());
    if (!m) return undefined;
    for (let i = 0; i < Number(m[2] ?? 1); i++) counts.push(Number(m[1]));
  }
  return counts[node];
}

interface Names {
  rank: string;
  size: string;
  localRank: string;
  localSize: string;
}

const TORCHRUN: Names = { rank: 'RANK', size: 'WORLD_SIZE', localRank: 'LOCAL_RANK', localSize: 'LOCAL_WORLD_SIZE' };
const OPENMPI: Names = {
  rank: 'OMPI_COMM_WORLD_RANK',
  size: 'OMPI_COMM_WORLD_SIZE',
  localRank: 'OMPI_COMM_WORLD_LOCAL_RANK',
  localSize: 'OMPI_COMM_WORLD_LOCAL_SIZE',
};
const SLURM: Names = { rank: 'SLURM_PROCID', size: 'SLURM_NTASKS', localRank: 'SLURM_LOCALID', localSize: 'SLURM_NTASKS_PER_NODE' };

function pick(env: Env): { source: LaunchSource; names: Names } {
  // torchrun-style variables win: `lwm launch` sets them, and inside an mpirun or srun allocation
  // they are how a user overrides what the scheduler wrote.
  if (env['RANK'] !== undefined || env['WORLD_SIZE'] !== undefined) return { source: 'torchrun', names: TORCHRUN };
  if (env['OMPI_COMM_WORLD_RANK'] !== undefined) return { source: 'openmpi', names: OPENMPI };
  if (env['SLURM_PROCID'] !== undefined && env['SLURM_NTASKS'] !== undefined) return { source: 'slurm', names: SLURM };
  return { source: 'single', names: TORCHRUN };
}

/**
 * Reads this process's rank, world size, local rank and the rendezvous address from the variables
 * torchrun (and `lwm launch`), OpenMPI or Slurm set. Without any of them: a single process.
 * Throws a one-line InputError naming the variable when a value is missing or out of range.
 */
export function detectLaunch(env: Env = process.env): LaunchInfo {
  const { source, names } = pick(env);
  const masterAddr = env['MASTER_ADDR']?.trim() || DEFAULT_MASTER_ADDR;
  const masterPort = int(env, 'MASTER_PORT', 1) ?? DEFAULT_MASTER_PORT;
  if (masterPort > 65535) throw new InputError(`MASTER_PORT=${masterPort} is not a TCP port (1-65535); set MASTER_PORT to a free port on rank 0's host`);
  if (source === 'single') return { rank: 0, size: 1, localRank: 0, localSize: 1, masterAddr, masterPort, source };

  const rank = int(env, names.rank, 0);
  const size = int(env, names.size, 1);
  if (rank === undefined) throw new InputError(`${names.size} is set but ${names.rank} is not; set both (${HINT})`);
  if (size === undefined) throw new InputError(`${names.rank}=${rank} is set but ${names.size} is not; set both (${HINT})`);
  if (rank >= size) throw new InputError(`${names.rank}=${rank} is out of range for ${names.size}=${size} (ranks are 0..${size - 1}); ${HINT}`);

  const localRank = int(env, names.localRank, 0) ?? (source === 'slurm' ? 0 : rank);
  let localSize = int(env, names.localSize, 1);
  if (localSize === undefined && source === 'slurm') {
    const node = int(env, 'SLURM_NODEID', 0) ?? 0;
    const spec = env['SLURM_TASKS_PER_NODE'];
    localSize = spec === undefined ? undefined : slurmTasksOnNode(spec, node);
  }
  // Without a per-node count, assume one node: the conservative choice for sharing its cores.
  localSize ??= size;
  if (localRank >= localSize) {
    throw new InputError(`${names.localRank}=${localRank} is out of range for ${names.localSize}=${localSize} (local ranks are 0..${localSize - 1}); ${HINT}`);
  }
  if (localSize > size) throw new InputError(`${names.localSize}=${localSize} is larger than ${names.size}=${size}; ${HINT}`);
  return { rank, size, localRank, localSize, masterAddr, masterPort, source };
}
