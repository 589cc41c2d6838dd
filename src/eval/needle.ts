/**
 * Needle-in-a-haystack cases as LWM's scripts/eval_needle.py and eval_needle_multi.py build them
 * (spec 7.2, 7.3), with one change: positions are counted in the model's own tokens, not tiktoken's,
 * so the prompt fits the context exactly and the depth reported is the one the model sees.
 */
import { InputError } from '../../ops/errors.js';
import type { Tokenizer } from '../../data/tokenizer.js';

/** LWM's RANDOM_NEEDLE_CITIES, duplicates included (they weight the draw). */
export const NEEDLE_CITIES: readonly string[] = Object.freeze([
  'Chicago', 'Yangon', 'Antananarivo', 'Colombo', 'Almaty', 'Sydney', 'Chicago', 'Mexico City',
  'Seattle', 'Lagos', 'Amsterdam', 'Belgrade', 'Cairo', 'Baghdad', 'Damascus', 'Kigali', 'Dakar',
  'Dakar', 'Sofia', 'Kigali', 'Victoria', 'Tashkent', 'Mumbai', 'Barcelona', 'Almaty', 'Amman',
  'Toronto', 'Bratislava', 'Johannesburg', 'Thimphu', 'Bangkok', 'Santiago', 'Cairo', 'San Francisco',
  'Lagos', 'Amsterdam', 'Paris', 'Rabat', 'Santiago', 'Copenhagen', 'Madrid', 'Kigali',
  'Ho Chi Minh City', 'Sarajevo', 'Delhi', 'Istanbul', 'Ho Chi Minh City', 'Khartoum', 'Helsinki',
  'Doha', 'Istanbul', 'Kuala Lumpur', 'Budapest', 'Shanghai', 'Moscow', 'Los Angeles', 'Oslo',
  'Johannesburg', 'Berlin', 'Bangalore', 'Tokyo', 'Melbourne', 'Barcelona', 'Chicago', 'Port Louis',
  'Lisbon', 'Nairobi', 'Kampala', 'Lima', 'Maputo', 'Vancouver', 'Dubai', 'Khartoum', 'Jakarta',
  'Madrid', 'Yerevan', 'Beirut', 'Athens', 'Chicago', 'Paris', 'Bucharest', 'Copenhagen', 'Brussels',
  'Damascus', 'Seattle', 'Los Angeles', 'Yerevan', 'Victoria', 'Tunis', 'Astana', 'Seoul',
  'Buenos Aires', 'Bangkok', 'Colombo', 'Brussels', 'Khartoum', 'Doha', 'San Francisco', 'Vienna', 'Jakarta',
]);

const HEAD = 'You are a helpful assistant. USER:';
const SINGLE_TAIL = " Don't give information outside the document or repeat your findings. Keep your response short and direct. ASSISTANT: ";
const MULTI_TAIL = " Don't give information outside the document. ASSISTANT: ";

/** eval_needle.py's OURS_TEMPLATE (note the trailing space). */
export const NEEDLE_TEMPLATE = `${HEAD} {context} {question}${SINGLE_TAIL}`;
/** eval_needle_multi.py's OURS_TEMPLATE. */
export const MULTI_NEEDLE_TEMPLATE = `${HEAD} {context} {question}${MULTI_TAIL}`;

export function needleText(city: string, number: string): string {
  return `\nThe special magic ${city} number is: ${number}\n`;
}

/** Single-needle runs ask eval_needle.py's question; multi-needle runs eval_needle_multi.py's. */
export function needleQuestion(cities: readonly string[], multi: boolean): string {
  if (cities.length === 0) throw new InputError('a needle question needs at least one city');
  if (!multi) return `What is the special magic ${cities[0]} number?`;
  if (cities.length === 1) return `What is the special magic number for ${cities[0]}?`;
  return `What are the special magic numbers for ${cities.slice(0, -1).join(', ')}, and ${cities[cities.length - 1]}?`;
}

/** numpy's round(linspace(min, max, n)) as ints: same float steps, and halves round to even. */
export function linspaceInts(min: number, max: number, n: number): number[] {
  if (!Number.isInteger(n) || n < 1) throw new InputError(`a grid needs a positive whole number of steps, got ${n}`);
  if (!Number.isFinite(min) || !Number.isFinite(max)) throw new InputError(`grid bounds must be numbers, got ${min} and ${max}`);
  if (n === 1) return [roundHalfEven(min)];
  const step = (max - min) / (n - 1);
  return Array.from({ length: n }, (_, i) => roundHalfEven(i === n - 1 ? max : i * step + min));
}

