import { describe, expect, it } from '@jest/globals';
import { ConfigError, InputError } from '../../ops/errors.js';
import { processExample } from '../../data/examples.js';
import { defaultTokenizer } from '../../data/tokenizer.js';
import { passkeyDataset, passkeyExample, passkeyPrompt, passkeySentence, scorePasskey, type PasskeyRecord } from '../../data/passkey.js';

const tok = defaultTokenizer();
/** The example as `lwm prepare` lays it out (the real tokenizer, BOS/EOS, loss mask). */
const laidOut = (r: PasskeyRecord) => processExample({ line: 1, value: { ...r } }, { tokenizer: tok });

describe('passkey examples', () => {
  it('are deterministic by seed and differ between seeds', () => {
    const a = passkeyDataset({ count: 20, seed: 5, targetTokens: 128 });
    expect(passkeyDataset({ count: 20, seed: 5, targetTokens: 128 })).toEqual(a);
    const b = passkeyDataset({ count: 20, seed: 6, targetTokens: 128 });
    expect(b.map((r) => r.passkey)).not.toEqual(a.map((r) => r.passkey));
    expect(passkeyExample(9, { fillerSentences: 12 })).toEqual(passkeyExample(9, { fillerSentences: 12 }));
    // Passkeys and depths actually vary within a set.
    expect(new Set(a.map((r) => r.passkey)).size).toBe(20);
    expect(new Set(a.map((r) => r.depth)).size).toBeGreaterThan(5);
  });

  it('put the passkey sentence at the requested depth of the filler', () => {
    for (const depth of [0, 0.25, 0.5, 0.9, 1]) {
      const r = passkeyExample(3, { fillerSentences: 40, depth });
      const at = r.text.indexOf(passkeySentence(r.passkey));
      expect(at).toBeGreaterThanOrEqual(0);
      // Every filler sentence ends in one period: count them before and after the passkey sentence.
      const before = (r.text.slice(0, at).match(/\./g) ?? []).length;
      const after = (r.text.slice(at + passkeySentence(r.passkey).length).match(/\./g) ?? []).length;
      expect(before + after).toBe(40);
      expect(before).toBe(Math.round(depth * 40));
      expect(r.depth).toBeCloseTo(before / 40, 10);
      expect(r.text.split(passkeySentence(r.passkey)).length).toBe(2);
    }
  });

  it('are as long as targetTokens, never longer (real tokenizer)', () => {
    for (const target of [64, 100, 256, 1000]) {
      for (const r of passkeyDataset({ count: 5, seed: target, targetTokens: target })) {
        const n = laidOut(r).tokens.length;
        expect(n).toBeLessThanOrEqual(target);
        expect(n).toBeGreaterThanOrEqual(target - 5);
        expect(r.tokens).toBe(n);
      }
    }
    expect(() => passkeyExample(1, { targetTokens: 20 })).toThrow(ConfigError);
    expect(() => passkeyExample(1, {})).toThrow(ConfigError);
    expect(() => passkeyExample(1, { fillerSentences: 3, depth: 1.5 })).toThrow(ConfigError);
  });

  it('train only on the answer, one token per digit, and the prompt is the unlossed part', () => {
    for (const digits of [5, 8]) {
      for (const r of passkeyDataset({ count: 10, seed: digits, targetTokens: 200, digits })) {
        expect(r.passkey).toMatch(new RegExp(`^[1-9][0-9]{${digits - 1}}$`));
        expect(r.fields).toBe('[text+question],answer');
        const e = laidOut(r);
        const trained = e.tokens.filter((_, i) => e.lossMask[i] === 1);
        const pieces = trained.map((id) => tok.idToPiece(id));
        expect(pieces).toEqual(['▁', ...r.passkey.split(''), '.', tok.idToPiece(tok.eosId)]);
        // Digits appear as the same pieces in the passkey sentence, so copying them is enough.
        const prompt = tok.encode(passkeyPrompt(r), { bos: true });
        expect(e.tokens.slice(0, prompt.length)).toEqual(prompt);
        expect(e.lossMask.slice(0, prompt.length).every((m) => m === 0)).toBe(true);
        expect(prompt.length + trained.length).toBe(e.tokens.length);
        expect(tok.decode(trained).trim()).toBe(`${r.passkey}.`);
      }
    }
  });
});

describe('scorePasskey', () => {
  it('accepts the digits at the start, whatever the whitespace', () => {
    expect(scorePasskey('71432.', '71432')).toBe(true);
    expect(scorePasskey(' 71432', '71432')).toBe(true);
    expect(scorePasskey('\n 7 1432 is the pass key', '71432')).toBe(true);
    expect(scorePasskey('71432</s>', '71432')).toBe(true);
  });

  it('rejects other digits, extra digits, a late answer and empty output', () => {
    expect(scorePasskey('71433.', '71432')).toBe(false);
    expect(scorePasskey('714321', '71432')).toBe(false);
    expect(scorePasskey('7143', '71432')).toBe(false);
    expect(scorePasskey('The pass key is 71432.', '71432')).toBe(false);
    expect(scorePasskey('', '71432')).toBe(false);
    expect(() => scorePasskey('1', 'abc')).toThrow(InputError);
  });
});
