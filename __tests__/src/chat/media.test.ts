import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from '@jest/globals';
import { InputError, MediaEncoder } from '../../../src/index.js';
import { tmpDir } from '../../helpers/paths.js';
import { makeClip, saveTinyVqgan } from '../../helpers/media.js';

const work = tmpDir('chat-media');
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('MediaEncoder', () => {
  it('encodes a video once; a new encoder (a later run) reads the codes without ffmpeg and without loading the VQGAN', async () => {
    const vqgan = saveTinyVqgan(path.join(work, 'vqgan'));
    const clip = makeClip(work, 'clip.mp4', 64, 48, 10, 6);
    const cacheDir = path.join(work, 'codes');
    const first = new MediaEncoder({ vqgan, cacheDir, sampling: { maxFrames: 3 } });
    const a = await first.encode(clip);
    first.dispose();
    expect(a).toMatchObject({ kind: 'video', frames: 3, cached: false });
    expect(a.codes).toHaveLength(3 * 256);
    expect(first.stats).toEqual({ encoded: 1, cached: 0, vqganLoaded: true });

    const saved = process.env['LWM_FFMPEG'];
    process.env['LWM_FFMPEG'] = path.join(work, 'no-such-ffmpeg');
    try {
      const second = new MediaEncoder({ vqgan, cacheDir, sampling: { maxFrames: 3 } });
      const b = await second.encode(clip);
      expect(b.cached).toBe(true);
      expect(Array.from(b.codes)).toEqual(Array.from(a.codes));
      expect(second.stats).toEqual({ encoded: 0, cached: 1, vqganLoaded: false });
      // Other sampling is another cache entry, which would need ffmpeg (broken here): the key is honest.
      const other = new MediaEncoder({ vqgan, cacheDir, sampling: { maxFrames: 2 } });
      await expect(other.encode(clip)).rejects.toThrow();
      other.dispose();
      second.dispose();
    } finally {
      if (saved === undefined) delete process.env['LWM_FFMPEG'];
      else process.env['LWM_FFMPEG'] = saved;
    }
  });

  it('refuses a missing file and a folder that is not a VQGAN, in one line each', async () => {
    const vqgan = saveTinyVqgan(path.join(work, 'vqgan2'));
    const m = new MediaEncoder({ vqgan, cacheDir: path.join(work, 'codes2') });
    await expect(m.encode(path.join(work, 'nope.mp4'))).rejects.toThrow(InputError);
    expect(() => new MediaEncoder({ vqgan: work })).toThrow(/not a VQGAN folder/);
  });
});
