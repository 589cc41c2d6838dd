import { describe, it, expect } from '@jest/globals';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import llamaTokenizer from 'llama-tokenizer-js';
import {
  DEFAULT_TOKENIZER_SOURCE,
  TokenStreamDecoder,
  defaultTokenizer,
  loadTokenizer,
  tokenizerFromJson,
  type Tokenizer,
} from '../../data/tokenizer.js';
import { CheckpointError, InputError } from '../../ops/errors.js';

const META = '\u2581';

// Ids from LWM's original tokenizer (HF slow LlamaTokenizer, legacy, add_bos_token=False).
const KNOWN: [string, number[]][] = [
  [
    '<s>You are a helpful assistant. USER: What is the video about?\n',
    [1, 887, 526, 263, 8444, 20255, 29889, 3148, 1001, 29901, 1724, 338, 278, 4863, 1048, 29973, 13],
  ],
  ['<vision>', [529, 4924, 29958]],
  ['</vision>', [1533, 4924, 29958]],
  [' ASSISTANT:', [29871, 319, 1799, 9047, 13566, 29901]],
  ['1234567', [29871, 29896, 29906, 29941, 29946, 29945, 29953, 29955]],
  ['😀', [29871, 243, 162, 155, 131]],
  ['héllo wörld', [298, 3610, 417, 281, 1340, 430]],
  ['  x  ', [259, 921, 259]],
  ['\n', [29871, 13]],
  ['', []],
];
const CAPITAL_PROMPT = 'You are a helpful assistant. USER: What is the capital of France? ASSISTANT:';
const CAPITAL_IDS = [1, 887, 526, 263, 8444, 20255, 29889, 3148, 1001, 29901, 1724, 338, 278, 7483, 310, 3444, 29973, 319, 1799, 9047, 13566, 29901];

const CORPUS: string[] = [
  'Hello, world!',
  'The quick brown fox jumps over the lazy dog.',
  'You are a helpful assistant. USER: Summarize the video. ASSISTANT:',
  '<s>[INST] Hi there [/INST] Hello!</s>',
  'before<s>after</s>tail<unk>end',
  'function add(a: number, b: number): number {\n  return a + b;\n}\n',
  'for i in range(10):\n\tprint(i ** 2)',
  '    four leading spaces',
  'trailing spaces    ',
  ' one leading space',
  'multiple   inner     spaces  here',
  '\n\n\nnewlines\n\n',
  'tabs\tand\t\ttabs',
  '3.14159265358979 and 2,718,281 and -42 and 1e-9',
  '2024-01-15T12:34:56Z',
  'Ünïcödé àccénts: café, naïve, façade, Größe',
  '日本語のテキストです。中文文本。',
  '한국어 텍스트 테스트',
  'Русский текст и ελληνικά',
  'Emoji: 😀🚀👍🏽🇫🇷 and 👨‍👩‍👧',
  'Mixed: abc日本😀def',
  'URL: https://example.com/path?q=1&r=two#frag',
  'email@example.com <tag attr="x">body</tag>',
  'JSON: {"key": [1, 2, 3], "nested": {"a": null}}',
  '<vision><eof></vision> <eov>',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  '!!!???...,,,;;;:::',
  'CamelCaseIdentifier snake_case_identifier kebab-case-identifier',
  'x',
  ' ',
  '   ',
  'a\u00a0b\u200bc', // no-break and zero-width spaces are not ASCII spaces
  'ﬁ ligature and ½ fraction',
  'The year 1999 was followed by 2000, 2001 and 20000000.',
  'Zero-width joiner 👩‍💻 in a sentence.',
];

/** Independent reference: split specials as LWM's slow tokenizer does, encode pieces with llama-tokenizer-js. */
function referenceEncode(text: string, addPrecedingSpace = true): number[] {
  const specials: Record<string, number> = { '<s>': 1, '</s>': 2, '<unk>': 0 };
  const out: number[] = [];
  for (const part of text.split(/(<s>|<\/s>|<unk>)/)) {
    const special = specials[part];
    if (special !== undefined) out.push(special);
    else if (part.length > 0) out.push(...llamaTokenizer.encode(part, false, addPrecedingSpace));
  }
  return out;
}

function llamaMergesInRankOrder(): [string, string][] {
  // Keys are "leftPiece rightPiece"; values are the merge priority (lower merges first).
  return [...llamaTokenizer.merges.entries()]
    .sort((a, b) => a[1] - b[1])
    .map(([key]) => key.split(' ') as [string, string]);
}

