// `node launcher.js N -- <command...>`: launch() with signal forwarding, as the CLI runs it;
// exits with the launcher's code.
import { launch } from '../../../src/distributed/launch.js';

const sep = process.argv.indexOf('--');
const nprocs = Number(process.argv[2]);
const r = await launch({ nprocs, command: process.argv.slice(sep + 1), forwardSignals: true, killGraceMs: 1000 });
process.exitCode = r.code;
