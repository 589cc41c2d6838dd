import { describe, expect, it } from '@jest/globals';
import { chatCompletionsUrl } from '../../../src/qa/generators.js';
import { groundedShare, parseQaReply, qaPrompt } from '../../../src/qa/prompt.js';
import { passageOf } from '../../helpers/qaServer.js';

const chunk = 'The lighthouse keeper, Ada Morrow, logged 412 ships in the winter of 1871 before the storm broke the lamp.';

describe('question-answer replies', () => {
  it('parse the two lines, tolerating markdown and extra whitespace', () => {
    expect(parseQaReply('Question: How many ships did Ada Morrow log?\nAnswer: 412 ships', chunk)).toEqual({ ok: true, pair: { question: 'How many ships did Ada Morrow log?', answer: '412 ships' } });
    expect(parseQaReply('Sure!\n**Question:**  Who kept the lighthouse? \n\n**Answer:** Ada   Morrow\n\nQuestion: another?', chunk)).toEqual({ ok: true, pair: { question: 'Who kept the lighthouse?', answer: 'Ada Morrow' } });
  });

  it('reject unparseable, empty, over-long and ungrounded replies with the reason', () => {
    expect(parseQaReply('Ada Morrow logged 412 ships.', chunk)).toMatchObject({ ok: false, reason: 'unparseable' });
    expect(parseQaReply('Question: Who?\nAnswer:   ', chunk)).toMatchObject({ ok: false, reason: 'empty' });
    expect(parseQaReply('Question:\nAnswer: Ada', chunk)).toMatchObject({ ok: false, reason: 'empty' });
    expect(parseQaReply(`Question: Who?\nAnswer: ${'lighthouse '.repeat(61)}`, chunk)).toMatchObject({ ok: false, reason: 'too-long' });
    expect(parseQaReply('Question: Who?\nAnswer: The harbour master of Dover', chunk)).toMatchObject({ ok: false, reason: 'ungrounded', detail: '0% of the answer\'s content words are in the chunk' });
    // Function words alone are no evidence.
    expect(parseQaReply('Question: Was it?\nAnswer: Yes, it was.', chunk)).toMatchObject({ ok: false, reason: 'ungrounded' });
  });

  it('count the share of content words found in the chunk', () => {
    expect(groundedShare('Ada Morrow', chunk)).toBe(1);
    expect(groundedShare('Ada Smith', chunk)).toBe(0.5);
    expect(groundedShare('the of and', chunk)).toBe(0);
    expect(groundedShare('In 1871.', chunk)).toBe(1);
  });

  it('embed the chunk verbatim in the fixed prompt', () => {
    expect(passageOf(qaPrompt(chunk))).toBe(chunk);
    expect(qaPrompt(chunk)).toMatch(/Reply in exactly this format and nothing else:\nQuestion: <the question>\nAnswer: <the answer>$/);
  });

  it('resolve the chat-completions URL from a base URL', () => {
    expect(chatCompletionsUrl('http://127.0.0.1:8080')).toBe('http://127.0.0.1:8080/v1/chat/completions');
    expect(chatCompletionsUrl('http://h:1/v1/')).toBe('http://h:1/v1/chat/completions');
    expect(chatCompletionsUrl('https://h/api/v1/chat/completions')).toBe('https://h/api/v1/chat/completions');
    expect(() => chatCompletionsUrl('localhost:8080')).toThrow(/only http and https|is not a URL/);
  });
});