const SPECIAL_ADDED = ['<unk>', '<s>', '</s>'].map((content, id) => ({
  id,
  content,
  single_word: false,
  lstrip: false,
  rstrip: false,
  normalized: false,
  special: true,
}));

function llamaTokenizerJson(style: 'llama2' | 'metaspace', opts: { prependScheme?: string; split?: boolean; pairMerges?: boolean } = {}) {
  const merges = llamaMergesInRankOrder().map((p) => (opts.pairMerges ? p : p.join(' ')));
  const spaces =
    style === 'llama2'
      ? {
          normalizer: {
            type: 'Sequence',
            normalizers: [
              { type: 'Prepend', prepend: META },
              { type: 'Replace', pattern: { String: ' ' }, content: META },
            ],
          },
          pre_tokenizer: null,
        }
      : {
          normalizer: null,
          pre_tokenizer: { type: 'Metaspace', replacement: META, prepend_scheme: opts.prependScheme ?? 'first', split: opts.split ?? false },
        };
  return {
    version: '1.0',
    added_tokens: SPECIAL_ADDED,
    ...spaces,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      vocab: Object.fromEntries(llamaTokenizer.vocabById.map((piece, id) => [piece, id])),
      merges,
    },
  };
}

function streamDecode(tok: Tokenizer, ids: readonly number[], skipSpecial?: boolean): string[] {
  const d = new TokenStreamDecoder(tok, skipSpecial === undefined ? {} : { skipSpecial });
  return [...ids.map((id) => d.push(id)), d.flush()];
}

describe('defaultTokenizer', () => {
  const tok = defaultTokenizer();

  it('exposes the LLaMA-2 vocabulary constants', () => {
    expect(tok.vocabSize).toBe(32000);
    expect([tok.unkId, tok.bosId, tok.eosId]).toEqual([0, 1, 2]);
    expect(tok.source).toBe(DEFAULT_TOKENIZER_SOURCE);
    expect(defaultTokenizer()).toBe(tok);
    expect(tok.idToPiece(29871)).toBe(META);
    expect(tok.idToPiece(13)).toBe('<0x0A>');
    expect(tok.idToPiece(3)).toBe('<0x00>');
    expect(tok.idToPiece(258)).toBe('<0xFF>');
    expect(tok.idToPiece(1)).toBe('<s>');
  });

  it.each(KNOWN)('encodes %j to the ids of the original tokenizer', (text, ids) => {
    expect(tok.encode(text)).toEqual(ids);
  });

  it('adds BOS/EOS only when asked', () => {
    expect(tok.encode(CAPITAL_PROMPT, { bos: true })).toEqual(CAPITAL_IDS);
    expect(tok.encode(CAPITAL_PROMPT)).toEqual(CAPITAL_IDS.slice(1));
    expect(tok.encode('Hi', { bos: true, eos: true })).toEqual([1, 6324, 2]);
    expect(tok.encode('Hi', { eos: true })).toEqual([6324, 2]);
    expect(tok.encode('', { bos: true, eos: true })).toEqual([1, 2]);
    expect(tok.encode('', { eos: true })).toEqual([2]);
  });

  it('turns special-token literals in the middle of text into special ids, restarting the dummy prefix', () => {
    expect(tok.encode('Hi</s>Hi<s>Hi<unk>')).toEqual([6324, 2, 6324, 1, 6324, 0]);
    expect(tok.encode('Hi </s> Hi')).toEqual([6324, 29871, 2, 29871, 6324]);
    expect(tok.encode('<s><s></s>')).toEqual([1, 1, 2]);
    expect(tok.encode('<s >')).toEqual([529, 29879, 1405]);
  });

  it('matches llama-tokenizer-js on a varied corpus', () => {
    for (const text of CORPUS) expect({ text, ids: tok.encode(text) }).toEqual({ text, ids: referenceEncode(text) });
  });

  it('matches llama-tokenizer-js on pseudo-random strings', () => {
    const alphabet = [...'abcdefghijklmnopqrstuvwxyzABC   \n\t.,:;!?-_0123456789éüßñ日本語한국😀🚀👍🏽αβдж{}()<>/=*'];
    const words = ['the', 'and', 'ing', 'tion', 'hello', 'function', '  ', '\n\n', '<s>', '</s>', '<unk>'];
    let seed = 42;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return Math.floor((seed / 2147483648) * n);
    };
    for (let k = 0; k < 300; k++) {
      let text = '';
      for (let i = rand(50); i > 0; i--) text += rand(10) < 3 ? words[rand(words.length)] : alphabet[rand(alphabet.length)];
      expect({ text, ids: tok.encode(text) }).toEqual({ text, ids: referenceEncode(text) });
    }
  });

  it('encodes 100 KB of text quickly', () => {
    const text = 'LWM reads long videos. 日本語 😀\n\t  '.repeat(3000).slice(0, 100_000);
    const start = performance.now();
    const ids = tok.encode(text);
    const ms = performance.now() - start;
    expect(ms).toBeLessThan(1000);
    expect(tok.decode(ids)).toBe(text);
  });
});

