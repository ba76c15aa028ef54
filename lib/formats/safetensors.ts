/**
 * safetensors files: an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping each
 * tensor name to { dtype, shape, data_offsets: [begin, end) } (offsets relative to the data
 * section that starts at byte 8 + N) plus an optional `__metadata__` string map, then the raw
 * little-endian tensor bytes.
 *
 * Reading validates the header as strictly as the reference Rust implementation
 * (huggingface/safetensors, `Metadata::validate` and `read_metadata`) and a little more: a
 * 100_000_000-byte header limit, UTF-8, a leading '{', JSON, no unknown keys, known dtypes, shapes
 * of safe integers, byte sizes that match shape × element size, and — sorted by offset — ranges
 * that start at 0, follow each other without holes or overlaps and end exactly at the end of the
 * data. Every violation is ERR_FORMAT naming the file (or `source` for bytes), what was expected
 * and what came; no tensor is made from a file that fails, so a truncated file never yields
 * garbage.
 *
 * Writing produces the reference writer's layout: tensors ordered by dtype (the Rust `Dtype`
 * enum's order, which ranks them by alignment, descending) and then by name (UTF-8 bytes), offsets
 * assigned in that order, `__metadata__` first in the header, `{"dtype","shape","data_offsets"}`
 * per tensor with serde_json's compact formatting (JSON.stringify escapes strings the same way),
 * and the header padded with spaces to a multiple of 8 bytes so that every tensor's data is
 * 8-byte aligned in the file. Checked against the byte vectors in the reference implementation's
 * own tests (test/safetensors.test.ts spells them out); metadata keys are written sorted, where the
 * reference writer iterates a HashMap: for at most one metadata key our bytes equal what
 * `safetensors.torch.save_file` writes for the same dict.
 */
import * as fs from 'node:fs';

import { type DType, dtypeSize, STORAGE, type TypedArray } from '../dtype.js';
import { argumentError, describeValue, LoraKernelsError } from '../errors.js';
import { type Device, Tensor } from '../tensor.js';

const MAX_HEADER_BYTES = 100_000_000;

