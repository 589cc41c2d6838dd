import { describe, expect, it } from '@jest/globals';
import { ConfigError, InputError } from '../../ops/errors.js';
import { resolveRingConfig } from '../../src/distributed/config.js';
import { detectLaunch } from '../../src/distributed/env.js';
import { ProcessGroup } from '../../src/distributed/processGroup.js';

describe('detectLaunch', () => {
  it('with no launcher variables: one process', () => {
    expect(detectLaunch({})).toEqual({ rank: 0, size: 1, localRank: 0, localSize: 1, masterAddr: '127.0.0.1', masterPort: 29500, source: 'single' });
  });

  it('reads torchrun / lwm launch variables', () => {
    const env = { RANK: '3', WORLD_SIZE: '8', LOCAL_RANK: '1', LOCAL_WORLD_SIZE: '2', MASTER_ADDR: 'node7', MASTER_PORT: '1234' };
    expect(detectLaunch(env)).toEqual({ rank: 3, size: 8, localRank: 1, localSize: 2, masterAddr: 'node7', masterPort: 1234, source: 'torchrun' });
  });

  it('reads OpenMPI variables, with MASTER_ADDR/PORT from the environment or defaults', () => {
    const env = { OMPI_COMM_WORLD_RANK: '5', OMPI_COMM_WORLD_SIZE: '6', OMPI_COMM_WORLD_LOCAL_RANK: '2', OMPI_COMM_WORLD_LOCAL_SIZE: '3' };
    expect(detectLaunch(env)).toEqual({ rank: 5, size: 6, localRank: 2, localSize: 3, masterAddr: '127.0.0.1', masterPort: 29500, source: 'openmpi' });
    expect(detectLaunch({ ...env, MASTER_ADDR: '10.0.0.1', MASTER_PORT: '4000' }).masterAddr).toBe('10.0.0.1');
  });

  it('reads Slurm variables, including the compressed SLURM_TASKS_PER_NODE', () => {
    const env = { SLURM_PROCID: '4', SLURM_NTASKS: '6', SLURM_LOCALID: '0', SLURM_NTASKS_PER_NODE: '2', MASTER_ADDR: 'n1' };
    expect(detectLaunch(env)).toEqual({ rank: 4, size: 6, localRank: 0, localSize: 2, masterAddr: 'n1', masterPort: 29500, source: 'slurm' });
    const compressed = { SLURM_PROCID: '5', SLURM_NTASKS: '7', SLURM_LOCALID: '0', SLURM_TASKS_PER_NODE: '2(x3),1', SLURM_NODEID: '3' };
    expect(detectLaunch(compressed).localSize).toBe(1);
  });

  it('torchrun variables win over the scheduler', () => {
    expect(detectLaunch({ RANK: '1', WORLD_SIZE: '2', OMPI_COMM_WORLD_RANK: '0', OMPI_COMM_WORLD_SIZE: '4' }).source).toBe('torchrun');
  });

  it.each([
    [{ RANK: '1' }, /RANK=1 is set but WORLD_SIZE is not/],
    [{ WORLD_SIZE: '2' }, /WORLD_SIZE is set but RANK is not/],
    [{ RANK: 'one', WORLD_SIZE: '2' }, /RANK="one" is not a non-negative integer/],
    [{ RANK: '-1', WORLD_SIZE: '2' }, /RANK="-1"/],
    [{ RANK: '2', WORLD_SIZE: '2' }, /RANK=2 is out of range for WORLD_SIZE=2/],
    [{ RANK: '0', WORLD_SIZE: '0' }, /WORLD_SIZE=0 must be at least 1/],
    [{ RANK: '0', WORLD_SIZE: '2', LOCAL_RANK: '2', LOCAL_WORLD_SIZE: '2' }, /LOCAL_RANK=2 is out of range/],
    [{ OMPI_COMM_WORLD_RANK: '3', OMPI_COMM_WORLD_SIZE: '2' }, /OMPI_COMM_WORLD_RANK=3 is out of range for OMPI_COMM_WORLD_SIZE=2/],
    [{ SLURM_PROCID: 'x', SLURM_NTASKS: '2' }, /SLURM_PROCID="x"/],
    [{ MASTER_PORT: '70000' }, /MASTER_PORT=70000 is not a TCP port/],
    [{ MASTER_PORT: '12ab' }, /MASTER_PORT="12ab"/],
  ])('%j: one-line InputError naming the variable', (env, pattern) => {
    let err: unknown;
    try {
      detectLaunch(env);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(pattern);
    expect((err as Error).message).not.toContain('\n');
  });
});

describe('ring configuration', () => {
  it('reads timeouts and addresses from LWM_RING_* variables', () => {
    const c = resolveRingConfig({
      env: { RANK: '1', WORLD_SIZE: '2', LWM_RING_TIMEOUT: '7', LWM_RING_HEARTBEAT_TIMEOUT: '2', LWM_RING_CONNECT_TIMEOUT: '3', LWM_RING_SECRET: 's' },
    });
    expect([c.rank, c.size, c.recvTimeoutMs, c.heartbeatTimeoutMs, c.heartbeatIntervalMs, c.connectTimeoutMs, c.secret]).toEqual([1, 2, 7000, 2000, 500, 3000, 's']);
    expect([c.bindAddr, c.advertiseAddr]).toEqual(['127.0.0.1', '127.0.0.1']);
  });

  it('a bad timeout is a ConfigError naming the variable', () => {
    expect(() => resolveRingConfig({ env: { LWM_RING_TIMEOUT: 'soon' } })).toThrow(/LWM_RING_TIMEOUT="soon" must be a positive number of seconds/);
  });

  it.each([
    [{ MASTER_ADDR: '10.1.2.3' }, /MASTER_ADDR=10\.1\.2\.3 is not a loopback address, so LWM_RING_SECRET must be set/],
    [{ LWM_RING_BIND_ADDR: '0.0.0.0' }, /LWM_RING_BIND_ADDR=0\.0\.0\.0 is not a loopback address/],
  ])('off loopback without a secret (%j): init refuses with a ConfigError before opening any socket', async (extra, pattern) => {
    const init = ProcessGroup.init({ env: { RANK: '0', WORLD_SIZE: '2', ...extra } });
    await expect(init).rejects.toThrow(ConfigError);
    await expect(init).rejects.toThrow(pattern);
  });

  it('off loopback with a secret: the configuration is accepted', () => {
    expect(resolveRingConfig({ env: { RANK: '0', WORLD_SIZE: '2', MASTER_ADDR: '10.1.2.3', LWM_RING_SECRET: 'x' } }).secret).toBe('x');
  });
});

describe('a group of one', () => {
  it('needs no sockets: sends loop back, collectives are identities, tags are still checked', async () => {
    const g = await ProcessGroup.init({ env: {} });
    expect([g.rank, g.size]).toEqual([0, 1]);
    const call = g.nextCall();
    g.sendNext({ op: 'attn', call, pass: 0, step: 0, origin: 0 }, [Float32Array.of(1, 2), Int32Array.of(3)]);
    const got = g.recvPrev({ op: 'attn', call, pass: 0, step: 0, origin: 0 });
    expect(got.map((a) => Array.from(a))).toEqual([[1, 2], [3]]);
    const x = Float32Array.of(1.5, -2);
    expect(Array.from(g.allReduce(x, 'mean'))).toEqual([1.5, -2]);
    expect(Array.from(g.broadcast(Int32Array.of(7)))).toEqual([7]);
    g.barrier();
    expect(g.stats()).toMatchObject({ messagesSent: 1, messagesReceived: 1 });
    g.sendNext({ op: 'attn', call, pass: 0, step: 1, origin: 0 }, []);
    expect(() => g.recvPrev({ op: 'attn', call, pass: 0, step: 2, origin: 0 })).toThrow(
      'ring: rank 0 expected attn call 0 forward step 2 from rank 0 but got attn call 0 forward step 1 from rank 0; the ranks ran different programs',
    );
    await g.close();
  });
});
