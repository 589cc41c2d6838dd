import * as os from 'node:os';
import type { Argv, CommandModule } from 'yargs';
import * as tf from '@tensorflow/tfjs';
import { detectLaunch, findFfmpeg, initBackend } from '../../src/index.js';
import { handle } from '../output.js';
import { packageVersion } from '../version.js';

interface DoctorArgs {
  json: boolean;
  debug?: boolean;
}

export const doctorCommand: CommandModule<object, DoctorArgs> = {
  command: 'doctor',
  describe: 'Show the backend in use and why, native kernels, threads, ffmpeg, the ring transport and Node version',
  builder: (y: Argv) =>
    y
      .option('json', { type: 'boolean', default: false, describe: 'Print one JSON object' })
      .example('$0 doctor', 'Check what lwm will run on')
      .example('LWM_BACKEND=cpu $0 doctor --json', 'Force the plain cpu backend and report as JSON') as unknown as Argv<DoctorArgs>,
  handler: handle<DoctorArgs>('doctor', async (args) => {
    const b = await initBackend();
    const ff = findFfmpeg();
    const ring = await ringStatus();
    const report = {
      lwm: packageVersion(),
      node: process.version,
      tfjs: tf.version.tfjs,
      backend: b.name,
      backend_provider: b.provider,
      backend_reason: b.reason,
      native_kernels: b.native,
      native_reason: b.nativeReason,
      native_kernels_list: b.nativeKernels,
      simd: b.isa,
      threads: b.threads,
      cpus: os.cpus().length,
      memory_gib: Number((os.totalmem() / 2 ** 30).toFixed(1)),
      ffmpeg: ff?.path ?? null,
      ffmpeg_source: ff?.source ?? 'not found: set LWM_FFMPEG, install @ffmpeg-installer/ffmpeg, or put ffmpeg on PATH',
      ring_transport: ring.transport,
      ring_launch: ring.launch,
    };
    if (args.json) {
      process.stdout.write(JSON.stringify(report) + '\n');
      return;
    }
    const lines: [string, string][] = [
      ['lwm', report.lwm],
      ['node', report.node],
      ['tfjs', report.tfjs],
      ['backend', `${b.name} (${b.provider}): ${b.reason}`],
      ['native', `${b.native ? 'on' : 'off'}: ${b.nativeReason}`],
      ['threads', `${b.threads} (of ${report.cpus} cpus; LWM_THREADS overrides)`],
      ['memory', `${report.memory_gib} GiB`],
      ['ffmpeg', ff ? `${ff.path} (${ff.source})` : report.ffmpeg_source],
      ['ring', `${ring.transport}; ${ring.launch}`],
    ];
    for (const [k, v] of lines) process.stdout.write(`${k.padEnd(8)} ${v}\n`);
  }),
};

/** Whether the ring's transport loads, and the rank this process would take. */
async function ringStatus(): Promise<{ transport: string; launch: string }> {
  let transport: string;
  try {
    const zmq = await import('zeromq');
    transport = `zeromq ${zmq.version}`;
  } catch (e) {
    transport = `zeromq does not load (${String((e as Error).message).split('\n')[0]}); reinstall with npm ci`;
  }
  let launch: string;
  try {
    const l = detectLaunch();
    launch = l.size > 1 ? `rank ${l.rank} of ${l.size} (${l.source}), rendezvous ${l.masterAddr}:${l.masterPort}` : 'single process (no launcher variables)';
  } catch (e) {
    launch = (e as Error).message;
  }
  return { transport, launch };
}
