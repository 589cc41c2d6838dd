/**
 * LWM's JSONL examples → token sequences with vision and loss masks (spec 5.3 TextProcessor,
 * 5.4 VisionTextProcessor).
 *
 * A record is one JSON object per line, e.g.
 *   {"text": "..."}                                                       (text; fields "text")
 *   {"fields": "[vision],caption", "vision": "img/1.png", "caption": "..."}  (image/video-text)
 *   {"fields": ["[vision],caption", "[caption],vision"], "vision": [c0, c1, …], …}
 * The fields spec is split on `,`; a field in `[...]` carries no loss (mask 0), others mask 1;
 * `<|bos|>` / `<|eos|>` emit BOS / EOS with the field's mask; a name containing `vision` is a visual
 * field (its value: a flat list of VQ codes as in LWM, a [T,16,16] array, or a path whose codes the
 * caller supplies); other names are text, `a+b` joined by `subfieldSeparator` and encoded without
 * BOS/EOS. BOS (mask 0) is emitted first and EOS (mask 1) last.
 */
import { readFileSync, realpathSync, existsSync } from 'node:fs';
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path';
import { InputError } from '../ops/errors.js';
import { defaultTokenizer, type Tokenizer } from './tokenizer.js';
import { visionSegment, type TokenSegment, type VisionCodes } from './visionTokens.js';

/** One example as a sequence: tokens, vision mask, and a 0/1 loss mask (of the token itself). */
export interface ProcessedExample extends TokenSegment {
  /** 0 or 1 per token; the packer trains on target t+1 with lossMask[t+1] (spec 5.5). */
  lossMask: number[];
  /** 1-based line number in the JSONL file (for messages). */
  line: number;
}

/** One entry of a fields spec. */
export interface FieldSpec {
  /** The field as written, brackets stripped. */
  name: string;
  /** true unless the field was bracketed. */
  loss: boolean;
  kind: 'bos' | 'eos' | 'keys';
  /** For kind 'keys': the `+`-separated example keys. */
  keys: string[];
}

/** Parse `"[vision+question],answer"` → [{name:'vision+question', loss:false, keys:['vision','question']}, …]. */
export function parseFieldsSpec(spec: string): FieldSpec[] {
  if (spec.trim() === '') throw new InputError('the fields spec is empty; give e.g. "text" or "[vision],caption"');
  return spec.split(',').map((raw) => {
    let name = raw;
    let loss = true;
    if (name.startsWith('[') && name.endsWith(']')) {
      name = name.slice(1, -1);
      loss = false;
    }
    if (name === '<|bos|>') return { name, loss, kind: 'bos', keys: [] };
    if (name === '<|eos|>') return { name, loss, kind: 'eos', keys: [] };
    const keys = name.split('+');
    if (keys.some((k) => k === '')) throw new InputError(`fields spec "${spec}": field "${raw}" has an empty key`);
    return { name, loss, kind: 'keys', keys };
  });
}

/** Codes for path-valued vision fields: keyed by the path as written or by its resolved absolute path. */
export type VisionCodeSource =
  | ReadonlyMap<string, VisionCodes>
  | ((absPath: string, ref: { line: number; field: string; path: string }) => VisionCodes);

export interface ExampleOptions {
  tokenizer?: Tokenizer;
  /** A fixed spec for every record (TextProcessor `fields`). */
  fields?: string;
  /** Record key holding the spec, a string or a list of strings; default `'fields'` when `fields` is unset. */
  fieldsFromExample?: string;
  /** For list-valued specs: >= 0 picks that entry; -1 (default) picks `random.Random(lineIndex).choice`. */
  fieldsIndex?: number;
  subfieldSeparator?: string;
  addBosToken?: boolean;
  addEosToken?: boolean;
  /** Prepended to the text of field 0 (when it is text). */
  prependText?: string;
  /** LWM `max_n_frames` (> 0: keep linspace-selected frames). Default -1 (all). */
  maxFrames?: number;
  /** Which keys are visual. Default: the key contains `vision` (LWM; see pitfall 23). */
  isVisionKey?: (key: string) => boolean;
  /** Codes for vision fields whose value is a path. */
  visionCodes?: VisionCodeSource;
  /** Folder relative vision paths are resolved against (the manifest's folder). Default: cwd. */
  baseDir?: string;
  /** Vision paths must stay inside this folder. Default: baseDir. */
  datasetRoot?: string;
  /** Accept vision paths outside datasetRoot. Default false. */
  allowOutsidePaths?: boolean;
  /** Name of the manifest in messages. Default 'examples'. */
  source?: string;
}

/** One parsed JSONL record. */
export interface JsonlRecord {
  /** 1-based line number. */
  line: number;
  value: Record<string, unknown>;
}

function oneLine(e: unknown): string {
  return (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, ' ');
}

/** Parse one JSONL line (1-based `line` for messages); throws an InputError unless it is a JSON object. */
export function parseJsonlLine(text: string, line: number, source = 'examples'): JsonlRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InputError(`${source}:${line}: not valid JSON (${oneLine(e)}); fix or remove the line`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new InputError(`${source}:${line}: expected a JSON object, got ${Array.isArray(value) ? 'an array' : String(value === null ? 'null' : typeof value)}`);
  }
  return { line, value: value as Record<string, unknown> };
}