function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d !== 0.5) return Math.round(x);
  return f % 2 === 0 ? f : f + 1;
}

/** eval_needle.py's flags in scripts/run_eval_needle.sh. */
export const LWM_NEEDLE_CONTEXTS: readonly number[] = Object.freeze(linspaceInts(1000, 10000, 20));
export const LWM_NEEDLE_DEPTHS: readonly number[] = Object.freeze(linspaceInts(0, 100, 20));

export interface NeedleCaseOptions {
  /** Ids of the haystack (haystackTokens), at least as many as the context can hold. */
  haystackTokens: readonly number[];
  tok: Tokenizer;
  /** Tokens of the whole prompt at most: BOS, template, haystack, needles, question. */
  contextLength: number;
  /** One depth (0..100) per needle; a single number for a single needle. */
  depthPercent: number | readonly number[];
  /** Floats in [0, 1); draws cities and numbers. */
  rng: () => number;
  /** Needles to hide (default: one per depth). */
  needles?: number;
  /** How many of them the question asks for (default all), as eval_needle_multi.py's n_needles_retrieve. */
  retrieve?: number;
}

export interface NeedleInfo {
  city: string;
  number: string;
  /** As requested. */
  depthPercent: number;
  /** Haystack tokens before the needle / all haystack tokens: the depth actually achieved. */
  tokenDepth: number;
  /** Index of the needle's first token in promptTokens. */
  tokenIndex: number;
}

export interface NeedleCase {
  prompt: string;
  /** BOS + template, as LWM-Text-Chat is prompted with the current tokenizer (spec 7.1). */
  promptTokens: number[];
  needles: NeedleInfo[];
  question: string;
  /** The numbers asked for, in the question's order. */
  answers: string[];
  /** Haystack tokens in the prompt. */
  haystackLength: number;
}

/**
 * One prompt with its needles. The haystack is cut so the whole prompt fits contextLength (LWM cuts
 * it to context_length - 200 - len(needle) tiktoken tokens, a guess at the template's size); each
 * needle goes at int(len * depth/100) of the cut haystack (100: appended), moved back until the
 * token before it ends with '.', inserted one after another as LWM does.
 */
export function needleCase(o: NeedleCaseOptions): NeedleCase {
  const depths = typeof o.depthPercent === 'number' ? [o.depthPercent] : [...o.depthPercent];
  const n = o.needles ?? depths.length;
  const retrieve = o.retrieve ?? n;
  checkCase(o.contextLength, depths, n, retrieve);
  const multi = n > 1;
  const cities = pickCities(o.rng, n);
  const numbers = cities.map(() => String(1_000_000 + Math.floor(o.rng() * 9_000_000)));
  const asked = multi ? sampleWithoutReplacement(o.rng, cities.map((_, i) => i), retrieve) : [0];
  const question = needleQuestion(asked.map((i) => cities[i]!), multi);

  const { tok } = o;
  const head = [tok.bosId, ...tok.encode(HEAD)];
  const tail = tok.encode(question + (multi ? MULTI_TAIL : SINGLE_TAIL));
  const needleIds = cities.map((c, i) => tok.encode(needleText(c, numbers[i]!)));
  const fixed = head.length + tail.length + needleIds.reduce((s, x) => s + x.length - (leadingSpace(tok, x) ? 1 : 0), 0);
  const budget = o.contextLength - fixed;
  // n spare tokens: each needle may need its '▁' back (below), and a haystack token must remain.
  if (budget < n + 1) {
    throw new InputError(`a context of ${o.contextLength} tokens cannot hold the needle prompt (template, question and ${n} needle(s) take ${fixed}); use --context ${fixed + n + 1} or more`);
  }
  if (o.haystackTokens.length < budget) {
    throw new InputError(`the haystack has ${o.haystackTokens.length} tokens but a ${o.contextLength}-token context needs ${budget}; make it with haystackTokens(text, tok, ${o.contextLength})`);
  }
  // A needle at the very start keeps its leading '▁' (one more token): give up haystack tokens until it fits.
  let placed = placeNeedles(tok, o.haystackTokens.slice(0, budget), needleIds, depths);
  for (let spare = 1; placed.leading > spare - 1 && spare <= n; spare++) placed = placeNeedles(tok, o.haystackTokens.slice(0, budget - spare), needleIds, depths);
  const { ids, owner } = placed;
  const kept = owner.filter((x) => x < 0).length;

  const needles: NeedleInfo[] = cities.map((city, k) => {
    const at = owner.indexOf(k);
    const before = owner.slice(0, at).filter((x) => x < 0).length;
    return { city, number: numbers[k]!, depthPercent: depths[k]!, tokenDepth: before / kept, tokenIndex: head.length + at };
  });
  const promptTokens = [...head, ...ids, ...tail];
  return { prompt: tok.decode(promptTokens), promptTokens, needles, question, answers: asked.map((i) => numbers[i]!), haystackLength: kept };
}

