/**
 * The LLaMA-2 SentencePiece tokenizer as LWM uses it (HF slow LlamaTokenizer, legacy mode, no
 * automatic BOS): the built-in vocabulary from llama-tokenizer-js, or a checkpoint's tokenizer.json.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import llamaTokenizer from 'llama-tokenizer-js';
import { CheckpointError } from '../ops/errors.js';
import { BpeMerges, SpmCodec, type AddedToken, type DecodeState, type SpmSpec } from './bpe.js';

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly unkId: number;
  /** Where the vocabulary came from: DEFAULT_TOKENIZER_SOURCE or a tokenizer.json path. */
  readonly source: string;
  /** No BOS/EOS unless asked. Literal "<s>", "</s>", "<unk>" inside text become those special ids. */
  encode(text: string, opts?: { bos?: boolean; eos?: boolean }): number[];
  /** skipSpecial defaults to true. Ids outside [0, vocabSize) throw InputError. */
  decode(ids: readonly number[], opts?: { skipSpecial?: boolean }): string;
  idToPiece(id: number): string;
}

export const DEFAULT_TOKENIZER_SOURCE = 'llama-tokenizer-js (built-in LLaMA-2 vocabulary)';

const META = '\u2581';

class SpmTokenizer implements Tokenizer {
  constructor(
    readonly codec: SpmCodec,
    readonly bosId: number,
    readonly eosId: number,
    readonly unkId: number,
    readonly source: string,
  ) {}

  get vocabSize(): number {
    return this.codec.vocabSize;
  }

  encode(text: string, opts: { bos?: boolean; eos?: boolean } = {}): number[] {
    const ids = this.codec.encode(text);
    if (opts.bos) ids.unshift(this.bosId);
    if (opts.eos) ids.push(this.eosId);
    return ids;
  }

  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    return this.codec.decode(ids, opts.skipSpecial ?? true);
  }

  idToPiece(id: number): string {
    return this.codec.piece(id);
  }
}

let builtIn: Tokenizer | undefined;

/** The LLaMA-2 vocabulary bundled with llama-tokenizer-js; built once, then shared. */
export function defaultTokenizer(): Tokenizer {
  builtIn ??= buildDefaultTokenizer();
  return builtIn;
}

function buildDefaultTokenizer(): Tokenizer {
  const pieces = llamaTokenizer.vocabById;
  const idOf = (piece: string): number => {
    const id = llamaTokenizer.vocabByString.get(piece);
    if (id === undefined) throw new Error(`llama-tokenizer-js data is inconsistent: no piece ${JSON.stringify(piece)}`);
    return id;
  };
  const merges = new BpeMerges(pieces.length);
  // Map values are the merge priorities; the keys are "left right" piece pairs (pieces never contain ' ').
  const ordered = [...llamaTokenizer.merges.entries()].sort((a, b) => a[1] - b[1]);
  for (const [pair] of ordered) {
    const sp = pair.indexOf(' ');
    const left = pair.slice(0, sp);
    const right = pair.slice(sp + 1);
    merges.add(idOf(left), idOf(right), idOf(left + right));
  }
  const special = (content: string): AddedToken =>
    ({ content, id: idOf(content), special: true, lstrip: false, rstrip: false });
  const added = [special('<unk>'), special('<s>'), special('</s>')];
  const codec = new SpmCodec({
    pieces,
    merges,
    unkId: idOf('<unk>'),
    added,
    meta: META,
    prefix: 'always',
    prefixEvenIfSpace: true,
    splitOnMeta: false,
    byteFallback: true,
    fuseUnk: true,
    ignoreMerges: false,
  });
  return new SpmTokenizer(codec, idOf('<s>'), idOf('</s>'), idOf('<unk>'), DEFAULT_TOKENIZER_SOURCE);
}

