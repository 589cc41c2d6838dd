import * as fs from 'node:fs';
import { CheckpointError } from '../../ops/index.js';
import { readTensorF32 } from './safetensors.js';
import { readPickle } from './pickle.js';

/**
 * PyTorch `.bin` files as torch.save writes them: a zip (stored, not compressed) holding
 * `<dir>/data.pkl`, a pickle of name -> tensor whose storages are persistent ids, and one entry
 * `<dir>/data/<key>` of raw little-endian bytes per storage. Only the pickle is read into memory;
 * tensors are located by offset and read when needed.
 */
export interface TorchTensorRef {
  name: string;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  file: string;
  /** Byte offset of the first element in the file, and the tensor's byte length. */
  offset: number;
  byteLength: number;
}

interface ZipEntry {
  name: string;
  method: number;
  size: number;
  localOffset: number;
}

const STORAGE_DTYPE: Readonly<Record<string, { dtype: TorchTensorRef['dtype']; size: number }>> = {
  'torch.FloatStorage': { dtype: 'F32', size: 4 },
  'torch.HalfStorage': { dtype: 'F16', size: 2 },
  'torch.BFloat16Storage': { dtype: 'BF16', size: 2 },
};

function readAt(fd: number, offset: number, length: number, file: string): Buffer {
  const b = Buffer.alloc(length);
  if (fs.readSync(fd, b, 0, length, offset) !== length) throw new CheckpointError(`${file}: truncated (reading ${length} bytes at ${offset}); download or copy it again`);
  return b;
}

/** The zip's central directory (zip64 aware). */
function zipEntries(fd: number, size: number, file: string): ZipEntry[] {
  const tail = Math.min(size, 65536 + 22);
  const t = readAt(fd, size - tail, tail, file);
  const eocd = t.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (eocd < 0) throw new CheckpointError(`${file}: not a zip file (no end of central directory); is it a torch.save checkpoint, complete?`);
  let count = t.readUInt16LE(eocd + 10);
  let cdSize = t.readUInt32LE(eocd + 12);
  let cdOffset = t.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || t.readUInt32LE(loc) !== 0x07064b50) throw new CheckpointError(`${file}: a zip64 file without its locator; the file is corrupt`);
    const z = readAt(fd, Number(t.readBigUInt64LE(loc + 8)), 56, file);
    if (z.readUInt32LE(0) !== 0x06064b50) throw new CheckpointError(`${file}: corrupt zip64 end of central directory`);
    count = Number(z.readBigUInt64LE(32));
    cdSize = Number(z.readBigUInt64LE(40));
    cdOffset = Number(z.readBigUInt64LE(48));
  }
  const cd = readAt(fd, cdOffset, cdSize, file);
  const out: ZipEntry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (cd.readUInt32LE(p) !== 0x02014b50) throw new CheckpointError(`${file}: corrupt zip central directory (entry ${i})`);
    const method = cd.readUInt16LE(p + 10);
    let size = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28);
    const extraLen = cd.readUInt16LE(p + 30);
    const commentLen = cd.readUInt16LE(p + 32);
    let localOffset = cd.readUInt32LE(p + 42);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    // zip64 extra field: the 0xffffffff fields, in order (uncompressed, compressed, offset).
    let e = p + 46 + nameLen;
    const end = e + extraLen;
    while (e + 4 <= end) {
      const id = cd.readUInt16LE(e);
      const len = cd.readUInt16LE(e + 2);
      if (id === 0x0001) {
        let q = e + 4;
        if (size === 0xffffffff) (size = Number(cd.readBigUInt64LE(q))), (q += 8);
        if (cd.readUInt32LE(p + 20) === 0xffffffff) q += 8;
        if (localOffset === 0xffffffff) localOffset = Number(cd.readBigUInt64LE(q));
      }
      e += 4 + len;
    }
    out.push({ name, method, size, localOffset });
    p = end + commentLen;
  }
  return out;
}

