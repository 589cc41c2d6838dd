import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { makeClip, makeMedia } from '../../helpers/media.js';
import { repoRoot, tmpDir } from '../../helpers/paths.js';
import { expectApiError, request, startServe, type ServeProcess } from './serveHelpers.js';

const script = path.join(repoRoot, 'dist', '__tests__', 'src', 'serve', 'scripts', 'makeVisionModel.js');

describe('lwm serve with images and videos (--allowed-media-dir)', () => {
  let dir = '';
  let media = '';
  let outside = '';
  let s: ServeProcess;
  const ask = (parts: unknown[], extra: Record<string, unknown> = {}) =>
    request(`${s.url}/v1/chat/completions`, { body: { messages: [{ role: 'user', content: [{ type: 'text', text: 'What is in the picture?' }, ...parts] }], max_tokens: 4, temperature: 0, ...extra } });
  const image = (url: string) => ({ type: 'image_url', image_url: { url } });

  beforeAll(async () => {
    dir = tmpDir('serve-media');
    const r = spawnSync(process.execPath, [script, path.join(dir, 'model')], { encoding: 'utf8', timeout: 120_000 });
    if (r.status !== 0) throw new Error(`makeVisionModel failed: ${r.stderr}`);
    media = path.join(dir, 'media');
    fs.mkdirSync(media);
    makeMedia(media, 'img.png', ['-f', 'lavfi', '-i', 'testsrc2=s=64x48', '-frames:v', '1']);
    makeClip(media, 'clip.mp4', 64, 48, 4, 6);
    outside = makeMedia(dir, 'secret.png', ['-f', 'lavfi', '-i', 'testsrc2=s=32x32', '-frames:v', '1']);
    fs.symlinkSync(outside, path.join(media, 'link.png'));
    s = await startServe(['-m', path.join(dir, 'model'), '--allowed-media-dir', media, '--quiet'], { LWM_CACHE_DIR: path.join(dir, 'cache') });
  });
  afterAll(async () => {
    await s?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers about an image inside the folder, named by absolute path, relative path or file:// URL alike', async () => {
    const abs = await ask([image(path.join(media, 'img.png'))]);
    expect(abs.status).toBe(200);
    expect(typeof abs.json.choices[0].message.content).toBe('string');
    // One frame is 257 vision tokens, plus the text around it.
    expect(abs.json.usage.prompt_tokens).toBeGreaterThan(257);
    for (const url of ['img.png', pathToFileURL(path.join(media, 'img.png')).href]) {
      const r = await ask([image(url)]);
      // The same prompt again: all but its last token come from the first request's cache.
      expect({ ...r.json.usage, prompt_tokens_details: undefined }).toEqual({ ...abs.json.usage, prompt_tokens_details: undefined });
      expect(r.json.usage.prompt_tokens_details.cached_tokens).toBe(r.json.usage.prompt_tokens - 1);
      expect(r.json.choices[0].message.content).toBe(abs.json.choices[0].message.content);
    }
  });

  it('answers about a video part', async () => {
    const r = await ask([{ type: 'video', video: { path: 'clip.mp4' } }], { stream: true });
    expect(r.status).toBe(200);
    expect(r.text.trim().endsWith('data: [DONE]')).toBe(true);
  });

  it('refuses media outside the folder: absolute, through .., through a symlink; never fetches remote URLs', async () => {
    const denied = async (url: string) => {
      const r = await ask([image(url)]);
      expectApiError(r, 403, /outside the folder/);
      expect(r.json.error).toMatchObject({ type: 'permission_error', code: 'media_outside_allowed_dir', param: 'messages[0].content[1].image_url.url' });
    };
    await denied(outside);
    await denied('../secret.png');
    await denied(path.join(media, '..', 'secret.png'));
    await denied('link.png');
    await denied(pathToFileURL(outside).href);
    for (const url of ['https://example.com/cat.png', 'data:image/png;base64,iVBORw0KGgo=']) {
      expectApiError(await ask([image(url)]), 400, /^remote media is not fetched; give a local path inside --allowed-media-dir$/);
    }
    expectApiError(await ask([image('missing.png')]), 400, /no such file/);
    // Still serving.
    expect((await ask([image('img.png')])).status).toBe(200);
  });
});
