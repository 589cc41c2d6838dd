/**
 * `lwm convert` of a 7B-shaped scanned Jax params file (~13.5 GB bf16, random values): wall time,
 * throughput and the peak RSS of the convert process, which must stay far below the model size.
 * Standalone: node dist/bench/convert.js [--dir D] [--keep] [--preset 7b] prints JSON and writes
 * it to bench/results/convert-<date>.json. Needs about twice the params size free in D.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { presetConfig } from '../src/index.js';
import { scannedLwmRecords, writeJaxParams } from '../__tests__/helpers/jaxParamsWriter.js';
import { checkConverted } from './convertCheck.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const cli = path.join(here, '..', 'bin', 'lwm.js');
const TIME = '/usr/bin/time';
const SEED = 1;

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function treeSize(p: string): number {
  const st = fs.statSync(p);
  return st.isDirectory() ? fs.readdirSync(p).reduce((a, n) => a + treeSize(path.join(p, n)), 0) : st.size;
}

/**
 * Flushes the just-written file and asks the kernel to drop it from the page cache (GNU dd's
 * nocache is posix_fadvise DONTNEED), so convert reads from disk as it would a downloaded file.
 */
function dropFromCache(file: string): boolean {
  const fd = fs.openSync(file, 'r+');
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  return spawnSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' }).status === 0;
}

/** Runs the convert CLI; peak RSS from GNU time when present, else from polling VmHWM. */
async function convert(params: string, out: string, preset: string, timeFile: string): Promise<{ code: number | null; stderr: string; peakRssKiB: number; seconds: number }> {
  const useTime = fs.existsSync(TIME);
  const argv = [cli, 'convert', params, out, '--preset', preset];
  const t0 = performance.now();
  // The child's stdout goes to stderr, so this script's stdout is only the JSON.
  const child = useTime ? spawn(TIME, ['-f', '%M', '-o', timeFile, process.execPath, ...argv], { stdio: ['ignore', process.stderr, 'pipe'] }) : spawn(process.execPath, argv, { stdio: ['ignore', process.stderr, 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
    process.stderr.write(d);
  });
  let polled = 0;
  // Under GNU time the pid is time's own, so polling would only measure time.
  const poll = useTime ? undefined : setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+)/.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (m) polled = Math.max(polled, Number(m[1]));
    } catch {
      // The process has just exited.
    }
  }, 100);
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  clearInterval(poll);
  const seconds = (performance.now() - t0) / 1000;
  const fromTime = useTime && fs.existsSync(timeFile) ? Number(fs.readFileSync(timeFile, 'utf8').trim().split('\n').pop()) : NaN;
  return { code, stderr, peakRssKiB: Number.isFinite(fromTime) ? fromTime : polled, seconds };
}

async function main(): Promise<void> {
  const preset = arg('--preset') ?? '7b';
  const keep = process.argv.includes('--keep');
  const given = arg('--dir');
  const dir = given ? path.resolve(given) : fs.mkdtempSync(path.join(os.tmpdir(), 'lwm-bench-convert-'));
  fs.mkdirSync(dir, { recursive: true });
  const params = path.join(dir, 'params');
  const out = path.join(dir, 'converted');
  const timeFile = path.join(dir, 'time.txt');
  const config = presetConfig(preset);
  const records = scannedLwmRecords(config, SEED);
  const expectBytes = records.reduce((a, r) => a + r.shape.reduce((x, y) => x * y, 1) * 2, 0);
  const free = (() => {
    const s = fs.statfsSync(dir);
    return s.bavail * s.bsize;
  })();
  if (free < 2.05 * expectBytes) throw new Error(`${dir}: ${(free / 1e9).toFixed(1)} GB free, the bench needs ${((2.05 * expectBytes) / 1e9).toFixed(1)} GB (params + converted copy); use --dir`);
  try {
    let t = performance.now();
    const paramsBytes = writeJaxParams(params, records);
    const generateSeconds = (performance.now() - t) / 1000;
    const pageCacheDropped = dropFromCache(params);
    process.stderr.write(`convert bench: wrote ${(paramsBytes / 1e9).toFixed(2)} GB in ${generateSeconds.toFixed(1)} s; converting\n`);
    const r = await convert(params, out, preset, timeFile);
    const result: Record<string, unknown> = {
      date: new Date().toISOString(),
      preset,
      paramsBytes,
      outputBytes: r.code === 0 ? treeSize(out) : 0,
      seconds: Number(r.seconds.toFixed(2)),
      mbPerS: Number((paramsBytes / 1e6 / r.seconds).toFixed(1)),
      peakRssMB: Number((r.peakRssKiB / 1024).toFixed(1)),
      peakRssOfParams: Number(((r.peakRssKiB * 1024) / paramsBytes).toFixed(4)),
      exitCode: r.code,
      generateSeconds: Number(generateSeconds.toFixed(1)),
      pageCacheDropped,
      rssSource: fs.existsSync(TIME) ? 'GNU time %M' : '/proc VmHWM polled every 100 ms',
      machine: { cpus: os.cpus().length, memGB: Number((os.totalmem() / 2 ** 30).toFixed(1)), node: process.version },
    };
    if (r.code === 0) {
      t = performance.now();
      const check = checkConverted(out, config, SEED);
      result['check'] = { ...check, seconds: Number(((performance.now() - t) / 1000).toFixed(1)) };
      if (check.mismatches > 0) process.exitCode = 1;
    } else result['error'] = r.stderr.trim().split('\n').slice(-5).join('\n');
    const text = JSON.stringify(result, null, 2) + '\n';
    const results = path.join(root, 'bench', 'results');
    fs.mkdirSync(results, { recursive: true });
    fs.writeFileSync(path.join(results, `convert-${result['date'] as string}.json`.replace(/:/g, '-')), text);
    process.stdout.write(text);
    if (r.code !== 0) process.exitCode = 1;
  } finally {
    if (!keep) {
      // A killed convert leaves its hidden build folder next to the output.
      if (given) for (const p of [params, out, timeFile, ...fs.readdirSync(dir).filter((n) => n.startsWith('.converted.tmp-')).map((n) => path.join(dir, n))]) fs.rmSync(p, { recursive: true, force: true });
      else fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

await main();