describe('decode', () => {
  const tok = defaultTokenizer();

  it('inverts known id lists', () => {
    expect(tok.decode([1, 887, 526, 263, 8444, 20255, 29889])).toBe('You are a helpful assistant.');
    expect(tok.decode([1, 887, 526, 263, 8444, 20255, 29889], { skipSpecial: false })).toBe('<s>You are a helpful assistant.');
    expect(tok.decode(CAPITAL_IDS)).toBe(CAPITAL_PROMPT);
    expect(tok.decode([29871, 319, 1799, 9047, 13566, 29901])).toBe(' ASSISTANT:');
    expect(tok.decode([259, 921, 259])).toBe('  x  ');
    expect(tok.decode([29871, 13])).toBe('\n');
    expect(tok.decode([13])).toBe('\n');
    expect(tok.decode([243, 162, 155, 131])).toBe('😀');
    expect(tok.decode([])).toBe('');
    expect(tok.decode([0, 1, 2])).toBe('');
    expect(tok.decode([0, 1, 2], { skipSpecial: false })).toBe('<unk><s></s>');
    expect(tok.decode([6324, 2, 6324], { skipSpecial: false })).toBe('Hi</s>Hi');
    expect(tok.decode([6324, 2, 6324])).toBe('HiHi');
  });

  it('replaces an incomplete byte sequence with U+FFFD', () => {
    expect(tok.decode([243, 162, 155])).toBe('\uFFFD');
  });

  it.each(CORPUS)('round-trips %j', (text) => {
    expect(tok.decode(tok.encode(text), { skipSpecial: false })).toBe(text);
  });

  it('drops special-token text when skipping specials', () => {
    expect(tok.decode(tok.encode('before<s>after</s>tail'))).toBe('beforeaftertail');
  });

  it('rejects ids outside the vocabulary with an InputError naming id and size', () => {
    for (const bad of [32000, -1, 1.5, 99999]) {
      expect(() => tok.decode([887, bad])).toThrow(InputError);
      expect(() => tok.decode([887, bad])).toThrow(new RegExp(`${String(bad).replace('.', '\\.')}.*32000`));
    }
    expect(() => tok.idToPiece(32000)).toThrow(InputError);
    expect(() => new TokenStreamDecoder(tok).push(32000)).toThrow(InputError);
  });
});

describe('TokenStreamDecoder', () => {
  const tok = defaultTokenizer();

  it('emits known text per token, stripping only the first dummy-prefix space', () => {
    expect(streamDecode(tok, [1, 887, 526, 263, 8444, 20255, 29889, 2])).toEqual(['', 'You', ' are', ' a', ' helpful', ' assistant', '.', '', '']);
    expect(streamDecode(tok, [1, 887, 2], false)).toEqual(['<s>', 'You', '</s>', '']);
  });

  it('holds back partial UTF-8 from byte-fallback tokens', () => {
    // "▁", then the four bytes of 😀, then "▁and".
    expect(streamDecode(tok, [29871, 243, 162, 155, 131, 322])).toEqual(['', '', '', '', '😀', ' and', '']);
    // A truncated sequence comes out as U+FFFD only on flush.
    expect(streamDecode(tok, [243, 162])).toEqual(['', '', '\uFFFD']);
  });

  it.each([
    'Hello, world!',
    'Emoji: 😀🚀👍🏽🇫🇷 and 👨‍👩‍👧',
    '한국어 텍스트 테스트',
    '  leading spaces and <s> specials </s>',
    '\n\nnewline first',
    ' ASSISTANT: 日本語のテキスト',
  ])('concatenates to decode() for %j', (text) => {
    const ids = tok.encode(text, { bos: true, eos: true });
    for (const skipSpecial of [true, false]) {
      const whole = tok.decode(ids, { skipSpecial });
      expect(streamDecode(tok, ids, skipSpecial).join('')).toBe(whole);
    }
    expect(streamDecode(tok, ids).join('')).toBe(text.replace(/<\/?s>/g, ''));
  });

  it('can be reused after flush', () => {
    const d = new TokenStreamDecoder(tok);
    expect(d.push(887) + d.flush()).toBe('You');
    expect(d.push(887) + d.flush()).toBe('You');
  });

  it('works with a Tokenizer implemented elsewhere', () => {
    const foreign: Tokenizer = {
      vocabSize: tok.vocabSize,
      bosId: 1,
      eosId: 2,
      unkId: 0,
      source: 'test',
      encode: (t, o) => tok.encode(t, o),
      decode: (ids, o) => tok.decode(ids, o),
      idToPiece: (id) => tok.idToPiece(id),
    };
    const ids = tok.encode('Emoji 😀 and 日本語 and 🇫🇷!');
    const parts = streamDecode(foreign, ids);
    expect(parts.join('')).toBe('Emoji 😀 and 日本語 and 🇫🇷!');
    expect(parts.some((p) => p.includes('\uFFFD'))).toBe(false);
  });
});

