/**
 * npm run bench [-- --quick] [-- --json FILE]: throughput of lwm's kernels and model against the
 * machine's own measured peak and, in the full run, llama.cpp on the same weights.
 * Results: a table on stdout, JSON in bench/results/ (and FILE). Timings never live in tests.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { attentionAddon } from '../ops/native/attentionKernel.js';
import { createModel, generate, initBackend, initVqganParams, loadAddon, saveModel, Vqgan, VQGAN_DEFAULTS, writeGguf } from '../src/index.js';
import { chatBench } from './chat.js';
import { ringBench } from './ring.js';
import { trainBench } from './train.js';
import { best } from './timing.js';

const quick = process.argv.includes('--quick');
const jsonIdx = process.argv.indexOf('--json');
const jsonFile = jsonIdx >= 0 ? process.argv[jsonIdx + 1] : undefined;
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');


function gemm(m: number, k: number, n: number, transB: boolean): number {
  const a = tf.randomNormal([m, k]);
  const b = tf.randomNormal(transB ? [n, k] : [k, n]);
  tf.matMul(a, b, false, transB).dispose();
  const ms = best(3, () => tf.matMul(a, b, false, transB).dispose());
  tf.dispose([a, b]);
  return (2 * m * n * k) / ms / 1e6;
}

/** Causal FLOPs 4·s²·d·h/2 forward (all of them when not causal), 2.5x that backward. */
function attention(seq: number, heads: number, dim: number, causal: boolean, reps: number): { fwd: number; bwd: number } | null {
  const addon = loadAddon();
  const att = addon && attentionAddon(addon);
  if (!att) return null;
  const n = seq * heads * dim;
  const rnd = () => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.5);
  const [q, k, v, dO] = [rnd(), rnd(), rnd(), rnd()];
  const shape: [number, number, number, number, number, number] = [1, seq, seq, heads, heads, dim];
  let o: Float32Array = new Float32Array(0);
  let lse: Float32Array = new Float32Array(0);
  const fwdMs = best(reps, () => ([o, lse] = att.attentionForward(q, k, v, null, null, shape, { causal, queryOffset: 0 })));
  const bwdMs = best(reps, () => att.attentionBackward(q, k, v, o, dO, lse, null, null, null, null, shape, { causal, queryOffset: 0 }));
  const flops = (4 * seq * seq * dim * heads) / (causal ? 2 : 1);
  return { fwd: flops / fwdMs / 1e6, bwd: (2.5 * flops) / bwdMs / 1e6 };
}

async function model(preset: string, promptLen: number, decode: number) {
  const m = createModel(preset, { seed: 1 });
  const prompt = Array.from({ length: promptLen }, (_, i) => 1 + ((i * 7919) % 31999));
  await generate(m, prompt.slice(0, 16), { maxTokens: 4, stopTokens: [] });
  const r = await generate(m, prompt, { maxTokens: decode + 1, stopTokens: [] });
  return { m, prefill: (promptLen * 1000) / r.timings.promptMs, decode: (decode * 1000) / r.timings.generateMs };
}

