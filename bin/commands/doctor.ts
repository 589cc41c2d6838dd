import * as os from 'node:os';
import type { Argv, CommandModule } from 'yargs';
import * as tf from '@tensorflow/tfjs';
import { findFfmpeg, initBackend } from '../../src/index.js';
import { handle } from '../output.js';
import { packageVersion } from '../version.js';

interface DoctorArgs {
  json: boolean;
  debug?: boolean;
}

export const doctorCommand: CommandModule<object, DoctorArgs> = {
  command: 'doctor',
  describe: 'Show the backend in use and why, native kernels, threads, ffmpeg and Node version',
  builder: (y: Argv) =>
    y
      .option('json', { type: 'boolean', default: false, describe: 'Print one JSON object' })
      .example('$0 doctor', 'Check what lwm will run on')
      .example('LWM_BACKEND=cpu $0 doctor --json', 'Force the plain cpu backend and report as JSON') as unknown as Argv<DoctorArgs>,
  handler: handle<DoctorArgs>('doctor', async (args) => {
    const b = await initBackend();
    const ff = findFfmpeg();
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
    ];
    for (const [k, v] of lines) process.stdout.write(`${k.padEnd(8)} ${v}\n`);
  }),
};