describe('tokenizerFromJson with the LLaMA-2 vocabulary', () => {
  const llama2 = tokenizerFromJson(llamaTokenizerJson('llama2'), 'llama2/tokenizer.json');
  const pairs = tokenizerFromJson(llamaTokenizerJson('llama2', { pairMerges: true }), 'pairs/tokenizer.json');
  const metaFirst = tokenizerFromJson(llamaTokenizerJson('metaspace'), 'meta/tokenizer.json');
  const metaAlways = tokenizerFromJson(llamaTokenizerJson('metaspace', { prependScheme: 'always' }), 'meta2/tokenizer.json');

  it('reads sizes and special ids', () => {
    for (const t of [llama2, metaFirst]) {
      expect([t.vocabSize, t.unkId, t.bosId, t.eosId]).toEqual([32000, 0, 1, 2]);
    }
    expect(llama2.source).toBe('llama2/tokenizer.json');
  });

  it('Prepend+Replace style equals the built-in tokenizer everywhere', () => {
    const reference = defaultTokenizer();
    for (const text of [...CORPUS, ...KNOWN.map(([t]) => t)]) {
      const expected = referenceEncode(text);
      expect({ text, ids: llama2.encode(text) }).toEqual({ text, ids: expected });
      expect({ text, ids: pairs.encode(text) }).toEqual({ text, ids: expected });
      expect(llama2.decode(expected, { skipSpecial: false })).toBe(reference.decode(expected, { skipSpecial: false }));
    }
    expect(llama2.encode(CAPITAL_PROMPT, { bos: true })).toEqual(CAPITAL_IDS);
  });

  it('Metaspace style equals the built-in tokenizer on text without a leading space or specials', () => {
    const plain = CORPUS.filter((t) => !t.startsWith(' ') && !/<\/?s>|<unk>/.test(t));
    expect(plain.length).toBeGreaterThan(25);
    for (const text of plain) {
      const expected = referenceEncode(text);
      expect({ text, ids: metaFirst.encode(text) }).toEqual({ text, ids: expected });
      expect({ text, ids: metaAlways.encode(text) }).toEqual({ text, ids: expected });
      expect(metaFirst.decode(expected)).toBe(text);
    }
  });

  it('Metaspace follows HF: no extra prefix before a leading space; "first" skips text after specials', () => {
    // HF Metaspace does not prepend when the text already starts with a space (SentencePiece does).
    expect(metaFirst.encode(' ASSISTANT:')).toEqual([319, 1799, 9047, 13566, 29901]);
    expect(metaAlways.encode(' ASSISTANT:')).toEqual([319, 1799, 9047, 13566, 29901]);
    const noPrefix = (s: string): number[] => llamaTokenizer.encode(s, false, false);
    expect(metaFirst.encode('Hi</s>Hi')).toEqual([6324, 2, ...noPrefix('Hi')]);
    expect(metaAlways.encode('Hi</s>Hi')).toEqual([6324, 2, 6324]);
    expect(metaFirst.decode(metaFirst.encode('Hi</s>Hi'), { skipSpecial: false })).toBe('Hi</s>Hi');
  });

  it('Metaspace split:true runs BPE separately on each word', () => {
    const split = tokenizerFromJson(llamaTokenizerJson('metaspace', { split: true }), 'split/tokenizer.json');
    const word = (s: string): number[] => llamaTokenizer.encode(s, false, true);
    expect(split.encode('hello  world')).toEqual([...word('hello'), 29871, ...word('world')]);
  });
});

