/**
 * node dist/bench/gemm.js [--quick]: GFLOP/s of the native GEMM through tf.matMul (the op alone,
 * after warm-up, best of several runs), against the measured FMA peak, on 1 and all threads.
 * A standalone timing script: numbers are printed, never asserted.
 */
import * as tf from '@tensorflow/tfjs';
import { gemmAddon } from '../ops/native/gemmKernels.js';
import { best, nativeCpu, sleep } from './timing.js';



async function main(): Promise<void> {
  const addon = await nativeCpu('BatchMatMul');
  const quick = process.argv.includes('--quick');
  const reps = quick ? 3 : 5;
  const allThreads = addon.info().threads;
  console.log(JSON.stringify({ isa: addon.info().isa, blocking: gemmAddon(addon)?.gemmBlocking() }));

  for (const threads of allThreads > 1 ? [1, allThreads] : [1]) {
    addon.setThreads(threads);
    await sleep(100); // a fresh pool's workers must be running before the first job
    let peak = 0;
    for (let i = 0; i < 3; i++) peak = Math.max(peak, addon.peakGflops(0.3));
    console.log(`threads=${threads} peak=${peak.toFixed(1)} GFLOP/s`);

    const gemm = (label: string, aShape: number[], bShape: number[], ta: boolean, tb: boolean, flops: number) => {
      const a = tf.randomNormal(aShape, 0, 1, 'float32');
      const b = tf.randomNormal(bShape, 0, 1, 'float32');
      for (let i = 0; i < 2; i++) tf.matMul(a, b, ta, tb).dispose();
      const ms = best(reps, () => tf.matMul(a, b, ta, tb).dispose());
      const gf = flops / ms / 1e6;
      console.log(`  ${label.padEnd(44)} ${ms.toFixed(2).padStart(8)} ms ${gf.toFixed(1).padStart(7)} GFLOP/s ${((100 * gf) / peak).toFixed(0).padStart(4)}% of peak`);
      tf.dispose([a, b]);
      return ms;
    };

    const [m, k, n] = [512, 4096, 4096];
    for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
      gemm(`[${m},${k}]x[${k},${n}] tA=${+ta} tB=${+tb}`, ta ? [k, m] : [m, k], tb ? [n, k] : [k, n], ta, tb, 2 * m * n * k);
    }
    gemm('[32,512,128]x[32,128,512]', [32, 512, 128], [32, 128, 512], false, false, 2 * 32 * 512 * 512 * 128);
    gemm('[128,4096]x[4096,4096]^T', [128, 4096], [4096, 4096], false, true, 2 * 128 * 4096 * 4096);
    for (const tb of [true, false]) {
      const label = `gemv [1,4096]x[4096,4096]${tb ? '^T' : ''}`;
      const ms = gemm(label, [1, 4096], [4096, 4096], false, tb, 2 * 4096 * 4096);
      console.log(`  ${''.padEnd(44)} ${((4096 * 4096 * 4) / ms / 1e6).toFixed(1).padStart(8)} GB/s of weights`);
    }
  }
  addon.setThreads(allThreads);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
