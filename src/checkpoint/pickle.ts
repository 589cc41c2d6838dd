import { CheckpointError } from '../../ops/index.js';

/**
 * A pickle reader for checkpoint files that never runs anything: it understands the opcodes of
 * protocols 2-5 and rebuilds only an allow-list of globals (numpy arrays and dtypes, ordered
 * dicts, torch's tensor rebuilders). Any other global is refused by name before it could matter.
 */

/** A numpy array (or torch storage view) as raw bytes. */
export interface PickledArray {
  kind: 'ndarray';
  /** numpy dtype string, e.g. '<f4', '<f2', '|u1'. */
  dtype: string;
  shape: number[];
  fortranOrder: boolean;
  data: Uint8Array;
}

/** A global the reader knows: a callable (REDUCE) and/or a class (NEWOBJ / BUILD). */
interface Known {
  name: string;
}

interface Reduced {
  kind: 'reduced';
  fn: string;
  args: unknown[];
  state?: unknown;
}

/** Persistent ids (torch storages) are handed to the caller, who resolves them. */
export type PersistentLoad = (pid: unknown) => unknown;

const ALLOWED = new Set([
  'collections.OrderedDict',
  'builtins.dict',
  'builtins.list',
  'builtins.tuple',
  '_codecs.encode',
  'numpy.ndarray',
  'numpy.dtype',
  'numpy.core.multiarray._reconstruct',
  'numpy._core.multiarray._reconstruct',
  'numpy.core.numeric._frombuffer',
  'numpy._core.numeric._frombuffer',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  'torch.FloatStorage',
  'torch.HalfStorage',
  'torch.BFloat16Storage',
  'torch.DoubleStorage',
  'torch.LongStorage',
  'torch.IntStorage',
  'torch.ByteStorage',
  'torch.BoolStorage',
  'torch.float32',
  'torch.float16',
  'torch.bfloat16',
]);

const MARK = Symbol('mark');

class Frame {
  stack: unknown[] = [];
  marks: number[] = [];
  memo = new Map<number, unknown>();
}

/** numpy dtype('f4', ...) rebuilt to its byte-order string once BUILD gives the order. */
interface DType {
  kind: 'dtype';
  code: string;
  order: string;
}

function dtypeString(d: unknown): string {
  if (typeof d === 'object' && d !== null && (d as DType).kind === 'dtype') {
    const t = d as DType;
    // One-byte types have no byte order ('|'), as numpy's dtype.str writes them.
    const oneByte = /^(u1|i1|b1|\?)$/.test(t.code) || t.order === '|';
    return oneByte ? `|${t.code}` : `${t.order === '>' ? '>' : '<'}${t.code}`;
  }
  throw new CheckpointError(`pickle: expected a numpy dtype, got ${describe(d)}`);
}

function describe(x: unknown): string {
  if (x === null) return 'None';
  if (x instanceof Uint8Array) return `bytes(${x.length})`;
  if (Array.isArray(x)) return `tuple/list(${x.length})`;
  if (typeof x === 'object') return (x as { kind?: string }).kind ?? 'object';
  return typeof x;
}

function call(fn: string, args: unknown[]): unknown {
  switch (fn) {
    case 'collections.OrderedDict':
    case 'builtins.dict':
      return new Map();
    case '_codecs.encode': {
      // Protocol 2 writes bytes as _codecs.encode(str, 'latin1'): each char is one byte.
      const [s, enc] = args as [string, string];
      if (typeof s !== 'string' || (enc !== 'latin1' && enc !== 'latin-1')) throw new CheckpointError(`pickle: _codecs.encode with ${describe(s)} and encoding ${String(enc)} is not a byte string`);
      return Uint8Array.from(s, (c) => c.charCodeAt(0) & 0xff);
    }
    case 'numpy.dtype': {
      const code = args[0];
      if (typeof code !== 'string') throw new CheckpointError(`pickle: numpy.dtype(${describe(code)})`);
      return { kind: 'dtype', code, order: '<' } satisfies DType;
    }
    case 'numpy.core.multiarray._reconstruct':
    case 'numpy._core.multiarray._reconstruct':
      // BUILD fills it in: (version, shape, dtype, fortran, bytes).
      return { kind: 'ndarray', dtype: '', shape: [], fortranOrder: false, data: new Uint8Array(0) } satisfies PickledArray;
    case 'numpy.core.numeric._frombuffer':
    case 'numpy._core.numeric._frombuffer': {
      const [buf, dtype, shape, order] = args as [unknown, unknown, unknown, unknown];
      if (!(buf instanceof Uint8Array) || !Array.isArray(shape)) throw new CheckpointError('pickle: _frombuffer without a byte buffer and a shape');
      return { kind: 'ndarray', dtype: dtypeString(dtype), shape: shape as number[], fortranOrder: order === 'F', data: buf } satisfies PickledArray;
    }
    default:
      return { kind: 'reduced', fn, args } satisfies Reduced;
  }
}