/** safetensors dtype names in the reference `Dtype` enum's order (increasing alignment). */
const FILE_DTYPES = ['BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'F64', 'I64', 'U64'] as const;
type FileDType = (typeof FILE_DTYPES)[number];

const DTYPE_OF: Readonly<Record<FileDType, DType>> = {
  BOOL: 'bool', U8: 'uint8', I8: 'int8', F8_E5M2: 'float8_e5m2', F8_E4M3: 'float8_e4m3fn', I16: 'int16', U16: 'uint16',
  F16: 'float16', BF16: 'bfloat16', I32: 'int32', U32: 'uint32', F32: 'float32', F64: 'float64', I64: 'int64', U64: 'uint64',
};

const FILE_DTYPE_OF = Object.fromEntries(Object.entries(DTYPE_OF).map(([file, dtype]) => [dtype, file])) as Record<DType, FileDType>;

const ENTRY_KEYS = ['dtype', 'shape', 'data_offsets'];

// TypedArrays use the host's byte order and safetensors is little-endian.
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** The tensors of a file by name (in file order) and its `__metadata__` ({} when absent). */
export type SafetensorsTensors = Map<string, Tensor> & { readonly metadata: Record<string, string> };

export interface SafetensorsReadOptions {
  /** Which tensors to make: a predicate or a list of names (each must be in the file). Default: all. */
  names?: ((name: string) => boolean) | readonly string[];
  /** Where the tensors go. Default 'cpu'. */
  device?: Device;
}

interface Entry {
  name: string;
  dtype: DType;
  shape: number[];
  begin: number;
  end: number;
}

interface Header {
  /** Bytes from the start of the source to the data section: 8 + N. */
  dataStart: number;
  entries: Entry[];
  metadata: Record<string, string>;
}

function quote(text: string): string {
  return JSON.stringify(text);
}

function jsonText(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

function isSafeCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

class HeaderReader {
  constructor(readonly op: string, readonly origin: string) {}

  fail(subject: string, expected: string, got: string): LoraKernelsError {
    return argumentError('ERR_FORMAT', this.op, `${this.origin}: ${subject}`, expected, got);
  }

  /** The header length N from the first 8 bytes of a source of `total` bytes. */
  headerLength(prefix: Uint8Array, total: number): number {
    if (total < 8) throw argumentError('ERR_FORMAT', this.op, this.origin, 'at least 8 bytes (the header length)', `${total} bytes`);
    const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
    if (n > BigInt(MAX_HEADER_BYTES)) throw this.fail('the header length', `at most ${MAX_HEADER_BYTES} bytes`, `${n}`);
    if (Number(n) > total - 8) throw this.fail('the header length', `at most the ${total - 8} bytes after it`, `${n}`);
    return Number(n);
  }

  /** Parses and validates the header text against a data section of `dataLength` bytes. */
  parse(headerBytes: Uint8Array, dataLength: number): Header {
    let text: string;
    try {
      // ignoreBOM keeps a byte-order mark in the text, where the '{' check rejects it.
      text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
    } catch {
      throw this.fail('the header', 'UTF-8 text', 'bytes that are not UTF-8');
    }
    if (!text.startsWith('{')) throw this.fail('the header', "JSON starting with '{'", quote(text.slice(0, 20)));
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (error) {
      throw this.fail('the header', 'JSON', (error as Error).message);
    }
    if (json === null || typeof json !== 'object' || Array.isArray(json)) throw this.fail('the header', 'a JSON object', jsonText(json));
    let metadata: Record<string, string> = {};
    const entries: Entry[] = [];
    for (const [name, value] of Object.entries(json)) {
      if (name === '__metadata__') metadata = this.metadata(value);
      else entries.push(this.entry(name, value, dataLength));
    }
    this.checkLayout(entries, dataLength);
    return { dataStart: 8 + headerBytes.length, entries, metadata };
  }

  metadata(value: unknown): Record<string, string> {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw this.fail('__metadata__', 'an object of strings', jsonText(value));
    }
    for (const [key, v] of Object.entries(value)) {
      if (typeof v !== 'string') throw this.fail(`__metadata__[${quote(key)}]`, 'a string', jsonText(v));
    }
    return Object.fromEntries(Object.entries(value)) as Record<string, string>;
  }

  entry(name: string, value: unknown, dataLength: number): Entry {
    const subject = `tensor ${quote(name)}`;
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw this.fail(subject, 'an object { dtype, shape, data_offsets }', jsonText(value));
    }
    const fields = value as Record<string, unknown>;
    // An unknown key could change how the bytes are meant; refuse it rather than guess.
    const unknown = Object.keys(fields).find((key) => !ENTRY_KEYS.includes(key));
    if (unknown !== undefined) throw this.fail(`${subject} keys`, 'dtype, shape and data_offsets', quote(unknown));
    const fileDType = fields['dtype'];
    if (typeof fileDType !== 'string' || !(FILE_DTYPES as readonly string[]).includes(fileDType)) {
      throw this.fail(`${subject} dtype`, `one of ${FILE_DTYPES.join(', ')}`, jsonText(fileDType));
    }
    const dtype = DTYPE_OF[fileDType as FileDType];
    const shape = fields['shape'];
    if (!Array.isArray(shape) || !shape.every(isSafeCount)) {
      throw this.fail(`${subject} shape`, 'an array of non-negative integers', jsonText(shape));
    }
    const offsets = fields['data_offsets'];
    const [begin, end] = Array.isArray(offsets) && offsets.length === 2 && offsets.every(isSafeCount) ? offsets as [number, number] : [-1, -1];
    if (begin < 0 || begin > end) {
      throw this.fail(`${subject} data_offsets`, 'two non-negative integers [begin, end] with begin <= end', jsonText(offsets));
    }
    // In BigInt: a shape's element count may overflow a double long before it fails to match.
    const bytes = shape.reduce((product: bigint, d: number) => product * BigInt(d), 1n) * BigInt(dtypeSize(dtype));
    if (bytes !== BigInt(end - begin)) {
      throw this.fail(`${subject} data_offsets`, `a range of ${bytes} bytes for ${fileDType} [${shape.join(', ')}]`, `[${begin}, ${end}] (${end - begin} bytes)`);
    }
    if (end > dataLength) {
      throw this.fail(`${subject} data_offsets`, `within the ${dataLength}-byte data section`, `[${begin}, ${end}]`);
    }
    return { name, dtype, shape: shape as number[], begin, end };
  }

  /** Sorted by offset, the ranges must tile [0, dataLength) exactly, as the reference requires. */
  checkLayout(entries: Entry[], dataLength: number): void {
    entries.sort((x, y) => x.begin - y.begin || x.end - y.end);
    let previous: Entry | undefined;
    for (const entry of entries) {
      const expectedBegin = previous?.end ?? 0;
      if (entry.begin !== expectedBegin) {
        const where = previous ? `where tensor ${quote(previous.name)} [${previous.begin}, ${previous.end}] ends` : 'the start of the data section';
        const why = entry.begin < expectedBegin ? 'an overlap' : 'a hole';
        throw this.fail(`tensor ${quote(entry.name)} data_offsets`, `a range starting at ${expectedBegin} (${where})`, `[${entry.begin}, ${entry.end}], ${why}`);
      }
      previous = entry;
    }
    const covered = previous?.end ?? 0;
    if (covered !== dataLength) {
      throw this.fail('the data section', `${covered} bytes (where the last tensor ends)`, `${dataLength} bytes, ${dataLength - covered} trailing`);
    }
  }
}

