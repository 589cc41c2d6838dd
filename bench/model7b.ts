/**
 * The 7B model on this machine: a random-weight 7B-shaped checkpoint (bf16, ~13.5 GB) written to
 * disk once, then loaded with linear weights kept in bf16 (and int8), measuring load time, peak
 * RSS, prefill tokens/s and decode tokens/s; then llama.cpp on the same weights (GGUF bf16 written
 * by `lwm convert --to gguf`) with the same threads. Standalone:
 *   node dist/bench/model7b.js [--preset 7b] [--dir D] [--keep] [--prompt 512] [--decode 8] [--dtypes bf16,int8] [--kv-dtype f32|bf16] [--no-llama]
 * A dtype may carry its KV cache type, e.g. bf16/bf16 (weights/cache).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { paramSpecs, presetConfig, toHfConfig, writeSafetensorsSharded } from '../src/index.js';
import { writeFileAtomic } from '../src/checkpoint/safetensors.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const arg = (name: string, d?: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : d;
};
const preset = arg('--preset', '7b')!;
const promptTokens = Number(arg('--prompt', '512'));
const decodeTokens = Number(arg('--decode', '8'));
const dtypes = arg('--dtypes', 'bf16')!.split(',');
const dir = arg('--dir') ?? fs.mkdtempSync(path.join(os.tmpdir(), 'lwm-bench-7b-'));
const modelDir = path.join(dir, 'model');

/** N(0, 0.02)-ish values from a cheap generator (sum of uniforms), norms at 1: finite activations. */
function randomTensor(n: number, seed: number, norm: boolean): Float32Array {
  const out = new Float32Array(n);
  if (norm) return out.fill(1);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = (((s >>> 0) / 4294967296) * 2 - 1) * 0.035;
  }
  return out;
}

function writeModel(): number {
  const c = presetConfig(preset);
  const t0 = performance.now();
  fs.mkdirSync(modelDir, { recursive: true });
  writeSafetensorsSharded(modelDir, paramSpecs(c).map((s, i) => ({ name: s.name, shape: s.shape, data: () => randomTensor(s.shape.reduce((a, b) => a * b, 1), i + 1, s.shape.length === 1) })), 'BF16');
  writeFileAtomic(path.join(modelDir, 'config.json'), JSON.stringify(toHfConfig(c, 'bfloat16'), null, 2) + '\n');
  return (performance.now() - t0) / 1000;
}

/** Runs a command under GNU time; its stdout's last line as JSON, with peak RSS added. */
function measured(cmd: string[]): Record<string, unknown> {
  const timeFile = path.join(dir, 'time.txt');
  const r = spawnSync('/usr/bin/time', ['-f', '%M', '-o', timeFile, ...cmd], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0) return { error: (r.stderr || '').trim().split('\n').slice(-3).join(' ') };
  const line = r.stdout.trim().split('\n').at(-1)!;
  return { ...(JSON.parse(line) as Record<string, unknown>), peakRssGB: Number(fs.readFileSync(timeFile, 'utf8').trim().split('\n').at(-1)) / 1024 / 1024 };
}

const result: Record<string, unknown> = { date: new Date().toISOString(), preset, machine: { cpus: os.cpus().length, memGB: os.totalmem() / 2 ** 30 } };
try {
  if (!fs.existsSync(path.join(modelDir, 'config.json'))) result['writeSeconds'] = writeModel();
  for (const spec of dtypes) {
    const [dtype, kv = arg('--kv-dtype', 'f32')!] = spec.split('/');
    process.stderr.write(`model7b: ${preset} weights ${dtype}, KV cache ${kv}: load, prefill ${promptTokens}, decode ${decodeTokens}\n`);
    result[`lwm_${dtype}${kv === 'f32' ? '' : `_kv_${kv}`}`] = measured([process.execPath, path.join(here, 'model7bWorker.js'), modelDir, dtype!, String(promptTokens), String(decodeTokens), kv]);
  }
  if (!process.argv.includes('--no-llama')) {
    const gguf = path.join(dir, 'model.gguf');
    if (!fs.existsSync(gguf)) {
      const c = spawnSync(process.execPath, [path.join(here, '..', 'bin', 'lwm.js'), 'convert', modelDir, gguf, '--to', 'gguf', '--no-progress', '--no-verify'], { encoding: 'utf8' });
      if (c.status !== 0) result['llama_cpp'] = `convert failed: ${c.stderr.trim()}`;
    }
    if (fs.existsSync(gguf)) {
      process.stderr.write('model7b: llama.cpp on the same weights\n');
      const peer = path.join(root, 'bench', 'peer');
      result['llama_cpp'] = fs.existsSync(path.join(peer, 'node_modules', 'node-llama-cpp'))
        ? measured([process.execPath, path.join(peer, 'llamacpp.mjs'), '--gguf', gguf, '--prompt-tokens', String(promptTokens), '--decode-tokens', String(decodeTokens), '--threads', String(os.cpus().length)])
        : 'bench/peer is not installed (npm ci in bench/peer)';
    }
  }
} finally {
  if (!process.argv.includes('--keep')) fs.rmSync(dir, { recursive: true, force: true });
}
const outDir = path.join(root, 'bench', 'results');
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, `model7b-${String(result['date']).replace(/:/g, '-')}.json`), JSON.stringify(result, null, 2) + '\n');
process.stdout.write(JSON.stringify(result, null, 2) + '\n');