/** A vocabulary small enough to work BPE out by hand. */
function tinyJson(merges: unknown[], extra: Record<string, unknown> = {}, model: Record<string, unknown> = {}) {
  const pieces = ['<unk>', '<s>', '</s>', META, 'a', 'b', 'c', 'ab', 'bc', `${META}a`, `${META}ab`, 'aa', '[SEP]'];
  return {
    added_tokens: [
      ...SPECIAL_ADDED,
      { id: 12, content: '[SEP]', special: false, lstrip: true, rstrip: true, normalized: false, single_word: false },
    ],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'Prepend', prepend: META }, { type: 'Replace', pattern: { String: ' ' }, content: META }] },
    pre_tokenizer: null,
    ...extra,
    model: { type: 'BPE', unk_token: '<unk>', fuse_unk: true, byte_fallback: false, vocab: Object.fromEntries(pieces.map((p, i) => [p, i])), merges, ...model },
  };
}

describe('tokenizerFromJson BPE rules (hand-worked vocabulary)', () => {
  it('applies merges by rank, not by position', () => {
    // ▁ a b c: "b c" outranks "a b" -> ▁ a bc.
    expect(tokenizerFromJson(tinyJson(['b c', 'a b']), 't').encode('abc')).toEqual([3, 4, 8]);
    // "a b" first, then "▁ ab" -> ▁ab c.
    expect(tokenizerFromJson(tinyJson(['a b', 'b c', `${META} ab`]), 't').encode('abc')).toEqual([10, 6]);
  });

  it('resolves equal ranks leftmost first', () => {
    expect(tokenizerFromJson(tinyJson(['a a']), 't').encode('aaa')).toEqual([3, 11, 4]);
  });

  it('maps unknown characters to <unk>, fused when fuse_unk is set', () => {
    expect(tokenizerFromJson(tinyJson([]), 't').encode('zz')).toEqual([3, 0]);
    expect(tokenizerFromJson(tinyJson([], {}, { fuse_unk: false }), 't').encode('zz')).toEqual([3, 0, 0]);
  });

  it('honours added-token lstrip/rstrip and keeps non-special added tokens when decoding', () => {
    const t = tokenizerFromJson(tinyJson([]), 't');
    expect(t.encode('a [SEP] b')).toEqual([3, 4, 12, 3, 5]);
    expect(t.decode([3, 4, 12, 3, 5])).toBe('a[SEP]b');
  });

  it('supports a Replace-only normalizer (no dummy prefix)', () => {
    const t = tokenizerFromJson(tinyJson(['a b'], { normalizer: { type: 'Replace', pattern: { String: ' ' }, content: META } }), 't');
    expect(t.encode('ab a')).toEqual([7, 3, 4]);
    expect(t.decode([7, 3, 4])).toBe('ab a');
  });
});