/** `modelDir/tokenizer.json` when the checkpoint ships one, else the built-in LLaMA-2 vocabulary. */
export function loadTokenizer(modelDir?: string): Tokenizer {
  if (modelDir === undefined) return defaultTokenizer();
  const path = join(modelDir, 'tokenizer.json');
  if (!existsSync(path)) return defaultTokenizer();
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CheckpointError(`${path}: cannot be read (${oneLine(e)})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(
      `${path}: not valid JSON (${oneLine(e)}); re-download it, or delete it to use the built-in LLaMA-2 vocabulary`,
    );
  }
  return tokenizerFromJson(json, path);
}

function oneLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, ' ');
}

/** A Hugging Face tokenizer.json of the Llama family (SentencePiece-style BPE with byte fallback). */
export function tokenizerFromJson(json: unknown, source: string): Tokenizer {
  const fail = (problem: string): never => {
    throw new CheckpointError(`${source}: ${problem}`);
  };
  if (!isRecord(json)) return fail('not a JSON object (expected a Hugging Face tokenizer.json)');
  const model = json['model'];
  if (!isRecord(model)) return fail('has no "model" object (expected a Hugging Face tokenizer.json)');
  if (model['type'] !== 'BPE') {
    const type = JSON.stringify(model['type']);
    return fail(`model.type is ${type}; only Llama-style SentencePiece BPE ("BPE") is supported${UNSUPPORTED_HINT}`);
  }
  for (const key of ['continuing_subword_prefix', 'end_of_word_suffix']) {
    if (typeof model[key] === 'string' && model[key] !== '') {
      return fail(`model.${key} is set; this is not a SentencePiece-style BPE${UNSUPPORTED_HINT}`);
    }
  }
  const vocab = readVocab(model['vocab'], fail);
  const added = readAddedTokens(json['added_tokens'], fail);
  const pieces = densePieces(vocab, added, fail);
  const idOf = (piece: string, what: string): number =>
    vocab.get(piece) ?? fail(`${what} ${JSON.stringify(piece)} is not in model.vocab`);
  const merges = readMerges(model['merges'], pieces.length, idOf, fail);
  const unkToken = model['unk_token'];
  const unkId = typeof unkToken === 'string' ? idOf(unkToken, 'unk_token') : -1;
  const addedId = (content: string): number =>
    added.find((t) => t.content === content)?.id ??
    vocab.get(content) ??
    fail(`has no ${content} token (needed as BOS/EOS)`);
  const spaces = readSpaceHandling(json['normalizer'], json['pre_tokenizer'], fail);
  const codec = new SpmCodec({
    pieces,
    merges,
    unkId,
    added,
    ...spaces,
    byteFallback: model['byte_fallback'] === true,
    fuseUnk: model['fuse_unk'] === true,
    ignoreMerges: model['ignore_merges'] === true,
  });
  return new SpmTokenizer(codec, addedId('<s>'), addedId('</s>'), unkId, source);
}

const UNSUPPORTED_HINT = '; delete tokenizer.json to use the built-in LLaMA-2 vocabulary';

type Fail = (problem: string) => never;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isId(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0;
}

function readVocab(raw: unknown, fail: Fail): Map<string, number> {
  if (!isRecord(raw)) return fail('model.vocab is missing or not an object of piece -> id');
  const vocab = new Map<string, number>();
  for (const [piece, id] of Object.entries(raw)) {
    if (!isId(id)) return fail(`model.vocab[${JSON.stringify(piece)}] is ${JSON.stringify(id)}, not a token id`);
    vocab.set(piece, id);
  }
  if (vocab.size === 0) return fail('model.vocab is empty');
  return vocab;
}

function readAddedTokens(raw: unknown, fail: Fail): AddedToken[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) return fail('added_tokens is not an array');
  return raw.map((t: unknown, i) => {
    if (!isRecord(t) || typeof t['content'] !== 'string' || t['content'] === '' || !isId(t['id'])) {
      return fail(`added_tokens[${i}] needs a non-empty "content" string and an integer "id"`);
    }
    const flag = (name: string): boolean => t[name] === true;
    return { content: t['content'], id: t['id'], special: flag('special'), lstrip: flag('lstrip'), rstrip: flag('rstrip') };
  });
}

/** Ids must cover 0..max without holes, since logits index the vocabulary directly. */
function densePieces(vocab: Map<string, number>, added: readonly AddedToken[], fail: Fail): string[] {
  const pieces: string[] = [];
  for (const [piece, id] of vocab) pieces[id] = piece;
  for (const t of added) pieces[t.id] ??= t.content;
  for (let id = 0; id < pieces.length; id++) {
    if (pieces[id] === undefined) {
      return fail(`token ids are not contiguous: no piece has id ${id} (vocabulary size ${pieces.length})`);
    }
  }
  return pieces;
}

function readMerges(raw: unknown, stride: number, idOf: (piece: string, what: string) => number, fail: Fail): BpeMerges {
  if (!Array.isArray(raw)) return fail('model.merges is missing or not an array');
  const merges = new BpeMerges(stride);
  raw.forEach((entry: unknown, i) => {
    const pair = typeof entry === 'string' ? entry.split(' ') : entry;
    if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
      return fail(`model.merges[${i}] is ${JSON.stringify(entry)}; expected "left right" or ["left", "right"]`);
    }
    const [left, right] = pair as [string, string];
    const what = `model.merges[${i}] piece`;
    merges.add(idOf(left, what), idOf(right, what), idOf(left + right, `model.merges[${i}] result`));
  });
  return merges;
}

type SpaceHandling = Pick<SpmSpec, 'meta' | 'prefix' | 'prefixEvenIfSpace' | 'splitOnMeta'>;

/**
 * The two ways Llama tokenizer.json files map spaces to the meta symbol: Llama-2 style
 * (normalizer Prepend + Replace, no pre-tokenizer) and newer conversions (Metaspace pre-tokenizer).
 */
function readSpaceHandling(normalizer: unknown, preTokenizer: unknown, fail: Fail): SpaceHandling {
  const none = (v: unknown): boolean => v === null || v === undefined;
  if (none(preTokenizer) && !none(normalizer)) return readNormalizer(normalizer, fail);
  if (none(normalizer) && isRecord(preTokenizer) && preTokenizer['type'] === 'Metaspace') {
    return readMetaspace(preTokenizer, fail);
  }
  const describe = (v: unknown): string => (isRecord(v) ? String(v['type']) : String(v));
  return fail(
    `unsupported normalizer ${describe(normalizer)} with pre_tokenizer ${describe(preTokenizer)}; expected normalizer ` +
      `Sequence[Prepend, Replace] with no pre_tokenizer, or no normalizer with a Metaspace pre_tokenizer${UNSUPPORTED_HINT}`,
  );
}

function readNormalizer(normalizer: unknown, fail: Fail): SpaceHandling {
  const steps = isRecord(normalizer) && normalizer['type'] === 'Sequence' ? normalizer['normalizers'] : [normalizer];
  let meta: string | undefined;
  let prepend: string | undefined;
  for (const step of Array.isArray(steps) ? steps : [steps]) {
    const s = isRecord(step) ? step : {};
    const replacesSpace = isRecord(s['pattern']) && s['pattern']['String'] === ' ';
    if (s['type'] === 'Prepend' && typeof s['prepend'] === 'string') prepend = s['prepend'];
    else if (s['type'] === 'Replace' && replacesSpace && typeof s['content'] === 'string') meta = s['content'];
    else {
      const type = JSON.stringify(s['type']);
      return fail(`unsupported normalizer step ${type}; only Prepend and Replace(" ") are supported${UNSUPPORTED_HINT}`);
    }
  }
  if (meta === undefined || meta === '') return fail(`normalizer has no Replace(" " -> "${META}") step${UNSUPPORTED_HINT}`);
  if (prepend !== undefined && prepend !== meta) {
    return fail(`normalizer prepends ${JSON.stringify(prepend)} but replaces spaces with ${JSON.stringify(meta)}`);
  }
  return { meta, prefix: prepend === undefined ? 'never' : 'always', prefixEvenIfSpace: true, splitOnMeta: false };
}

function readMetaspace(pre: Record<string, unknown>, fail: Fail): SpaceHandling {
  const meta = pre['replacement'];
  if (typeof meta !== 'string' || meta === '') return fail('pre_tokenizer Metaspace has no "replacement" string');
  const scheme = pre['prepend_scheme'] ?? (pre['add_prefix_space'] === false ? 'never' : 'always');
  if (scheme !== 'always' && scheme !== 'first' && scheme !== 'never') {
    return fail(`pre_tokenizer Metaspace prepend_scheme ${JSON.stringify(scheme)} is not "always", "first" or "never"`);
  }
  return { meta, prefix: scheme, prefixEvenIfSpace: false, splitOnMeta: pre['split'] !== false };
}

/**
 * Incremental detokenizer for streaming generation. `push` returns only text that later tokens
 * cannot change (incomplete UTF-8 sequences from byte-fallback tokens are held back), so the
 * concatenation of every `push` plus `flush()` equals `tok.decode(allIds, opts)`.
 */
export class TokenStreamDecoder {
  private readonly impl: { push(id: number): string; flush(): string };

  constructor(tok: Tokenizer, opts: { skipSpecial?: boolean } = {}) {
    const skipSpecial = opts.skipSpecial ?? true;
    this.impl = tok instanceof SpmTokenizer ? new ByteStream(tok.codec, skipSpecial) : new RedecodeStream(tok, skipSpecial);
  }

  push(id: number): string {
    return this.impl.push(id);
  }

  /** Emits whatever is still held back and resets, so the decoder can start a new sequence. */
  flush(): string {
    return this.impl.flush();
  }
}

/** Same byte rules as SpmCodec.decode, fed through a streaming UTF-8 decoder. */
class ByteStream {
  private utf8 = new TextDecoder('utf-8');
  private state: DecodeState;

  constructor(
    private readonly codec: SpmCodec,
    private readonly skipSpecial: boolean,
  ) {
    this.state = codec.initialDecodeState();
  }

  push(id: number): string {
    return this.utf8.decode(this.codec.bytesFor(id, this.state, this.skipSpecial), { stream: true });
  }

  flush(): string {
    const rest = this.utf8.decode();
    this.utf8 = new TextDecoder('utf-8');
    this.state = this.codec.initialDecodeState();
    return rest;
  }
}

/**
 * For Tokenizer implementations from elsewhere: re-decode everything and emit the new suffix,
 * holding back trailing U+FFFD that may still become a complete character. Quadratic, but correct.
 */
class RedecodeStream {
  private ids: number[] = [];
  private emitted = 0;

  constructor(
    private readonly tok: Tokenizer,
    private readonly skipSpecial: boolean,
  ) {}

  push(id: number): string {
    this.ids.push(id);
    const text = this.tok.decode(this.ids, { skipSpecial: this.skipSpecial });
    let end = text.length;
    while (end > this.emitted && text.charCodeAt(end - 1) === 0xfffd) end--;
    const out = text.slice(this.emitted, end);
    this.emitted = Math.max(this.emitted, end);
    return out;
  }

  flush(): string {
    const out = this.tok.decode(this.ids, { skipSpecial: this.skipSpecial }).slice(this.emitted);
    this.ids = [];
    this.emitted = 0;
    return out;
  }
}