/** llama.cpp (node-llama-cpp in bench/peer, its own install) on the same weights and threads. */
function llamaCpp(m: ReturnType<typeof createModel>, promptLen: number, decode: number, threads: number): Record<string, unknown> | string {
  const peer = path.join(root, 'bench', 'peer');
  if (!fs.existsSync(path.join(peer, 'node_modules', 'node-llama-cpp'))) {
    const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: peer, encoding: 'utf8' });
    if (r.status !== 0) return `could not install bench/peer: ${r.stderr.split('\n').slice(-3).join(' ')}`;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lwm-bench-'));
  try {
    saveModel(dir, m);
    writeGguf(dir, path.join(dir, 'model.gguf'), { dtype: 'F32' });
    const r = spawnSync(process.execPath, [path.join(peer, 'llamacpp.mjs'), '--gguf', path.join(dir, 'model.gguf'), '--prompt-tokens', String(promptLen), '--decode-tokens', String(decode), '--threads', String(threads)], { encoding: 'utf8' });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    return r.status === 0 ? (JSON.parse(line) as Record<string, unknown>) : `llama.cpp failed: ${r.stderr.split('\n').slice(-3).join(' ')}`;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const b = await initBackend();
  const addon = loadAddon();
  const out: Record<string, unknown> = {
    date: new Date().toISOString(),
    mode: quick ? 'quick' : 'full',
    backend: b.name,
    native: b.nativeReason,
    isa: b.isa,
    threads: b.threads,
    cpu: os.cpus()[0]?.model,
    node: process.version,
  };
  const rows: [string, string][] = [];
  const peak = addon ? Math.max(...[0, 1, 2].map(() => addon.peakGflops(0.5))) : 0;
  out['peak_gflops'] = peak;
  rows.push(['fp32 FMA peak (addon, all threads)', `${peak.toFixed(1)} GFLOP/s`]);
  const pct = (x: number) => (peak ? ` (${((100 * x) / peak).toFixed(0)}% of peak)` : '');

  out['gemm_gflops'] = gemm(512, 4096, 4096, false);
  out['gemm_transb_gflops'] = gemm(512, 4096, 4096, true);
  rows.push(['GEMM [512,4096]x[4096,4096]', `${(out['gemm_gflops'] as number).toFixed(1)} GFLOP/s${pct(out['gemm_gflops'] as number)}`]);
  rows.push(['GEMM same, transposeB', `${(out['gemm_transb_gflops'] as number).toFixed(1)} GFLOP/s${pct(out['gemm_transb_gflops'] as number)}`]);

  const att = attention(8192, 8, 128, true, quick ? 1 : 2);
  if (att) {
    out['attention_fwd_gflops'] = att.fwd;
    out['attention_bwd_gflops'] = att.bwd;
    rows.push(['attention causal s=8192 h=8 d=128 fwd', `${att.fwd.toFixed(1)} GFLOP/s${pct(att.fwd)}`]);
    rows.push(['attention causal s=8192 h=8 d=128 bwd', `${att.bwd.toFixed(1)} GFLOP/s${pct(att.bwd)}`]);
  }
  if (!quick && att) {
    const extra: Record<string, { fwd: number; bwd: number } | null> = {};
    for (const seq of [2048, 16384, 65536]) extra[`causal_${seq}`] = attention(seq, 8, 128, true, 1);
    for (const seq of [2048, 8192]) extra[`full_${seq}`] = attention(seq, 8, 128, false, 1);
    out['attention_sweep'] = extra;
    for (const [k, v] of Object.entries(extra)) if (v) rows.push([`attention ${k} fwd / bwd`, `${v.fwd.toFixed(1)} / ${v.bwd.toFixed(1)} GFLOP/s`]);
  }

  const promptLen = 512;
  const decode = quick ? 32 : 64;
  const r = await model('100m', promptLen, decode);
  out['model'] = '100m (100,449,920 parameters, fp32, random weights)';
  out['prefill_tokens_per_s'] = r.prefill;
  out['decode_tokens_per_s'] = r.decode;
  rows.push([`lwm 100m prefill ${promptLen} tokens`, `${r.prefill.toFixed(1)} tok/s`]);
  rows.push([`lwm 100m decode ${decode} tokens`, `${r.decode.toFixed(1)} tok/s`]);
  if (!quick) {
    const peer = llamaCpp(r.m, promptLen, decode, b.threads);
    out['llama_cpp'] = peer;
    if (typeof peer === 'string') rows.push(['llama.cpp', peer]);
    else {
      rows.push([`llama.cpp prefill ${promptLen} tokens`, `${(peer['prefill_tokens_per_s'] as number).toFixed(1)} tok/s`]);
      rows.push([`llama.cpp decode ${decode} tokens`, `${(peer['decode_tokens_per_s'] as number).toFixed(1)} tok/s`]);
    }
  }
  r.m.dispose();

  const chat = await chatBench(quick, process.env['LWM_BENCH_LONG'] === '1');
  out['chat'] = chat;
  for (const c of chat) {
    const what = `chat ${c.preset}, ${c.promptTokens}-token prompt`;
    rows.push([what, `prompt ${c.promptTokensPerS.toFixed(1)} tok/s, first token ${(c.timeToFirstTokenMs / 1000).toFixed(2)} s, generate ${c.generateTokensPerS.toFixed(1)} tok/s`]);
  }

  // VQGAN: its biggest conv through the native kernel, and (full run) one 256x256 frame encoded.
  {
    const x = tf.randomNormal([1, 256, 256, 128]) as tf.Tensor4D;
    const f = tf.randomNormal([3, 3, 128, 128]) as tf.Tensor4D;
    tf.conv2d(x, f, 1, 'same').dispose();
    const ms = best(3, () => tf.conv2d(x, f, 1, 'same').dispose());
    tf.dispose([x, f]);
    const gflops = (2 * 256 * 256 * 128 * 9 * 128) / ms / 1e6;
    out['conv_256x256x128_3x3_gflops'] = gflops;
    rows.push(['conv [1,256,256,128] 3x3 -> 128', `${gflops.toFixed(1)} GFLOP/s${pct(gflops)}`]);
    if (!quick) {
      const vq = new Vqgan(VQGAN_DEFAULTS, initVqganParams(VQGAN_DEFAULTS, 0));
      const frames = tf.randomUniform([1, 256, 256, 3], -1, 1) as tf.Tensor4D;
      vq.encode(frames).dispose();
      const encMs = best(2, () => vq.encode(frames).dispose());
      frames.dispose();
      vq.dispose();
      out['vqgan_encode_256_ms'] = encMs;
      rows.push(['VQGAN encode one 256x256 frame (full config)', `${(encMs / 1000).toFixed(2)} s`]);
    }
  }

  const ring = ringBench(quick);
  out['ring'] = ring.json;
  rows.push(...ring.rows);

  const tr = trainBench(quick, peak);
  out['train'] = tr.runs;
  for (const r of tr.runs) {
    if (typeof r === 'string') rows.push(['train', r]);
    else rows.push([`train ${r.preset} seq ${r.seq}, ${r.ranks} process${r.ranks > 1 ? 'es' : ''}${r.remat ? ', remat' : ''}`, `${r.tokensPerSecond.toFixed(0)} tok/s, MFU ${(100 * r.mfu).toFixed(1)}%, ${(r.stepMs / 1000).toFixed(1)} s/update, ${r.rssMiB.toFixed(0)} MiB/rank`]);
  }

  // The 7B model (full run): random bf16 weights written once to bench/.cache/model7b (13.5 GB,
  // plus its 13.5 GB GGUF for llama.cpp), then loaded in bf16 and int8.
  if (!quick && process.env['LWM_BENCH_7B'] !== '0') {
    const cache = path.join(root, 'bench', '.cache', 'model7b');
    fs.mkdirSync(cache, { recursive: true });
    const have = fs.existsSync(path.join(cache, 'model', 'config.json')) && fs.existsSync(path.join(cache, 'model.gguf'));
    const free = fs.statfsSync(cache).bavail * fs.statfsSync(cache).bsize;
    if (!have && free < 32e9) {
      out['model7b'] = `skipped: ${(free / 1e9).toFixed(0)} GB free disk, the 7B weights and their GGUF need 28 GB (LWM_BENCH_7B=0 skips this silently)`;
      rows.push(['7B', out['model7b'] as string]);
    } else {
      const r = spawnSync(process.execPath, [path.join(root, 'dist', 'bench', 'model7b.js'), '--dir', cache, '--keep', '--prompt', '512', '--decode', '16', '--dtypes', 'bf16,int8,bf16/bf16'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 << 20 });
      const m7 = r.status === 0 ? (JSON.parse(r.stdout) as Record<string, Record<string, number> | string>) : null;
      out['model7b'] = m7 ?? `failed (exit ${r.status})`;
      if (m7) {
        for (const [k, v] of Object.entries(m7)) {
          if (typeof v !== 'object' || v === null || !('decodeTokensPerS' in v || 'decode_tokens_per_s' in v)) continue;
          const dec = (v['decodeTokensPerS'] ?? v['decode_tokens_per_s'])!;
          const pre = (v['prefillTokensPerS'] ?? v['prefill_tokens_per_s'])!;
          const load = v['loadSeconds'] !== undefined ? `load ${v['loadSeconds'].toFixed(0)} s, ` : '';
          rows.push([`7B ${k.replace(/_/g, ' ')}`, `${load}prefill ${pre.toFixed(2)} tok/s, decode ${dec.toFixed(2)} tok/s, peak RSS ${v['peakRssGB']!.toFixed(1)} GiB`]);
        }
      } else rows.push(['7B', out['model7b'] as string]);
    }
  }

  const dir = path.join(root, 'bench', 'results');
  fs.mkdirSync(dir, { recursive: true });
  const text = JSON.stringify(out, null, 2) + '\n';
  fs.writeFileSync(path.join(dir, `bench-${out['date'] as string}.json`.replace(/:/g, '-')), text);
  if (jsonFile) fs.writeFileSync(jsonFile, text);
  process.stdout.write(`lwm bench (${out['mode'] as string}): ${b.name}, ${b.nativeReason}\n`);
  for (const [k, v] of rows) process.stdout.write(`  ${k.padEnd(44)} ${v}\n`);
}

await main();
