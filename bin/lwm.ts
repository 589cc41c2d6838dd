#!/usr/bin/env node
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { chatCommand } from './commands/chat.js';
import { convertCommand } from './commands/convert.js';
import { dataCommand } from './commands/data.js';
import { doctorCommand } from './commands/doctor.js';
import { evalCommand } from './commands/eval.js';
import { generateCommand } from './commands/generate.js';
import { launchCommand } from './commands/launch.js';
import { planCommand } from './commands/plan.js';
import { prepareCommand } from './commands/prepare.js';
import { serveCommand } from './commands/serve.js';
import { trainCommand } from './commands/train.js';
import { packageVersion } from './version.js';

const argv = hideBin(process.argv);

await yargs(argv)
  .scriptName('lwm')
  // A flag given twice (e.g. in a script and again by hand) takes the last value, like most CLIs.
  .parserConfiguration({ 'duplicate-arguments-array': false })
  .usage('$0 <command> [options]\n\nLarge World Model (LWM) on TensorFlow.js: long-context text and video-language models without Python.')
  .command(chatCommand)
  .command(convertCommand)
  .command(dataCommand)
  .command(generateCommand)
  .command(doctorCommand)
  .command(evalCommand)
  .command(launchCommand)
  .command(planCommand)
  .command(prepareCommand)
  .command(serveCommand)
  .command(trainCommand)
  .option('debug', { type: 'boolean', default: false, describe: 'Show stack traces on errors' })
  .demandCommand(1, 'give a command; see lwm --help')
  .strict()
  .recommendCommands()
  .version(packageVersion())
  .help()
  .alias('help', 'h')
  .wrap(Math.min(110, process.stdout.columns || 110))
  .fail((msg, err) => {
    // Parse errors (unknown flags, bad values): one line, not the whole help text.
    const command = argv.find((a) => !a.startsWith('-')) ?? '';
    process.stderr.write(`lwm${command ? ' ' + command : ''}: error: ${msg ?? err?.message} (see lwm ${command ? command + ' ' : ''}--help)\n`);
    if (err && argv.includes('--debug')) process.stderr.write(`${err.stack}\n`);
    process.exit(1);
  })
  .parseAsync();