function selection(op: string, names: SafetensorsReadOptions['names'], entries: Entry[], origin: string): (name: string) => boolean {
  if (names === undefined) return () => true;
  if (typeof names === 'function') return names;
  if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) {
    throw argumentError('ERR_ARGUMENT', op, 'opts.names', 'a function or an array of tensor names', describeValue(names));
  }
  const present = new Set(entries.map((e) => e.name));
  const missing = names.filter((n) => !present.has(n));
  if (missing.length) throw argumentError('ERR_ARGUMENT', op, 'opts.names', `names of tensors in ${origin}`, missing.map(quote).join(', '));
  const wanted = new Set(names);
  return (name) => wanted.has(name);
}

function checkBool(reader: HeaderReader, entry: Entry, data: Uint8Array): void {
  const bad = data.findIndex((v) => v > 1);
  if (bad >= 0) throw reader.fail(`tensor ${quote(entry.name)} (BOOL) element ${bad}`, 'the byte 0 or 1', String(data[bad]));
}

function checkHost(op: string): void {
  if (!LITTLE_ENDIAN) throw new LoraKernelsError('ERR_UNSUPPORTED', `${op}: safetensors data is little-endian and this host is not`);
}

function asBytes(data: TypedArray): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** The selected tensors from their stored elements (`load`); on a failure none is left behind. */
function makeTensors(reader: HeaderReader, header: Header, opts: SafetensorsReadOptions, load: (entry: Entry) => TypedArray): SafetensorsTensors {
  const wanted = selection(reader.op, opts.names, header.entries, reader.origin);
  const tensors = new Map<string, Tensor>();
  try {
    for (const entry of header.entries.filter((e) => wanted(e.name))) {
      const data = load(entry);
      if (entry.dtype === 'bool') checkBool(reader, entry, data as Uint8Array);
      const host = Tensor.from(data, entry.shape, { dtype: entry.dtype });
      if (opts.device === undefined || opts.device === 'cpu') {
        tensors.set(entry.name, host);
      } else {
        tensors.set(entry.name, host.to(opts.device));
        host.dispose();
      }
    }
  } catch (error) {
    for (const t of tensors.values()) t.dispose();
    throw error;
  }
  return Object.assign(tensors, { metadata: header.metadata });
}

function readBytes(op: string, bytes: Uint8Array, opts: SafetensorsReadOptions): SafetensorsTensors {
  const reader = new HeaderReader(op, 'source');
  const n = reader.headerLength(bytes, bytes.length);
  const header = reader.parse(bytes.subarray(8, 8 + n), bytes.length - 8 - n);
  return makeTensors(reader, header, opts, (entry) => {
    const Storage = STORAGE[entry.dtype];
    const start = bytes.byteOffset + header.dataStart + entry.begin;
    const count = (entry.end - entry.begin) / Storage.BYTES_PER_ELEMENT;
    if (start % Storage.BYTES_PER_ELEMENT === 0) return new Storage(bytes.buffer, start, count);
    const copy = new Storage(count);
    asBytes(copy).set(bytes.subarray(header.dataStart + entry.begin, header.dataStart + entry.end));
    return copy;
  });
}

// fs.readSync reads at most 2^31 - 1 bytes per call: larger ranges are read in pieces.
const IO_CHUNK = 1 << 30;

