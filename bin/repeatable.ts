import { hideBin } from 'yargs/helpers';

/**
 * Every value of a repeatable list flag (`--stop a --stop b`, or `--stop a b`). lwm's parser keeps
 * only the last of a repeated flag, which is right for scalars but would drop list entries.
 * Returns undefined when the flag is absent, so the yargs value (or default) stands.
 */
export function repeatedValues(name: string, argv: readonly string[] = hideBin(process.argv)): string[] | undefined {
  const out: string[] = [];
  let seen = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (a.startsWith(`--${name}=`)) {
      seen = true;
      out.push(a.slice(name.length + 3));
    } else if (a === `--${name}`) {
      seen = true;
      while (i + 1 < argv.length && !argv[i + 1]!.startsWith('-')) out.push(argv[++i]!);
    }
  }
  return seen ? out : undefined;
}
