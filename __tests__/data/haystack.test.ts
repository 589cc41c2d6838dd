import * as fs from 'node:fs';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from '@jest/globals';
import { InputError } from '../../ops/errors.js';
import { SHIPPED_HAYSTACK, haystackTokens, loadHaystack } from '../../data/haystack.js';
import { defaultTokenizer } from '../../data/tokenizer.js';
import { repoRoot, tmpDir } from '../helpers/paths.js';

const tok = defaultTokenizer();

function expectOneLine(f: () => unknown, re: RegExp): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(InputError);
  expect((err as Error).message).toMatch(re);
  expect((err as Error).message).not.toContain('\n');
}

describe('haystack', () => {
  it('ships the King James Bible as plain text, one book per paragraph, under 1.5 MB', () => {
    expect(SHIPPED_HAYSTACK).toBe(path.join(repoRoot, 'data', 'haystack', 'kjv.txt.gz'));
    expect(fs.statSync(SHIPPED_HAYSTACK).size).toBeLessThan(1.5e6);
    const text = loadHaystack();
    expect(text.startsWith('In the beginning God created the heaven and the earth. And the earth was without form, and void;')).toBe(true);
    expect(text.trimEnd().endsWith('The grace of our Lord Jesus Christ be with you all. Amen.')).toBe(true);
    expect(text.trim().split('\n\n').length).toBe(66);
    // No verse references or the source's markup (# paragraph marks, [italic] brackets).
    expect(text).not.toMatch(/\d+:\d+|[#[\]]/);
    expect(loadHaystack()).toBe(text);
  });

  it('reads a user .txt, .txt.gz, or LWM-style .jsonl ({"text": ...} per line, texts concatenated)', () => {
    const dir = tmpDir('haystack');
    const txt = path.join(dir, 'doc.txt');
    fs.writeFileSync(txt, 'One sentence. Two sentences.\n');
    expect(loadHaystack({ file: txt })).toBe('One sentence. Two sentences.\n');
    fs.writeFileSync(path.join(dir, 'doc.txt.gz'), gzipSync('Zipped text.'));
    expect(loadHaystack({ file: path.join(dir, 'doc.txt.gz') })).toBe('Zipped text.');
    const jsonl = path.join(dir, 'pg19.jsonl');
    fs.writeFileSync(jsonl, [JSON.stringify({ text: 'Book one ends.\n' }), '', JSON.stringify({ text: 'Book two ends.', id: 7 }), JSON.stringify({ text: 'Book three.' })].join('\n'));
    expect(loadHaystack({ file: jsonl })).toBe('Book one ends.\nBook two ends.\n\nBook three.');
  });

  it('bad files give one-line errors', () => {
    const dir = tmpDir('haystack-bad');
    expectOneLine(() => loadHaystack({ file: path.join(dir, 'missing.txt') }), /no such file/);
    fs.writeFileSync(path.join(dir, 'empty.txt'), ' \n');
    expectOneLine(() => loadHaystack({ file: path.join(dir, 'empty.txt') }), /has no text/);
    fs.writeFileSync(path.join(dir, 'empty.jsonl'), '');
    expectOneLine(() => loadHaystack({ file: path.join(dir, 'empty.jsonl') }), /has no text/);
    fs.writeFileSync(path.join(dir, 'bad.jsonl'), '{"title": "x"}\n');
    expectOneLine(() => loadHaystack({ file: path.join(dir, 'bad.jsonl') }), /bad\.jsonl:1: .*"text"/);
    fs.writeFileSync(path.join(dir, 'broken.jsonl'), '{"text": \n');
    expectOneLine(() => loadHaystack({ file: path.join(dir, 'broken.jsonl') }), /broken\.jsonl:1: not valid JSON/);
    fs.writeFileSync(path.join(dir, 'doc.pdf'), 'x');
    expectOneLine(() => loadHaystack({ file: path.join(dir, 'doc.pdf') }), /unknown format.*\.txt.*\.jsonl/);
    expectOneLine(() => haystackTokens('   ', tok, 10), /no text/);
    expectOneLine(() => haystackTokens('Text.', tok, 0), /positive integer/);
  });

  it('tokens: a prefix encoded exactly as the whole text, repeated after a paragraph break when short', () => {
    const text = loadHaystack();
    const ids = haystackTokens(text, tok, 3000);
    expect(ids.length).toBeGreaterThanOrEqual(3000);
    const whole = tok.encode(text.slice(0, 40000));
    expect(ids).toEqual(whole.slice(0, ids.length));

    const short = 'The cat sat. The dog ran.';
    const rep = haystackTokens(short, tok, 50);
    expect(rep.length).toBeGreaterThanOrEqual(50);
    expect(tok.decode(rep).startsWith(`${short}\n\n${short}\n\n${short}`)).toBe(true);

    // start: rounds read different stretches, from a paragraph (book) start.
    const later = haystackTokens(text, tok, 500, { start: 0.5 });
    expect(later.slice(0, 50)).not.toEqual(ids.slice(0, 50));
    const startText = tok.decode(later.slice(0, 20));
    expect(text).toContain(`\n\n${startText}`);
  });
});