function build(obj: unknown, state: unknown): unknown {
  if (obj instanceof Map && state instanceof Map) {
    for (const [k, v] of state) obj.set(k, v);
    return obj;
  }
  if (typeof obj === 'object' && obj !== null) {
    const o = obj as { kind?: string };
    if (o.kind === 'dtype' && Array.isArray(state)) {
      (o as DType).order = String(state[1] ?? '<');
      return obj;
    }
    if (o.kind === 'ndarray' && Array.isArray(state)) {
      const [, shape, dtype, fortran, data] = state as [number, number[], unknown, boolean, unknown];
      if (!(data instanceof Uint8Array)) throw new CheckpointError(`pickle: numpy array data is ${describe(data)}, expected bytes (object arrays are not weights)`);
      Object.assign(o, { shape: [...shape], dtype: dtypeString(dtype), fortranOrder: Boolean(fortran), data });
      return obj;
    }
    if (o.kind === 'reduced') {
      (o as Reduced).state = state;
      return obj;
    }
  }
  throw new CheckpointError(`pickle: cannot apply BUILD state to ${describe(obj)}`);
}

/**
 * Parses a pickle. `persistentLoad` resolves persistent ids (torch .bin files); without it a
 * persistent id is an error. Throws CheckpointError naming any global that is not allowed.
 */
