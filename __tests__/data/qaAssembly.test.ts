import { describe, expect, it } from '@jest/globals';
import { chunkDocument } from '../../data/chunking.js';
import { processExample } from '../../data/examples.js';
import { assembleLength, mixSelection, qaRecord, seededShuffle, type QaDocument } from '../../data/qaAssembly.js';
import { defaultTokenizer } from '../../data/tokenizer.js';
import { LWM_SYSTEM } from '../../src/chat/template.js';
import { syntheticDocs } from '../helpers/qaServer.js';

const tok = defaultTokenizer();

/** Documents with a pair for most chunks (every fifth has none, as if dropped). */
function docs(): QaDocument[] {
  return syntheticDocs(3, 250, 11).map((text, d) => {
    const chunks = chunkDocument(text, tok, 120);
    return {
      text,
      chunks,
      pairs: chunks.map((c, i) => (i % 5 === 3 ? null : { question: `What is item ${d}-${i} about?`, answer: `Chunk ${i} of document ${d}: ${c.text.split(' ').slice(0, 6).join(' ')}` })),
    };
  });
}

const laidOut = (r: object) => processExample({ line: 1, value: r as Record<string, unknown> }, { tokenizer: tok });

describe('QA example assembly', () => {
  const ds = docs();
  const cost = (d: QaDocument, i: number) => {
    const p = d.pairs[i];
    return d.chunks[i]!.tokens + (p ? tok.encode(`USER: ${p.question} ASSISTANT:`).length + tok.encode(p.answer).length + 1 : 0);
  };

  for (const target of [600, 2000]) {
    it(`fills ${target} tokens within one chunk, adjacent chunks in document order, with exactly their pairs`, () => {
      const { records, stats } = assembleLength(ds, target, { tokenizer: tok, system: LWM_SYSTEM });
      expect(records.length).toBeGreaterThan(2);
      expect(stats.examples).toBe(records.length);
      const seen = new Map<number, number>();
      for (const r of records) {
        const d = ds[r.meta.doc]!;
        const [a, b] = r.meta.chunks;
        const ex = laidOut(r);
        expect(ex.tokens.length).toBe(r.meta.tokens);
        expect(r.meta.tokens).toBeLessThanOrEqual(target);
        // The next chunk (or, for a document's last window, any chunk of it) would not have fitted.
        const within = b + 1 < d.chunks.length ? cost(d, b + 1) : Math.max(...Array.from({ length: b - a + 1 }, (_, i) => cost(d, a + i)));
        expect(target - r.meta.tokens).toBeLessThan(within + 8);
        // Windows of a document follow each other without overlap.
        expect(a).toBeGreaterThanOrEqual(seen.get(r.meta.doc) ?? 0);
        seen.set(r.meta.doc, b + 1);
        expect(r.context).toBe(`You are a helpful assistant. USER: ${d.text.slice(d.chunks[a]!.start, d.chunks[b]!.end)}`);
        const expected = [];
        for (let i = a; i <= b; i++) if (d.pairs[i]) expected.push(i);
        expect(r.meta.pairChunks).toEqual(expected);
        r.meta.pairChunks.forEach((c, t) => {
          expect(r[`q${t}`]).toBe(`${t === 0 ? '' : 'USER: '}${d.pairs[c]!.question} ASSISTANT:`);
          expect(r[`a${t}`]).toBe(d.pairs[c]!.answer);
        });
      }
    });
  }

  it('puts the loss on the answers and the EOS after each, nothing else', () => {
    const { records } = assembleLength(ds, 1000, { tokenizer: tok, system: LWM_SYSTEM });
    for (const r of records.slice(0, 5)) {
      const ex = laidOut(r);
      const weighted: number[][] = [];
      let run: number[] = [];
      ex.tokens.forEach((t, i) => {
        if (ex.lossMask[i]) run.push(t);
        else if (run.length) (weighted.push(run), (run = []));
      });
      if (run.length) weighted.push(run);
      const answers = r.meta.pairChunks.map((_, t) => r[`a${t}`] as string);
      expect(weighted.length).toBe(answers.length);
      weighted.forEach((ids, t) => {
        expect(ids.at(-1)).toBe(tok.eosId);
        expect(tok.decode(ids.slice(0, -1))).toBe(answers[t]);
      });
    }
  });

  it('lays out a record in LWM chat template order', () => {
    const chunks = [
      { index: 0, start: 0, end: 4, text: 'One.', tokens: tok.encode('One.').length },
      { index: 1, start: 5, end: 9, text: 'Two.', tokens: tok.encode('Two.').length },
    ];
    const d: QaDocument = { text: 'One. Two.', chunks, pairs: [{ question: 'Q1?', answer: 'A1' }, { question: 'Q2?', answer: 'A2' }] };
    const r = qaRecord(d, 0, 0, 1, 100, LWM_SYSTEM);
    expect(r.fields).toBe('[context],[q0],a0,<|eos|>,[q1],a1');
    const text = tok.decode(laidOut(r).tokens, { skipSpecial: false });
    expect(text).toBe('<s>You are a helpful assistant. USER: One. Two. Q1? ASSISTANT: A1</s>USER: Q2? ASSISTANT: A2</s>');
  });

  it('drops a window without pairs and counts documents too short for the target', () => {
    const short: QaDocument[] = [{ ...ds[0]!, pairs: ds[0]!.pairs.map(() => null) }];
    expect(assembleLength(short, 600, { tokenizer: tok, system: LWM_SYSTEM }).records).toEqual([]);
    const r = assembleLength([ds[0]!], 1_000_000, { tokenizer: tok, system: LWM_SYSTEM });
    expect(r.records).toEqual([]);
    expect(r.stats.shortWindowsDropped).toBe(1);
  });

  it('mixes the requested share and shuffles deterministically', () => {
    expect(mixSelection(70, 100, 0.3, 1).length).toBe(30);
    expect(mixSelection(70, 10, 0.3, 1)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(mixSelection(70, 100, 0.3, 1)).toEqual(mixSelection(70, 100, 0.3, 1));
    expect(mixSelection(70, 100, 0.3, 1)).not.toEqual(mixSelection(70, 100, 0.3, 2));
    expect(() => mixSelection(1, 1, 1, 0)).toThrow(/--mix-ratio must be in \[0, 1\)/);
    const a = seededShuffle([...Array(20).keys()], 4);
    expect(seededShuffle([...Array(20).keys()], 4)).toEqual(a);
    expect([...a].sort((x, y) => x - y)).toEqual([...Array(20).keys()]);
  });
});