describe('tokenizerFromJson errors', () => {
  const good = tinyJson(['a b']);
  const bad: [string, unknown, RegExp][] = [
    ['a number', 42, /not a JSON object/],
    ['null', null, /not a JSON object/],
    ['an array', [], /not a JSON object/],
    ['no model', { ...good, model: undefined }, /no "model"/],
    ['Unigram', { ...good, model: { ...good.model, type: 'Unigram' } }, /model\.type is "Unigram"/],
    ['WordPiece', { ...good, model: { ...good.model, type: 'WordPiece' } }, /only Llama-style/],
    ['no vocab', { ...good, model: { ...good.model, vocab: undefined } }, /model\.vocab is missing/],
    ['empty vocab', { ...good, model: { ...good.model, vocab: {} } }, /model\.vocab is empty/],
    ['a fractional id', { ...good, model: { ...good.model, vocab: { a: 0.5 } } }, /model\.vocab\["a"\] is 0\.5/],
    ['holes in ids', { ...good, added_tokens: [], model: { ...good.model, vocab: { '<unk>': 0, '<s>': 1, '</s>': 2, a: 5 } } }, /not contiguous: no piece has id 3/],
    ['no merges', { ...good, model: { ...good.model, merges: undefined } }, /model\.merges is missing/],
    ['a 3-part merge', { ...good, model: { ...good.model, merges: ['a b c'] } }, /model\.merges\[0\]/],
    ['a merge of an unknown piece', { ...good, model: { ...good.model, merges: ['a z'] } }, /model\.merges\[0\] piece "z" is not in model\.vocab/],
    ['a merge result outside the vocab', { ...good, model: { ...good.model, merges: ['c a'] } }, /model\.merges\[0\] result "ca"/],
    ['an unknown unk_token', { ...good, model: { ...good.model, unk_token: '<oov>' } }, /unk_token "<oov>"/],
    ['a WordPiece-style prefix', { ...good, model: { ...good.model, continuing_subword_prefix: '##' } }, /continuing_subword_prefix/],
    ['an NFKC normalizer', { ...good, normalizer: { type: 'NFKC' } }, /unsupported normalizer step "NFKC"/],
    ['a ByteLevel pre-tokenizer', { ...good, normalizer: null, pre_tokenizer: { type: 'ByteLevel' } }, /unsupported normalizer null with pre_tokenizer ByteLevel/],
    ['no space handling at all', { ...good, normalizer: null, pre_tokenizer: null }, /unsupported normalizer/],
    ['a bad prepend_scheme', { ...good, normalizer: null, pre_tokenizer: { type: 'Metaspace', replacement: META, prepend_scheme: 'sometimes' } }, /prepend_scheme "sometimes"/],
    ['bad added_tokens', { ...good, added_tokens: [{ content: '' }] }, /added_tokens\[0\]/],
    ['no </s>', { ...good, added_tokens: SPECIAL_ADDED.slice(0, 2), model: { ...good.model, vocab: { '<unk>': 0, '<s>': 1, [META]: 2, a: 3, b: 4, ab: 5 } } }, /no <\/s> token/],
  ];

  it.each(bad)('rejects %s with a one-line CheckpointError naming the file', (_what, json, message) => {
    const call = (): unknown => tokenizerFromJson(json, '/models/x/tokenizer.json');
    expect(call).toThrow(CheckpointError);
    expect(call).toThrow(message);
    try {
      call();
    } catch (e) {
      expect((e as Error).message.startsWith('/models/x/tokenizer.json: ')).toBe(true);
      expect((e as Error).message).not.toContain('\n');
    }
  });

  it('accepts the hand-built good file', () => {
    expect(tokenizerFromJson(good, 't').encode('ab')).toEqual([3, 7]);
  });
});

describe('loadTokenizer', () => {
  const withDir = (fn: (dir: string) => void): void => {
    const dir = mkdtempSync(join(tmpdir(), 'lwm-tok-'));
    try {
      fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it('falls back to the built-in vocabulary without a tokenizer.json', () => {
    expect(loadTokenizer()).toBe(defaultTokenizer());
    withDir((dir) => expect(loadTokenizer(dir)).toBe(defaultTokenizer()));
    expect(loadTokenizer(join(tmpdir(), 'lwm-no-such-dir-xyz'))).toBe(defaultTokenizer());
  });

  it('reads modelDir/tokenizer.json', () => {
    withDir((dir) => {
      const path = join(dir, 'tokenizer.json');
      writeFileSync(path, JSON.stringify(llamaTokenizerJson('llama2')));
      const tok = loadTokenizer(dir);
      expect(tok.source).toBe(path);
      expect(tok.encode(CAPITAL_PROMPT, { bos: true })).toEqual(CAPITAL_IDS);
    });
  });

  it('reports malformed JSON as a one-line CheckpointError naming the path', () => {
    withDir((dir) => {
      const path = join(dir, 'tokenizer.json');
      writeFileSync(path, '{"model": {"type": "BPE",\n  "vocab": ');
      expect(() => loadTokenizer(dir)).toThrow(CheckpointError);
      try {
        loadTokenizer(dir);
      } catch (e) {
        expect((e as Error).message).toContain(path);
        expect((e as Error).message).toContain('not valid JSON');
        expect((e as Error).message).not.toContain('\n');
      }
    });
  });

  it('reports an unsupported tokenizer.json naming the path', () => {
    withDir((dir) => {
      writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'Unigram', vocab: [] } }));
      expect(() => loadTokenizer(dir)).toThrow(/tokenizer\.json: model\.type is "Unigram"/);
    });
  });
});
