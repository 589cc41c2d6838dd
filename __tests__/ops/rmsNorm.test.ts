import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from '@jest/globals';
import { rmsNorm } from '../../ops/index.js';
import { expectNoLeaks } from '../helpers/tensors.js';

describe('rmsNorm', () => {
  it('matches the known values for [1, 2, 3, 4] (lwm-spec 11 item 2)', () => {
    const y = rmsNorm(tf.tensor1d([1, 2, 3, 4]), tf.ones([4]), 1e-6);
    const expected = [0.36514837, 0.73029673, 1.095445, 1.4605935];
    Array.from(y.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 6));
  });

  it('normalises over the last axis only and multiplies by the weight', () => {
    const x = tf.tensor2d([[3, 4], [1, 0]]);
    const y = rmsNorm(x, tf.tensor1d([2, 0.5]), 0);
    // rms of [3,4] is sqrt(12.5); of [1,0] is sqrt(0.5).
    const r1 = Math.sqrt(12.5);
    const r2 = Math.sqrt(0.5);
    const expected = [(3 / r1) * 2, (4 / r1) * 0.5, (1 / r2) * 2, 0];
    Array.from(y.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
  });

  it('does not leak tensors', async () => {
    const x = tf.randomNormal([2, 3, 8]);
    const w = tf.ones([8]);
    await expectNoLeaks(() => rmsNorm(x, w, 1e-6).dispose());
    x.dispose();
    w.dispose();
  });
});
