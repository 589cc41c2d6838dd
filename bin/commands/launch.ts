import type { Argv, CommandModule } from 'yargs';
import { launch } from '../../src/distributed/launch.js';
import { handle } from '../output.js';

interface LaunchArgs {
  nprocs: number;
  gpus: boolean;
  masterPort?: number;
  command: string[];
  debug?: boolean;
}

export const launchCommand: CommandModule<object, LaunchArgs> = {
  command: 'launch [command..]',
  describe: 'Run a command as N ranks on this machine (RANK, WORLD_SIZE, MASTER_ADDR/PORT set for each); one failing rank stops all',
  builder: (y: Argv) =>
    y
      .positional('command', { type: 'string', array: true, describe: 'The program and its arguments, after --' })
      .option('nprocs', { alias: 'n', type: 'number', demandOption: true, describe: 'Number of ranks' })
      .option('gpus', { type: 'boolean', default: false, describe: 'Give rank i CUDA_VISIBLE_DEVICES=i (also LWM_LAUNCH_GPUS=1)' })
      .option('master-port', { type: 'number', describe: 'Rendezvous port on 127.0.0.1 (default: a free one)' })
      .example('$0 launch -n 4 -- node train.js --seq 65536', 'Four ranks of a ring-attention training script')
      .example('$0 launch -n 2 --gpus -- node ring-eval.js', 'Two ranks, one GPU each (tfjs-node-gpu)') as unknown as Argv<LaunchArgs>,
  handler: handle<LaunchArgs>('launch', async (args) => {
    // yargs leaves what follows `--` in argv._, after the command's own name.
    const rest = (args as unknown as { _: (string | number)[] })._.slice(1);
    const command = [...(args.command ?? []), ...rest].map(String);
    const r = await launch({
      nprocs: args.nprocs,
      command,
      gpus: args.gpus || process.env['LWM_LAUNCH_GPUS'] === '1',
      ...(args.masterPort !== undefined ? { masterPort: args.masterPort } : {}),
      forwardSignals: true,
    });
    process.exitCode = r.code;
  }),
};
