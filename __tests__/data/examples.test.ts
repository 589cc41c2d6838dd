import { describe, it, expect } from '@jest/globals';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError } from '../../ops/errors.js';
import { defaultTokenizer } from '../../data/tokenizer.js';
import {
  loadExamples,
  parseFieldsSpec,
  parseJsonl,
  processExample,
  processJsonl,
  pythonRandomChoiceIndex,
  resolveVisionPath,
} from '../../data/examples.js';

const tok = defaultTokenizer();
function frame(seed: number): number[] {
  return Array.from({ length: 256 }, (_, i) => (seed * 131 + i * 7) % 8192);
}
const rec = (value: Record<string, unknown>, line = 1) => ({ line, value });
function errorOf(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
}

describe('fields spec (spec 5.3/5.4)', () => {
  it('parses brackets, + joins and bos/eos', () => {
    expect(parseFieldsSpec('[vision+question],answer')).toEqual([
      { name: 'vision+question', loss: false, kind: 'keys', keys: ['vision', 'question'] },
      { name: 'answer', loss: true, kind: 'keys', keys: ['answer'] },
    ]);
    expect(parseFieldsSpec('<|bos|>,[<|eos|>]').map((f) => [f.kind, f.loss])).toEqual([['bos', true], ['eos', false]]);
    expect(() => parseFieldsSpec('')).toThrow(InputError);
    expect(() => parseFieldsSpec('a++b')).toThrow(InputError);
  });

  it('TextProcessor example of checklist 11: [q],a', () => {
    const ex = processExample(rec({ q: 'hi', a: 'yo' }), { fields: '[q],a' });
    expect(ex.tokens).toEqual([1, 7251, 24800, 2]);
    expect(ex.lossMask).toEqual([0, 0, 1, 1]);
    expect(ex.visionMask).toEqual([false, false, false, false]);
  });

  it('subfields are joined with the separator and encoded as one piece; prepend_text on field 0', () => {
    const ex = processExample(rec({ a: 'hello', b: 'world', c: 'x' }), { fields: 'a+b,[c]', prependText: 'Q: ', addBosToken: false, addEosToken: false });
    const first = tok.encode('Q: hello world');
    expect(ex.tokens).toEqual([...first, ...tok.encode('x')]);
    expect(ex.lossMask).toEqual([...first.map(() => 1), 0]);
  });

  it('<|bos|>/<|eos|> fields emit the special ids with the field mask', () => {
    const ex = processExample(rec({ t: 'yo' }), { fields: '[<|bos|>],t,<|eos|>', addBosToken: false, addEosToken: false });
    expect(ex.tokens).toEqual([1, 24800, 2]);
    expect(ex.lossMask).toEqual([0, 1, 1]);
  });
});