/** Where an entry's bytes start: after its local header, whose name/extra lengths may differ from the central ones. */
function dataOffset(fd: number, e: ZipEntry, file: string): number {
  const h = readAt(fd, e.localOffset, 30, file);
  if (h.readUInt32LE(0) !== 0x04034b50) throw new CheckpointError(`${file}: corrupt zip local header for ${e.name}`);
  if (e.method !== 0) throw new CheckpointError(`${file}: ${e.name} is compressed (method ${e.method}); torch.save stores entries uncompressed, so this file was repacked: re-save it with torch.save`);
  return e.localOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
}

/** Every tensor of a torch.save zip: name, dtype, shape and byte range in the file. */
export function readTorchBin(file: string): TorchTensorRef[] {
  if (!fs.existsSync(file)) throw new CheckpointError(`${file}: no such file`);
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const entries = zipEntries(fd, size, file);
    const pkl = entries.filter((e) => /(^|\/)data\.pkl$/.test(e.name));
    if (pkl.length !== 1) throw new CheckpointError(`${file}: expected one data.pkl in the zip, found ${pkl.length}; is this a torch.save checkpoint?`);
    const root = pkl[0]!.name.slice(0, -'data.pkl'.length);
    const byName = new Map(entries.map((e) => [e.name, e]));
    const storages = new Map<string, { dtype: TorchTensorRef['dtype']; itemSize: number; offset: number; bytes: number }>();
    const tree = readPickle(readAt(fd, dataOffset(fd, pkl[0]!, file), pkl[0]!.size, file), `${file}: data.pkl`, (pid) => {
      const [kind, type, key] = pid as [string, { name: string }, string];
      const t = STORAGE_DTYPE[type?.name];
      if (kind !== 'storage' || !t) throw new CheckpointError(`${file}: storage ${type?.name ?? String(type)} is not a float32/float16/bfloat16 weight storage`);
      const e = byName.get(`${root}data/${key}`);
      if (!e) throw new CheckpointError(`${file}: the storage entry ${root}data/${key} is missing from the zip`);
      const s = { dtype: t.dtype, itemSize: t.size, offset: dataOffset(fd, e, file), bytes: e.size };
      storages.set(key, s);
      return { kind: 'storage', key };
    });
    if (!(tree instanceof Map)) throw new CheckpointError(`${file}: data.pkl holds no name -> tensor dict`);
    const out: TorchTensorRef[] = [];
    for (const [name, v] of tree) {
      let r = v as { kind?: string; fn?: string; args?: unknown[] };
      if (r?.fn === 'torch._utils._rebuild_parameter') r = r.args![0] as typeof r;
      if (r?.kind !== 'reduced' || r.fn !== 'torch._utils._rebuild_tensor_v2') throw new CheckpointError(`${file}: '${String(name)}' is not a tensor`);
      const [storage, off, shape, stride] = r.args as [{ key: string }, number, number[], number[]];
      const s = storages.get(storage.key)!;
      // Only C-contiguous tensors are located by one byte range; torch.save of a state_dict writes those.
      let want = 1;
      for (let i = shape.length - 1; i >= 0; i--) {
        if (shape[i] !== 1 && stride[i] !== want) throw new CheckpointError(`${file}: '${String(name)}' is not contiguous (stride [${stride}] for shape [${shape}]); save .contiguous() tensors`);
        want *= shape[i]!;
      }
      const byteLength = want * s.itemSize;
      if ((off * s.itemSize) + byteLength > s.bytes) throw new CheckpointError(`${file}: '${String(name)}' runs past its storage; the file is corrupt`);
      out.push({ name: String(name), dtype: s.dtype, shape: [...shape], file, offset: s.offset + off * s.itemSize, byteLength });
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/** A located tensor's values as float32 (a byte range of F32/F16/BF16, as safetensors entries are). */
export function readTorchTensorF32(t: TorchTensorRef): Float32Array {
  return readTensorF32(t, t.file);
}
