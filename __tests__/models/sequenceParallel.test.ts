import { describe, expect, it } from '@jest/globals';
import * as tf from '@tensorflow/tfjs';
import { layoutIndices, padForRing, RING_LAYOUTS, shardSequence, unshardSequence } from '../../src/index.js';
import { expectNoLeaks } from '../helpers/tensors.js';

describe('sequence sharding for the ring', () => {
  it('shardSequence takes each rank its layout tokens, and unshardSequence puts them back', async () => {
    await expectNoLeaks(() => {
      tf.tidy(() => {
        const x = tf.tensor3d(Array.from({ length: 2 * 12 * 3 }, (_, i) => i), [2, 12, 3]);
        for (const layout of RING_LAYOUTS) {
          for (const size of [1, 2, 3]) {
            if (layout === 'zigzag' && 12 % (2 * size) !== 0) continue;
            const parts = Array.from({ length: size }, (_, rank) => shardSequence(x, { size, rank, layout }));
            parts.forEach((p, rank) => {
              const idx = Array.from(layoutIndices(12, size, rank, layout));
              expect(p.arraySync()).toEqual(tf.gather(x, idx, 1).arraySync());
            });
            expect(unshardSequence(parts, layout).arraySync()).toEqual(x.arraySync());
          }
        }
      });
    });
  });

  it('padForRing pads to the layout unit with masked padding in a segment of its own', () => {
    tf.tidy(() => {
      const ids = tf.tensor2d([[5, 6, 7, 8, 9]], [1, 5], 'int32');
      const seg = tf.tensor2d([[0, 0, 1, 1, 1]], [1, 5], 'int32');
      const p = padForRing(ids, 2, 'zigzag', { padId: 3, segmentIds: seg });
      expect(p.length).toBe(5);
      expect(Array.from(p.ids.dataSync())).toEqual([5, 6, 7, 8, 9, 3, 3, 3]);
      expect(Array.from(p.attentionMask.dataSync())).toEqual([1, 1, 1, 1, 1, 0, 0, 0]);
      expect(Array.from(p.segmentIds!.dataSync())).toEqual([0, 0, 1, 1, 1, -1, -1, -1]);
      expect(padForRing(ids, 5, 'striped').ids.shape).toEqual([1, 5]);
    });
  });
});