export function readPickle(input: Uint8Array, what = 'pickle', persistentLoad?: PersistentLoad): unknown {
  // A plain Uint8Array view (not a Node Buffer), so arrays handed out copy on slice() as usual.
  const bytes = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const f = new Frame();
  const st = f.stack;
  let p = 0;
  const need = (n: number) => {
    if (p + n > bytes.length) throw new CheckpointError(`${what}: truncated (needs ${n} more bytes at offset ${p} of ${bytes.length}); the file is incomplete, download or copy it again`);
  };
  const u8 = () => (need(1), bytes[p++]!);
  const u16 = () => (need(2), (p += 2), view.getUint16(p - 2, true));
  const i32 = () => (need(4), (p += 4), view.getInt32(p - 4, true));
  const u32 = () => (need(4), (p += 4), view.getUint32(p - 4, true));
  const u64 = () => {
    need(8);
    const v = view.getBigUint64(p, true);
    p += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CheckpointError(`${what}: a length of ${v} bytes cannot be right`);
    return Number(v);
  };
  const raw = (n: number) => (need(n), (p += n), bytes.subarray(p - n, p));
  const text = (n: number) => new TextDecoder('utf-8', { fatal: false }).decode(raw(n));
  const line = () => {
    const end = bytes.indexOf(0x0a, p);
    if (end < 0) throw new CheckpointError(`${what}: truncated (an unterminated line at offset ${p})`);
    const s = new TextDecoder('latin1').decode(bytes.subarray(p, end));
    p = end + 1;
    return s;
  };
  const pop = () => {
    if (st.length === 0) throw new CheckpointError(`${what}: corrupt (stack underflow at offset ${p})`);
    return st.pop();
  };
  const popMark = (): unknown[] => {
    const m = f.marks.pop();
    if (m === undefined) throw new CheckpointError(`${what}: corrupt (no MARK at offset ${p})`);
    return st.splice(m);
  };
  const top = () => {
    if (st.length === 0) throw new CheckpointError(`${what}: corrupt (empty stack at offset ${p})`);
    return st[st.length - 1];
  };
  const global = (mod: string, name: string): Known => {
    const full = `${mod}.${name}`;
    if (!ALLOWED.has(full)) {
      throw new CheckpointError(`${what}: refuses to load the global '${full}', which no weights file needs (nothing was run); only numpy arrays, dicts and torch tensors are read`);
    }
    return { name: full };
  };
  const setItems = (d: unknown, items: unknown[]) => {
    if (!(d instanceof Map)) throw new CheckpointError(`${what}: SETITEM on ${describe(d)}`);
    for (let i = 0; i + 1 < items.length; i += 2) d.set(items[i], items[i + 1]);
  };
  const appendTo = (l: unknown, items: unknown[]) => {
    if (!Array.isArray(l)) throw new CheckpointError(`${what}: APPEND on ${describe(l)}`);
    l.push(...items);
  };

  for (;;) {
    const at = p;
    const op = u8();
    switch (op) {
      case 0x80: u8(); break; // PROTO
      case 0x95: u64(); break; // FRAME (a hint; the data follows inline)
      case 0x2e: { // STOP
        return pop();
      }
      case 0x28: f.marks.push(st.length); break; // MARK
      case 0x7d: st.push(new Map()); break; // EMPTY_DICT
      case 0x5d: st.push([]); break; // EMPTY_LIST
      case 0x29: st.push([]); break; // EMPTY_TUPLE
      case 0x4e: st.push(null); break; // NONE
      case 0x88: st.push(true); break; // NEWTRUE
      case 0x89: st.push(false); break; // NEWFALSE
      case 0x4a: st.push(i32()); break; // BININT
      case 0x4b: st.push(u8()); break; // BININT1
      case 0x4d: st.push(u16()); break; // BININT2
      case 0x8a: { // LONG1
        const n = u8();
        const b = raw(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
        if (n > 0 && b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        st.push(Number(v));
        break;
      }
      case 0x47: { // BINFLOAT (big-endian)
        need(8);
        st.push(view.getFloat64(p, false));
        p += 8;
        break;
      }
      case 0x58: st.push(text(u32())); break; // BINUNICODE
      case 0x8c: st.push(text(u8())); break; // SHORT_BINUNICODE
      case 0x8d: st.push(text(u64())); break; // BINUNICODE8
      case 0x42: st.push(raw(u32())); break; // BINBYTES
      case 0x43: st.push(raw(u8())); break; // SHORT_BINBYTES
      case 0x8e: st.push(raw(u64())); break; // BINBYTES8
      case 0x96: st.push(raw(u64())); break; // BYTEARRAY8
      case 0x97: // NEXT_BUFFER
      case 0x98: // READONLY_BUFFER
        throw new CheckpointError(`${what}: uses out-of-band buffers (pickle protocol 5 with buffer_callback), which a file cannot carry`);
      case 0x94: f.memo.set(f.memo.size, top()); break; // MEMOIZE
      case 0x71: f.memo.set(u8(), top()); break; // BINPUT
      case 0x72: f.memo.set(u32(), top()); break; // LONG_BINPUT
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const k = op === 0x68 ? u8() : u32();
        if (!f.memo.has(k)) throw new CheckpointError(`${what}: corrupt (memo ${k} read before it was written, offset ${at})`);
        st.push(f.memo.get(k));
        break;
      }
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: st.push(top()); break; // DUP
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        appendTo(top(), [v]);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        appendTo(top(), items);
        break;
      }
      case 0x74: st.push(popMark()); break; // TUPLE
      case 0x85: st.push([pop()]); break; // TUPLE1
      case 0x86: { // TUPLE2
        const b = pop();
        st.push([pop(), b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        st.push([pop(), b, c]);
        break;
      }
      case 0x63: { // GLOBAL "module\nname\n"
        const mod = line();
        st.push(global(mod, line()));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const mod = pop();
        if (typeof mod !== 'string' || typeof name !== 'string') throw new CheckpointError(`${what}: corrupt STACK_GLOBAL at offset ${at}`);
        st.push(global(mod, name));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        const fn = pop() as Known;
        if (!fn || typeof (fn as Known).name !== 'string' || !Array.isArray(args)) throw new CheckpointError(`${what}: corrupt REDUCE at offset ${at}`);
        st.push(call(fn.name, args));
        break;
      }
      case 0x81: { // NEWOBJ
        const args = pop();
        const cls = pop() as Known;
        if (!cls || typeof cls.name !== 'string' || !Array.isArray(args)) throw new CheckpointError(`${what}: corrupt NEWOBJ at offset ${at}`);
        st.push(call(cls.name, args));
        break;
      }
      case 0x62: { // BUILD
        const state = pop();
        st.push(build(pop(), state));
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop();
        if (!persistentLoad) throw new CheckpointError(`${what}: holds a persistent id (a torch storage) but is read as a plain pickle`);
        st.push(persistentLoad(pid));
        break;
      }
      default:
        throw new CheckpointError(`${what}: unsupported or corrupt pickle opcode 0x${op.toString(16).padStart(2, '0')} at offset ${at}; is this a checkpoint pickle?`);
    }
  }
}

/** Leaves of nested dicts as path -> value, e.g. 'decoder/Conv_0/kernel'. */
export function flattenTree(tree: unknown, sep = '/', prefix = ''): Map<string, unknown> {
  const out = new Map<string, unknown>();
  const walk = (node: unknown, path: string) => {
    if (node instanceof Map) {
      for (const [k, v] of node) walk(v, path ? `${path}${sep}${String(k)}` : String(k));
    } else {
      out.set(path, node);
    }
  };
  walk(tree, prefix);
  return out;
}

export function isPickledArray(x: unknown): x is PickledArray {
  return typeof x === 'object' && x !== null && (x as { kind?: string }).kind === 'ndarray';
}
