import { describe, expect, it } from '@jest/globals';
import { ByteProgress, byteSize } from '../../bin/progress.js';

function stream(isTTY: boolean): NodeJS.WriteStream & { text: string } {
  const s = { isTTY, text: '', write(chunk: string) {
    s.text += chunk;
    return true;
  } };
  return s as unknown as NodeJS.WriteStream & { text: string };
}

describe('ByteProgress', () => {
  it('on a pipe: one line per tenth of the work plus a final line with the average speed', () => {
    const out = stream(false);
    const p = new ByteProgress('conv', 1000, out);
    for (let i = 0; i < 100; i++) p.add(10);
    const r = p.finish();
    const lines = out.text.trim().split('\n');
    expect(lines.length).toBeLessThanOrEqual(11);
    expect(lines.length).toBeGreaterThanOrEqual(10);
    expect(lines[lines.length - 1]).toMatch(/^conv \[#{24}\] 100% 0\.0 MB\/0\.0 MB [\d.]+ MB\/s \d+:\d\d eta \d+:\d\d$/);
    expect(out.text).not.toMatch(/\r/);
    expect(r.bytes).toBe(1000);
  });

  it('on a terminal: redrawn in place, ending with a newline', () => {
    const out = stream(true);
    const p = new ByteProgress('conv', 4e9, out);
    p.add(1e9);
    expect(out.text).toMatch(/^\rconv \[#{6}\.{18}\]  25% 1\.00 GB\/4\.00 GB /);
    p.finish();
    expect(out.text.split('\n')).toHaveLength(2);
  });

  it('is silent when disabled but still measures', () => {
    const out = stream(false);
    const p = new ByteProgress('conv', 10, out, false);
    p.add(10);
    expect(p.finish().bytes).toBe(10);
    expect(out.text).toBe('');
    expect(byteSize(2.5e6)).toBe('2.5 MB');
  });
});