/**
 * Inserts the needles one after another. Encoded alone, "\nThe ..." starts with SentencePiece's
 * dummy-prefix '▁'; after a '.' LWM's text has no space there, so that piece is dropped, but at the
 * very start it stands for the template's space ("USER: {context}") and stays. `owner` is -1 for
 * haystack tokens, else the needle a token belongs to.
 */
function placeNeedles(tok: Tokenizer, hay: number[], needleIds: readonly number[][], depths: readonly number[]): { ids: number[]; owner: number[]; leading: number } {
  let ids = hay;
  let owner: number[] = hay.map(() => -1);
  let leading = 0;
  const endsSentence = (id: number): boolean => tok.idToPiece(id).endsWith('.');
  needleIds.forEach((full, k) => {
    const d = depths[k]!;
    let p = ids.length;
    if (d !== 100) {
      p = Math.floor(ids.length * (d / 100));
      while (p > 0 && !endsSentence(ids[p - 1]!)) p--;
    }
    const space = leadingSpace(tok, full);
    const nd = space && p > 0 ? full.slice(1) : full;
    if (space && p === 0) leading++;
    ids = [...ids.slice(0, p), ...nd, ...ids.slice(p)];
    owner = [...owner.slice(0, p), ...nd.map(() => k), ...owner.slice(p)];
  });
  return { ids, owner, leading };
}

function leadingSpace(tok: Tokenizer, ids: readonly number[]): boolean {
  return ids.length > 1 && tok.idToPiece(ids[0]!) === '\u2581';
}

function checkCase(contextLength: number, depths: readonly number[], n: number, retrieve: number): void {
  if (!Number.isInteger(contextLength) || contextLength < 1) throw new InputError(`--context must be a positive whole number of tokens, got ${contextLength}`);
  for (const d of depths) if (!(d >= 0 && d <= 100)) throw new InputError(`needle depths are percentages in [0, 100], got ${d}`);
  const distinct = new Set(NEEDLE_CITIES).size;
  if (!Number.isInteger(n) || n < 1 || n > distinct) throw new InputError(`--needles must be a whole number in [1, ${distinct}], got ${n}`);
  if (depths.length !== n) throw new InputError(`${n} needles need ${n} depths, got ${depths.length}`);
  if (!Number.isInteger(retrieve) || retrieve < 1 || retrieve > n) throw new InputError(`--retrieve must be a whole number in [1, ${n}] (the needles hidden), got ${retrieve}`);
}

/**
 * One city is random.choice over the list; several are drawn without replacement, skipping a name
 * already drawn: LWM's random.sample can draw a duplicate name, and then its dict keeps fewer needles.
 */
function pickCities(rng: () => number, n: number): string[] {
  if (n === 1) return [NEEDLE_CITIES[Math.floor(rng() * NEEDLE_CITIES.length)]!];
  const out: string[] = [];
  for (const c of sampleWithoutReplacement(rng, [...NEEDLE_CITIES], NEEDLE_CITIES.length)) {
    if (!out.includes(c)) out.push(c);
    if (out.length === n) break;
  }
  return out;
}

/** k items without replacement, in draw order (a partial Fisher-Yates). */
export function sampleWithoutReplacement<T>(rng: () => number, items: readonly T[], k: number): T[] {
  const a = [...items];
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rng() * (a.length - i));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, k);
}

/**
 * LWM's score: the number appears in the response (substring, so words around it are fine and a
 * wrong digit is a miss). One answer gives a boolean; a list gives one boolean per needle.
 */
export function scoreNeedle(response: string, answers: string): boolean;
export function scoreNeedle(response: string, answers: readonly string[]): boolean[];
export function scoreNeedle(response: string, answers: string | readonly string[]): boolean | boolean[] {
  const check = (a: string): boolean => {
    if (!/^\d+$/.test(a)) throw new InputError(`a needle answer is a string of digits, got ${JSON.stringify(a)}`);
    return response.includes(a);
  };
  return typeof answers === 'string' ? check(answers) : answers.map(check);
}
