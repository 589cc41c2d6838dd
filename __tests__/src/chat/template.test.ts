import { describe, expect, it } from '@jest/globals';
import { conversationTokens, defaultTokenizer, userTurnTokens } from '../../../src/index.js';

const tok = defaultTokenizer();
const SYSTEM_USER = [887, 526, 263, 8444, 20255, 29889, 3148, 1001, 29901]; // "You are a helpful assistant. USER:"
const ASSISTANT_PIECE = [29871, 319, 1799, 9047, 13566, 29901]; // encode(" ASSISTANT:")

describe('LWM chat templates', () => {
  it('text chat: the 22 ids of lwm-spec 7.1 / checklist item 10', () => {
    const t = userTurnTokens(tok, { text: 'What is the capital of France?' }, true);
    expect(t.tokens).toEqual([1, 887, 526, 263, 8444, 20255, 29889, 3148, 1001, 29901, 1724, 338, 278, 7483, 310, 3444, 29973, 319, 1799, 9047, 13566, 29901]);
    expect(t.visionMask.every((m) => !m)).toBe(true);
  });

  it("vision chat: checklist item 19's sequence for one image, question before the image", () => {
    const codes = Array.from({ length: 256 }, (_, i) => (i * 37) % 8192);
    const t = userTurnTokens(tok, { text: 'What is the video about?', vision: [codes] }, true);
    // Spec 3.6 step 1: encode("<s>You are a helpful assistant. USER: What is the video about?\n").
    const step1 = [1, 887, 526, 263, 8444, 20255, 29889, 3148, 1001, 29901, 1724, 338, 278, 4863, 1048, 29973, 13];
    expect(t.tokens).toEqual([...step1, 529, 4924, 29958, ...codes, 8193, 1533, 4924, 29958, ...ASSISTANT_PIECE]);
    const mask = [...step1.map(() => false), false, false, false, ...codes.map(() => true), true, false, false, false, ...ASSISTANT_PIECE.map(() => false)];
    expect(t.visionMask).toEqual(mask);
  });

  it('--vision-first puts the image before the question, each piece encoded apart', () => {
    const codes = Array.from({ length: 256 }, (_, i) => i);
    const t = userTurnTokens(tok, { text: 'What is it?', vision: [codes] }, true, { visionFirst: true });
    expect(t.tokens).toEqual([1, ...SYSTEM_USER, 529, 4924, 29958, ...codes, 8193, 1533, 4924, 29958, ...tok.encode('What is it? ASSISTANT:')]);
  });

  it('a video: frames separated by <eof>, the last closed by <eov>', () => {
    const codes = Array.from({ length: 512 }, (_, i) => i % 100);
    const t = userTurnTokens(tok, { text: 'Q', vision: [codes] }, true);
    const start = t.tokens.indexOf(529) + 3;
    expect(t.tokens[start + 256]).toBe(8192);
    expect(t.tokens[start + 513]).toBe(8193);
    expect(t.tokens.length - start).toBe(514 + 3 + ASSISTANT_PIECE.length);
  });

  it('--system replaces the system text; an empty one leaves "USER:" first', () => {
    expect(userTurnTokens(tok, { text: 'hi' }, true, { system: 'Be brief.' }).tokens).toEqual([1, ...tok.encode('Be brief. USER: hi ASSISTANT:')]);
    expect(userTurnTokens(tok, { text: 'hi' }, true, { system: '' }).tokens).toEqual([1, ...tok.encode('USER: hi ASSISTANT:')]);
  });

  it('a document comes before the question and tokenizes as the joined text does', () => {
    const doc = 'The river is long. It flows north.';
    const t = userTurnTokens(tok, { text: 'Which way does it flow?', document: doc }, true);
    expect(t.tokens).toEqual([1, ...tok.encode(`You are a helpful assistant. USER: ${doc} Which way does it flow? ASSISTANT:`)]);
    expect(t.documentTokens).toBe(tok.encode(`You are a helpful assistant. USER: ${doc}`).length);
    const cut = userTurnTokens(tok, { text: 'Which way?', document: doc }, true, { maxDocumentTokens: 12 });
    expect(cut.tokens.slice(1, 13)).toEqual(tok.encode(`You are a helpful assistant. USER: ${doc}`).slice(0, 12));
  });

  it('later turns follow the previous answer and its EOS: "</s>USER: ... ASSISTANT:" (Vicuna v1.1)', () => {
    const answer = tok.encode('Paris.');
    const conv = conversationTokens(tok, [{ user: { text: 'Capital of France?' }, answer }, { user: { text: 'And of Italy?' } }]);
    const first = userTurnTokens(tok, { text: 'Capital of France?' }, true).tokens;
    expect(conv.tokens).toEqual([...first, ...answer, 2, ...tok.encode('USER: And of Italy? ASSISTANT:')]);
    expect(userTurnTokens(tok, { text: 'And of Italy?' }, false).tokens).toEqual(tok.encode('USER: And of Italy? ASSISTANT:'));
  });
});
