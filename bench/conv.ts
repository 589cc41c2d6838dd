/**
 * node dist/bench/conv.js [--encode=256] [--encode-plain=64] [--skip-convs]: GFLOP/s of the
 * native Conv2D against tfjs' own cpu kernel on the VQGAN's biggest convolutions, and the time
 * of one full-config VQGAN encode and decode of a frame with native kernels on and off. Numbers
 * are printed, never asserted.
 */
import * as tf from '@tensorflow/tfjs';
import { disableNativeKernels, enableNativeKernels } from '../ops/native/index.js';
import { VQGAN_DEFAULTS, Vqgan, initVqganParams } from '../models/vqgan.js';
import { best, nativeCpu } from './timing.js';



function arg(name: string, dflt: number): number {
  const a = process.argv.find((s) => s.startsWith(`--${name}=`));
  return a ? Number(a.split('=')[1]) : dflt;
}

async function main(): Promise<void> {
  const addon = await nativeCpu('Conv2D');
  console.log(JSON.stringify({ isa: addon.info().isa, threads: addon.info().threads, peak: +addon.peakGflops(0.3).toFixed(1) }));

  if (!process.argv.includes('--skip-convs')) {
    const convs: [string, number[], number[], number, 'same' | 'valid'][] = [
      ['256x256 3x3 128->128', [1, 256, 256, 128], [3, 3, 128, 128], 1, 'same'],
      ['128x128 3x3 256->256', [1, 128, 128, 256], [3, 3, 256, 256], 1, 'same'],
      ['32x32 3x3 512->512', [1, 32, 32, 512], [3, 3, 512, 512], 1, 'same'],
      ['257x257 3x3/2 valid 128->128', [1, 257, 257, 128], [3, 3, 128, 128], 2, 'valid'],
      ['64x64 1x1 256->512', [1, 64, 64, 256], [1, 1, 256, 512], 1, 'valid'],
      ['256x256 3x3 3->128 (conv_in)', [1, 256, 256, 3], [3, 3, 3, 128], 1, 'same'],
    ];
    for (const [label, xs, fs, stride, pad] of convs) {
      const x = tf.randomNormal(xs as [number, number, number, number]) as tf.Tensor4D;
      const f = tf.randomNormal(fs as [number, number, number, number]) as tf.Tensor4D;
      const y = tf.conv2d(x, f, stride, pad);
      const flops = 2 * y.size * fs[0]! * fs[1]! * fs[2]!;
      y.dispose();
      const nat = best(5, () => tf.conv2d(x, f, stride, pad).dispose());
      disableNativeKernels();
      tf.conv2d(x, f, stride, pad).dispose();
      const js = best(flops > 5e9 ? 1 : 2, () => tf.conv2d(x, f, stride, pad).dispose());
      enableNativeKernels();
      const g = (ms: number) => (flops / ms / 1e6).toFixed(1);
      console.log(
        `${label.padEnd(32)} ${(flops / 1e9).toFixed(2)} GFLOP  native ${nat.toFixed(1).padStart(8)} ms ${g(nat).padStart(6)} GFLOP/s` +
          `  tfjs ${js.toFixed(1).padStart(9)} ms ${g(js).padStart(6)} GFLOP/s  x${(js / nat).toFixed(1)}`,
      );
      tf.dispose([x, f]);
    }
  }

  const vq = new Vqgan(VQGAN_DEFAULTS, initVqganParams(VQGAN_DEFAULTS, 0));
  const codec = (size: number, native: boolean, reps: number) => {
    if (native) enableNativeKernels();
    else disableNativeKernels();
    const frames = tf.randomUniform([1, size, size, 3], -1, 1) as tf.Tensor4D;
    const enc = best(reps, () => vq.encode(frames).dispose());
    const codes = vq.encode(frames);
    const dec = best(reps, () => vq.decode(codes).dispose());
    tf.dispose([frames, codes]);
    enableNativeKernels();
    console.log(`VQGAN ${size}x${size} native=${native ? 'on ' : 'off'}: encode ${(enc / 1000).toFixed(2)} s, decode ${(dec / 1000).toFixed(2)} s`);
  };
  const size = arg('encode', 256);
  const plainSize = arg('encode-plain', size);
  codec(size, true, 1); // warm-up + time
  codec(size, true, 2);
  if (plainSize !== size) codec(plainSize, true, 2);
  codec(plainSize, false, 1);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