/** Fills `target` from `fd` at `position`; false when the file ends first. */
function readFully(fd: number, target: Uint8Array, position: number): boolean {
  let done = 0;
  while (done < target.length) {
    const read = fs.readSync(fd, target, done, Math.min(IO_CHUNK, target.length - done), position + done);
    if (read === 0) return false;
    done += read;
  }
  return true;
}

function openForReading(op: string, file: string): { fd: number; size: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (error) {
    throw argumentError('ERR_ARGUMENT', op, 'source', 'a readable safetensors file', `${quote(file)} (${(error as Error).message})`);
  }
  const stat = fs.fstatSync(fd);
  if (!stat.isFile()) {
    fs.closeSync(fd);
    throw argumentError('ERR_ARGUMENT', op, 'source', 'a readable safetensors file', `${quote(file)} (${stat.isDirectory() ? 'a directory' : 'not a regular file'})`);
  }
  return { fd, size: stat.size };
}

function readPath(op: string, file: string, opts: SafetensorsReadOptions): SafetensorsTensors {
  const { fd, size } = openForReading(op, file);
  const reader = new HeaderReader(op, file);
  const truncated = (what: string) => reader.fail(what, `${size} bytes as when the file was opened`, 'a shorter file (it changed while being read)');
  try {
    const prefix = new Uint8Array(8);
    if (size >= 8 && !readFully(fd, prefix, 0)) throw truncated('the file');
    const n = reader.headerLength(prefix, size);
    const headerBytes = new Uint8Array(n);
    if (!readFully(fd, headerBytes, 8)) throw truncated('the file');
    const header = reader.parse(headerBytes, size - 8 - n);
    return makeTensors(reader, header, opts, (entry) => {
      // Straight into the tensor's own (aligned) storage: one copy from the disk, no staging buffer.
      const data = new STORAGE[entry.dtype]((entry.end - entry.begin) / dtypeSize(entry.dtype));
      if (!readFully(fd, asBytes(data), header.dataStart + entry.begin)) throw truncated(`tensor ${quote(entry.name)}`);
      return data;
    });
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Reads a safetensors file from bytes or a path. From bytes, each tensor is a zero-copy view into
 * the given memory when its data is aligned for its element size there (always for files written
 * by the reference writer or by `write` when the bytes start at an 8-byte boundary): mutating the
 * bytes then mutates the tensors. Misaligned tensors are copied once. From a path, only the
 * header is read first; after validation each selected tensor's byte range is read straight into
 * its own storage (files of any size; nothing is read twice).
 */
export function read(source: Uint8Array | ArrayBuffer | string, opts: SafetensorsReadOptions = {}): SafetensorsTensors {
  const op = 'safetensors.read';
  checkHost(op);
  if (opts === null || typeof opts !== 'object') throw argumentError('ERR_ARGUMENT', op, 'opts', 'an object', describeValue(opts));
  if (typeof source === 'string') return readPath(op, source, opts);
  if (source instanceof ArrayBuffer) return readBytes(op, new Uint8Array(source), opts);
  if (source instanceof Uint8Array) return readBytes(op, source, opts);
  throw argumentError('ERR_ARGUMENT', op, 'source', 'a Uint8Array, an ArrayBuffer or a file path', describeValue(source));
}

// ---- writing ---------------------------------------------------------------------------------

interface Prepared {
  /** The 8-byte length and the padded header. */
  head: Uint8Array;
  tensors: { name: string; tensor: Tensor; bytes: number }[];
  dataLength: number;
}

function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function prepare(op: string, tensors: unknown, metadata: unknown): Prepared {
  checkHost(op);
  let named: [unknown, unknown][];
  if (tensors instanceof Map) named = [...tensors.entries()];
  else if (tensors !== null && typeof tensors === 'object' && !Array.isArray(tensors) && !(tensors instanceof Tensor)) named = Object.entries(tensors);
  else throw argumentError('ERR_ARGUMENT', op, 'tensors', 'a Map or an object of named tensors', describeValue(tensors));
  const list = named.map(([name, tensor]) => {
    if (typeof name !== 'string' || name === '' || name === '__metadata__') {
      throw argumentError('ERR_ARGUMENT', op, 'a tensor name', "a non-empty string other than '__metadata__'", describeValue(name));
    }
    if (!(tensor instanceof Tensor)) throw argumentError('ERR_ARGUMENT', op, `tensors[${quote(name)}]`, 'a Tensor', describeValue(tensor));
    if (tensor.disposed) throw argumentError('ERR_DISPOSED', op, `tensors[${quote(name)}]`, 'a live tensor', 'a disposed tensor');
    return { name, tensor, bytes: tensor.numel * dtypeSize(tensor.dtype) };
  });
  if (metadata !== undefined) {
    if (metadata === null || typeof metadata !== 'object' || Array.isArray(metadata)) {
      throw argumentError('ERR_ARGUMENT', op, 'metadata', 'an object of strings', describeValue(metadata));
    }
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') throw argumentError('ERR_ARGUMENT', op, `metadata[${quote(key)}]`, 'a string', describeValue(value));
    }
  }
  const rank = (t: Tensor) => FILE_DTYPES.indexOf(FILE_DTYPE_OF[t.dtype]);
  list.sort((x, y) => rank(y.tensor) - rank(x.tensor) || compareUtf8(x.name, y.name));
  const parts: string[] = [];
  if (metadata !== undefined) {
    const keys = Object.keys(metadata).sort(compareUtf8);
    const fields = keys.map((key) => `${JSON.stringify(key)}:${JSON.stringify((metadata as Record<string, string>)[key])}`);
    parts.push(`"__metadata__":{${fields.join(',')}}`);
  }
  let offset = 0;
  for (const { name, tensor, bytes } of list) {
    const info = `{"dtype":"${FILE_DTYPE_OF[tensor.dtype]}","shape":[${tensor.shape.join(',')}],"data_offsets":[${offset},${offset + bytes}]}`;
    parts.push(`${JSON.stringify(name)}:${info}`);
    offset += bytes;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded > MAX_HEADER_BYTES) {
    throw argumentError('ERR_ARGUMENT', op, 'tensors', `names and metadata that fit a ${MAX_HEADER_BYTES}-byte header`, `a ${padded}-byte header`);
  }
  const head = new Uint8Array(8 + padded).fill(0x20, 8 + json.length);
  new DataView(head.buffer).setBigUint64(0, BigInt(padded), true);
  head.set(json, 8);
  return { head, tensors: list, dataLength: offset };
}

/** The stored bytes of a tensor on the host (device tensors are copied). */
function hostBytes(t: Tensor): Uint8Array {
  return asBytes(t.toArray());
}

/**
 * The bytes of a safetensors file holding `tensors` (a Map or an object by name) and, when
 * given, `metadata` (string values). Device tensors are copied to the host. Layout as the
 * reference writer's: see the top of this file.
 */
export function write(tensors: Map<string, Tensor> | Record<string, Tensor>, metadata?: Record<string, string>): Uint8Array {
  const { head, tensors: list, dataLength } = prepare('safetensors.write', tensors, metadata);
  const out = new Uint8Array(head.length + dataLength);
  out.set(head);
  let at = head.length;
  for (const { tensor, bytes } of list) {
    out.set(hostBytes(tensor), at);
    at += bytes;
  }
  return out;
}

function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += fs.writeSync(fd, bytes, done, Math.min(IO_CHUNK, bytes.length - done));
}

/**
 * Writes the file `write` would produce to `path`, tensor by tensor (no buffer of the whole
 * file; a device tensor is copied to the host only while it is written). A failed write removes
 * the partial file.
 */
export function writeFile(path: string, tensors: Map<string, Tensor> | Record<string, Tensor>, metadata?: Record<string, string>): void {
  const op = 'safetensors.writeFile';
  if (typeof path !== 'string' || path === '') throw argumentError('ERR_ARGUMENT', op, 'path', 'a file path', describeValue(path));
  const { head, tensors: list } = prepare(op, tensors, metadata);
  let fd: number;
  try {
    fd = fs.openSync(path, 'w');
  } catch (error) {
    throw argumentError('ERR_ARGUMENT', op, 'path', 'a writable file path', `${quote(path)} (${(error as Error).message})`);
  }
  try {
    try {
      writeAll(fd, head);
      for (const { tensor } of list) writeAll(fd, hostBytes(tensor));
    } finally {
      fs.closeSync(fd);
    }
  } catch (error) {
    fs.rmSync(path, { force: true });
    if (error instanceof LoraKernelsError) throw error;
    throw new LoraKernelsError('ERR_ARGUMENT', `${op}: writing ${quote(path)} failed: ${(error as Error).message}`);
  }
}