/** The string "text" of every line of a JSONL of documents; `what` names a line in the error. */
export function jsonlTexts(raw: string, source: string, what: string): string[] {
  return jsonlLines(raw).map((l) => {
    const t = parseJsonlLine(l.text, l.line, source).value['text'];
    if (typeof t !== 'string') throw new InputError(`${source}:${l.line}: ${what} needs a string "text" field`);
    return t;
  });
}

/** The non-blank lines of JSONL text with their 1-based numbers (a trailing CR is dropped). */
export function jsonlLines(text: string): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  text.split('\n').forEach((raw, i) => {
    const t = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (t.trim() !== '') out.push({ line: i + 1, text: t });
  });
  return out;
}

/** Split JSONL text into objects; blank lines are skipped, anything else that is not a JSON object throws. */
export function parseJsonl(text: string, source = 'examples'): JsonlRecord[] {
  return jsonlLines(text).map((l) => parseJsonlLine(l.text, l.line, source));
}

// ---- Python's random.Random(seed).choice, exactly (MT19937, init_by_array, _randbelow) ----

class PythonMt {
  private readonly mt = new Uint32Array(624);
  private idx = 625;

  constructor(seed: number) {
    const a = Math.abs(Math.trunc(seed));
    const lo = a % 0x100000000;
    const hi = Math.floor(a / 0x100000000);
    const key = hi > 0 ? [lo, hi] : [lo];
    this.initGenrand(19650218);
    const mt = this.mt;
    const N = 624;
    let i = 1;
    let j = 0;
    for (let k = Math.max(N, key.length); k > 0; k--) {
      const p = (mt[i - 1] as number) ^ ((mt[i - 1] as number) >>> 30);
      mt[i] = (((mt[i] as number) ^ Math.imul(p, 1664525)) >>> 0) + (key[j] as number) + j;
      i++;
      j++;
      if (i >= N) {
        mt[0] = mt[N - 1] as number;
        i = 1;
      }
      if (j >= key.length) j = 0;
    }
    for (let k = N - 1; k > 0; k--) {
      const p = (mt[i - 1] as number) ^ ((mt[i - 1] as number) >>> 30);
      mt[i] = (((mt[i] as number) ^ Math.imul(p, 1566083941)) >>> 0) - i;
      i++;
      if (i >= N) {
        mt[0] = mt[N - 1] as number;
        i = 1;
      }
    }
    mt[0] = 0x80000000;
    this.idx = N;
  }

  private initGenrand(s: number): void {
    const mt = this.mt;
    mt[0] = s >>> 0;
    for (let i = 1; i < 624; i++) {
      const p = (mt[i - 1] as number) ^ ((mt[i - 1] as number) >>> 30);
      mt[i] = (Math.imul(1812433253, p) + i) >>> 0;
    }
  }

  uint32(): number {
    const mt = this.mt;
    if (this.idx >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = ((mt[k] as number) & 0x80000000) | ((mt[(k + 1) % 624] as number) & 0x7fffffff);
        mt[k] = (mt[(k + 397) % 624] as number) ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.idx = 0;
    }
    let y = mt[this.idx++] as number;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

/** Index `random.Random(seed).choice(seq)` picks for `len(seq) == n` (CPython 3.x, n < 2^32). */
export function pythonRandomChoiceIndex(seed: number, n: number): number {
  if (!Number.isInteger(n) || n <= 0) throw new InputError(`cannot choose from ${n} entries`);
  const rng = new PythonMt(seed);
  const k = Math.floor(Math.log2(n)) + 1; // n.bit_length()
  for (;;) {
    const r = rng.uint32() >>> (32 - k);
    if (r < n) return r;
  }
}

// ---- paths ----

function inside(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel === '' || (!rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel));
}

/**
 * Resolve a vision path of a record against `baseDir`; refuse it (InputError naming line and path) when it
 * leaves `datasetRoot`, lexically or through a symlink, unless `allowOutsidePaths`.
 */
export function resolveVisionPath(path: string, line: number, opts: ExampleOptions = {}): string {
  const source = opts.source ?? 'examples';
  const base = resolve(opts.baseDir ?? '.');
  const root = resolve(opts.datasetRoot ?? base);
  const abs = resolve(base, path);
  if (opts.allowOutsidePaths) return abs;
  let escapes = !inside(root, abs);
  if (!escapes && existsSync(abs)) {
    try {
      escapes = !inside(realpathSync(root), realpathSync(abs));
    } catch {
      /* unreadable: leave it to the code source */
    }
  }
  if (escapes) {
    throw new InputError(
      `${source}:${line}: vision path ${JSON.stringify(path)} resolves to ${abs}, outside the dataset folder ${root}; move the file inside it or allow outside paths`,
    );
  }
  return abs;
}

// ---- processing ----

function pickSpec(rec: JsonlRecord, lineIndex: number, opts: ExampleOptions, where: string): string {
  if (opts.fields !== undefined && opts.fieldsFromExample === undefined) return opts.fields;
  const key = opts.fieldsFromExample ?? 'fields';
  const v = rec.value[key];
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.length > 0 && v.every((s) => typeof s === 'string')) {
    const fi = opts.fieldsIndex ?? -1;
    if (fi >= 0) {
      if (fi >= v.length) throw new InputError(`${where}: fields index ${fi} but "${key}" has ${v.length} entries`);
      return v[fi] as string;
    }
    return v[pythonRandomChoiceIndex(lineIndex, v.length)] as string;
  }
  throw new InputError(`${where}: "${key}" must be a fields spec string or a non-empty list of them, got ${v === undefined ? 'nothing' : JSON.stringify(v).slice(0, 60)}`);
}