describe('vision-text examples (spec 5.4)', () => {
  it('[vision+question],answer: prompt without loss, answer and EOS with loss', () => {
    const codes = [...frame(1), ...frame(2)];
    const visionCodes = new Map([['clips/a.mp4', codes]]);
    const ex = processExample(
      rec({ fields: '[vision+question],answer', vision: 'clips/a.mp4', question: 'What is shown?', answer: 'A cat.' }, 3),
      { visionCodes, baseDir: '/data/set' },
    );
    const q = tok.encode('What is shown?');
    const a = tok.encode('A cat.');
    const vis = [529, 4924, 29958, ...frame(1), 8192, ...frame(2), 8193, 1533, 4924, 29958];
    expect(ex.tokens).toEqual([1, ...vis, ...q, ...a, 2]);
    expect(ex.lossMask).toEqual([0, ...vis.map(() => 0), ...q.map(() => 0), ...a.map(() => 1), 1]);
    expect(ex.visionMask).toEqual([false, false, false, false, ...new Array<boolean>(514).fill(true), false, false, false, ...q.map(() => false), ...a.map(() => false), false]);
    expect(ex.line).toBe(3);
  });

  it('generation spec [caption],vision trains the vision tokens; inline flat codes as in LWM', () => {
    const ex = processExample(rec({ fields: '[caption],vision', caption: 'a dog', vision: frame(9) }));
    const c = tok.encode('a dog');
    expect(ex.tokens.length).toBe(1 + c.length + 263 + 1);
    expect(ex.lossMask).toEqual([0, ...c.map(() => 0), ...new Array<number>(263).fill(1), 1]);
  });

  it('list-valued fields: fields_index, or random.Random(line_index).choice as in Python', () => {
    // Values from CPython 3.11: [random.Random(i).choice(range(n)) for i in range(12)]
    const py3 = [1, 0, 0, 0, 0, 2, 2, 1, 0, 1, 2, 1];
    const py10 = [6, 2, 0, 3, 3, 9, 9, 5, 3, 7, 9, 7];
    const py4 = [3, 1, 0, 1, 1, 2, 0, 2, 1, 3, 0, 3];
    expect(py3.map((_, i) => pythonRandomChoiceIndex(i, 3))).toEqual(py3);
    expect(py10.map((_, i) => pythonRandomChoiceIndex(i, 10))).toEqual(py10);
    expect(py4.map((_, i) => pythonRandomChoiceIndex(i, 4))).toEqual(py4);
    expect(pythonRandomChoiceIndex(2 ** 40 + 5, 5)).toBe(4);
    const value = { fields: ['[a],b', '[b],a', 'a,b'], a: 'x', b: 'y' };
    const run = (line: number, fieldsIndex?: number) => {
      const ex = processExample(rec(value, line), { fieldsIndex, addBosToken: false, addEosToken: false });
      return [ex.tokens, ex.lossMask];
    };
    const [x, y] = [tok.encode('x'), tok.encode('y')];
    expect(run(1)).toEqual([[...y, ...x], [0, 1]]); // line index 0 -> entry 1: "[b],a"
    expect(run(6)).toEqual([[...x, ...y], [1, 1]]); // line index 5 -> entry 2: "a,b"
    expect(run(9)).toEqual([[...x, ...y], [0, 1]]); // line index 8 -> entry 0: "[a],b"
    expect(run(1, 2)).toEqual(run(6));
    expect(() => processExample(rec(value, 4), { fieldsIndex: 3 })).toThrow(/fields index 3/);
  });

  it('max frames applies to vision fields', () => {
    const codes = Array.from({ length: 10 }, (_, f) => frame(f)).flat();
    const ex = processExample(rec({ fields: '[vision]', vision: codes }), { maxFrames: 4, addBosToken: false, addEosToken: false });
    expect(ex.tokens.length).toBe(4 * 257 + 6);
    expect(ex.tokens.slice(3 + 3 * 257, 3 + 3 * 257 + 256)).toEqual(frame(9));
  });

  it('errors name the line: invalid JSON, non-objects, missing keys', () => {
    const e1 = errorOf(() => parseJsonl('{"text":"a"}\n\n{"text": oops}\n', 'set.jsonl'));
    expect(e1).toBeInstanceOf(InputError);
    expect(e1.message).toMatch(/^set\.jsonl:3: not valid JSON/);
    expect(e1.message).not.toContain('\n');
    expect(() => parseJsonl('[1,2]')).toThrow(/examples:1: expected a JSON object/);
    const e2 = errorOf(() => processJsonl('{"text":"a"}\n{"txt":"b"}', { fields: 'text' }));
    expect(e2.message).toMatch(/examples:2: text field "text" must be a string, got nothing/);
    expect(parseJsonl('{"a":1}\r\n\n  \n{"b":2}').map((r) => r.line)).toEqual([1, 4]);
  });
});

describe('vision paths', () => {
  it('resolve against the manifest folder; escaping paths are refused with line and path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lwm-ex-'));
    try {
      const root = join(dir, 'set');
      mkdirSync(join(root, 'img'), { recursive: true });
      writeFileSync(join(dir, 'secret.png'), 'x');
      writeFileSync(join(root, 'img', 'a.png'), 'x');
      symlinkSync(join(dir, 'secret.png'), join(root, 'img', 'link.png'));
      const lines = [
        JSON.stringify({ fields: '[vision],caption', vision: 'img/a.png', caption: 'ok' }),
        JSON.stringify({ fields: '[vision],caption', vision: '../secret.png', caption: 'bad' }),
      ];
      writeFileSync(join(root, 'train.jsonl'), lines.join('\n') + '\n');
      const seen: string[] = [];
      const visionCodes = (abs: string) => {
        seen.push(abs);
        return frame(1);
      };
      const e = errorOf(() => loadExamples(join(root, 'train.jsonl'), { visionCodes }));
      expect(e).toBeInstanceOf(InputError);
      expect(e.message).toContain('train.jsonl:2:');
      expect(e.message).toContain('"../secret.png"');
      expect(e.message).toContain('outside the dataset folder');
      expect(seen).toEqual([join(root, 'img', 'a.png')]);
      const ok = loadExamples(join(root, 'train.jsonl'), { visionCodes, allowOutsidePaths: true });
      expect(ok.length).toBe(2);
      expect(seen[seen.length - 1]).toBe(join(dir, 'secret.png'));
      // absolute paths and symlinks leaving the folder are refused too
      expect(() => resolveVisionPath('/etc/passwd', 7, { baseDir: root })).toThrow(/examples:7: vision path "\/etc\/passwd"/);
      expect(() => resolveVisionPath('img/link.png', 5, { baseDir: root })).toThrow(/outside the dataset folder/);
      expect(resolveVisionPath('img/../img/a.png', 1, { baseDir: root })).toBe(join(root, 'img', 'a.png'));
      // a map keyed by the path as written
      const viaMap = loadExamples(join(root, 'train.jsonl'), { visionCodes: new Map([['img/a.png', frame(2)], ['../secret.png', frame(3)]]), allowOutsidePaths: true });
      expect(viaMap[0]?.tokens.slice(4, 260)).toEqual(frame(2));
      expect(() => processExample(rec({ fields: 'vision', vision: 'x.png' }), { visionCodes: new Map() })).toThrow(/no vision codes for "x.png"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