function visionValue(value: unknown, key: string, rec: JsonlRecord, opts: ExampleOptions, where: string): VisionCodes {
  if (Array.isArray(value)) return value as VisionCodes;
  if (typeof value !== 'string') {
    throw new InputError(`${where}: vision field "${key}" must be a list of VQ codes or a path, got ${value === undefined ? 'nothing' : typeof value}`);
  }
  const abs = resolveVisionPath(value, rec.line, opts);
  const src = opts.visionCodes;
  if (src === undefined) throw new InputError(`${where}: vision field "${key}" is a path (${value}) but no vision codes were supplied for paths`);
  if (typeof src === 'function') return src(abs, { line: rec.line, field: key, path: value });
  const codes = src.get(value) ?? src.get(abs);
  if (codes === undefined) throw new InputError(`${where}: no vision codes for ${JSON.stringify(value)} (${abs}); encode it first`);
  return codes;
}

/**
 * One record → tokens, vision mask, loss mask. `lineIndex` (0-based line number by default) seeds the
 * choice among list-valued specs, as LWM's `random.Random(line_index)`.
 */
export function processExample(rec: JsonlRecord, opts: ExampleOptions = {}, lineIndex = rec.line - 1): ProcessedExample {
  const tok = opts.tokenizer ?? defaultTokenizer();
  const where = `${opts.source ?? 'examples'}:${rec.line}`;
  const sepStr = opts.subfieldSeparator ?? ' ';
  const isVision = opts.isVisionKey ?? ((k: string) => k.includes('vision'));
  const tokens: number[] = [];
  const visionMask: boolean[] = [];
  const lossMask: number[] = [];
  const push = (ids: readonly number[], vm: readonly boolean[] | boolean, m: number): void => {
    ids.forEach((id, i) => {
      tokens.push(id);
      visionMask.push(typeof vm === 'boolean' ? vm : (vm[i] as boolean));
      lossMask.push(m);
    });
  };
  if (opts.addBosToken ?? true) push([tok.bosId], false, 0);
  let fields: FieldSpec[];
  try {
    fields = parseFieldsSpec(pickSpec(rec, lineIndex, opts, where));
  } catch (e) {
    if (e instanceof InputError && !e.message.startsWith(where)) throw new InputError(`${where}: ${e.message}`);
    throw e;
  }
  fields.forEach((f, i) => {
    const m = f.loss ? 1 : 0;
    if (f.kind === 'bos') return push([tok.bosId], false, m);
    if (f.kind === 'eos') return push([tok.eosId], false, m);
    // Runs of text keys are joined with the separator and encoded as one piece; vision keys are segments.
    let run: string[] = [];
    let firstText = true;
    const flush = (): void => {
      if (run.length === 0) return;
      let text = run.join(sepStr);
      if (i === 0 && firstText) text = (opts.prependText ?? '') + text;
      firstText = false;
      run = [];
      push(tok.encode(text), false, m);
    };
    for (const key of f.keys) {
      const value = rec.value[key];
      if (isVision(key)) {
        flush();
        firstText = false;
        const seg = visionSegment(visionValue(value, key, rec, opts, where), { tokenizer: tok, maxFrames: opts.maxFrames ?? -1 });
        push(seg.tokens, seg.visionMask, m);
      } else {
        if (typeof value !== 'string') {
          throw new InputError(`${where}: text field "${key}" must be a string, got ${value === undefined ? 'nothing (missing key)' : typeof value}`);
        }
        run.push(value);
      }
    }
    flush();
  });
  if (opts.addEosToken ?? true) push([tok.eosId], false, 1);
  return { tokens, visionMask, lossMask, line: rec.line };
}

/** Parse JSONL text and process every record. */
export function processJsonl(text: string, opts: ExampleOptions = {}): ProcessedExample[] {
  return parseJsonl(text, opts.source).map((rec) => processExample(rec, opts));
}

/** Read a JSONL manifest; relative vision paths resolve against its folder, which is also the dataset root by default. */
export function loadExamples(manifestPath: string, opts: ExampleOptions = {}): ProcessedExample[] {
  let text: string;
  try {
    text = readFileSync(manifestPath, 'utf8');
  } catch (e) {
    throw new InputError(`${manifestPath}: cannot be read (${oneLine(e)})`);
  }
  return processJsonl(text, { ...opts, baseDir: opts.baseDir ?? dirname(resolve(manifestPath)), source: opts.source ?? manifestPath });
}
