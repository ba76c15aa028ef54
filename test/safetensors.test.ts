import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { DTYPES, type DType, LoraKernelsError, safetensors, Tensor, type TypedArray } from '../lib/index.js';
import { STORAGE } from '../lib/dtype.js';
import { testDevices } from './helpers/devices.js';
import { expectError } from './helpers/errors.js';
import { Random } from './helpers/random.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lk-safetensors-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const FILE_DTYPE: Record<DType, string> = {
  bool: 'BOOL', uint8: 'U8', int8: 'I8', float8_e5m2: 'F8_E5M2', float8_e4m3fn: 'F8_E4M3', int16: 'I16', uint16: 'U16',
  float16: 'F16', bfloat16: 'BF16', int32: 'I32', uint32: 'U32', float32: 'F32', float64: 'F64', int64: 'I64', uint64: 'U64',
};
const DTYPE_OF = Object.fromEntries(Object.entries(FILE_DTYPE).map(([d, f]) => [f, d])) as Record<string, DType>;

function bytesOf(data: TypedArray): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** A tensor of random bytes (bool: 0/1) of `dtype` and `shape`. */
function randomTensor(dtype: DType, shape: number[], random: Random): Tensor {
  const data = new STORAGE[dtype](shape.reduce((a, b) => a * b, 1));
  bytesOf(data).set(random.bytes(data.byteLength));
  if (dtype === 'bool') (data as Uint8Array).forEach((v, i, a) => { a[i] = v & 1; });
  return Tensor.from(data, shape, { dtype });
}

const ODD_SHAPES = [[], [0, 3], [3, 5], [7], [2, 1, 3], [1]];

function everyDType(seed: number): Map<string, Tensor> {
  const random = new Random(seed);
  return new Map(DTYPES.map((dtype, i) => [`t${i}.${dtype}`, randomTensor(dtype, ODD_SHAPES[i % ODD_SHAPES.length]!, random)]));
}

function expectSameTensors(got: Map<string, Tensor>, want: Map<string, Tensor>): void {
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [name, t] of want) {
    const g = got.get(name)!;
    expect([g.dtype, g.shape], name).toEqual([t.dtype, t.shape]);
    expect(bytesOf(g.toArray()), name).toEqual(bytesOf(t.toArray()));
  }
}

/** A file from a header text (or object), data bytes and optionally a wrong declared length. */
function file(header: string | object, data: ArrayLike<number> = [], declaredLength?: bigint): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(Array.from(data), 8 + json.length);
  return out;
}

const ascii = (text: string) => Array.from(Buffer.from(text, 'latin1'));
const u64 = (n: number) => [n & 0xff, (n >> 8) & 0xff, 0, 0, 0, 0, 0, 0];

describe('safetensors.write: the reference writer layout, byte for byte', () => {
  it('reproduces the reference implementation test vectors', () => {
    // safetensors/src/tensor.rs tests: an empty dict, and one with metadata {"framework": "pt"}.
    expect(Array.from(safetensors.write({}))).toEqual([...u64(8), ...ascii('{}      ')]);
    expect(Array.from(safetensors.write({}, { framework: 'pt' }))).toEqual([...u64(40), ...ascii('{"__metadata__":{"framework":"pt"}}     ')]);
    // "attn.0": F32 [1, 2, 3] = 0..5: a 64-byte header needs no padding.
    const values = Tensor.from([0, 1, 2, 3, 4, 5], [1, 2, 3]);
    const floats = [0, 0, 0, 0, 0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64, 0, 0, 128, 64, 0, 0, 160, 64];
    expect(Array.from(safetensors.write({ 'attn.0': values }))).toEqual([
      ...u64(64), ...ascii('{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}'), ...floats]);
    // "attn0": [1, 1, 2, 3]: 65 bytes of JSON, 7 spaces align the data to 8.
    expect(Array.from(safetensors.write({ attn0: values.reshape([1, 1, 2, 3]) }))).toEqual([
      ...u64(72), ...ascii('{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       '), ...floats]);
  });

  it('orders tensors by dtype alignment (the reference Dtype enum, descending), then by name', () => {
    const t = (dtype: DType, values: number[]) => Tensor.from(values, [values.length], { dtype });
    const bytes = safetensors.write(new Map([
      ['b', t('uint8', [7])], ['a', t('float32', [1])], ['z', t('int64', [-2])], ['m', t('bool', [1, 0])],
      ['e4', t('float8_e4m3fn', [1])], ['e5', t('float8_e5m2', [1])], ['h', t('float16', [1])], ['g', t('bfloat16', [1])],
      ['A', t('float32', [2])], ['w', t('uint64', [3])], ['i', t('int8', [-1])], ['s', t('int16', [-1])],
    ]), { b: '2', a: '1' });
    const header = '{"__metadata__":{"a":"1","b":"2"},' +
      '"w":{"dtype":"U64","shape":[1],"data_offsets":[0,8]},"z":{"dtype":"I64","shape":[1],"data_offsets":[8,16]},' +
      '"A":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},"a":{"dtype":"F32","shape":[1],"data_offsets":[20,24]},' +
      '"g":{"dtype":"BF16","shape":[1],"data_offsets":[24,26]},"h":{"dtype":"F16","shape":[1],"data_offsets":[26,28]},' +
      '"s":{"dtype":"I16","shape":[1],"data_offsets":[28,30]},"e4":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[30,31]},' +
      '"e5":{"dtype":"F8_E5M2","shape":[1],"data_offsets":[31,32]},"i":{"dtype":"I8","shape":[1],"data_offsets":[32,33]},' +
      '"b":{"dtype":"U8","shape":[1],"data_offsets":[33,34]},"m":{"dtype":"BOOL","shape":[2],"data_offsets":[34,36]}}';
    const padded = header + ' '.repeat((8 - (header.length % 8)) % 8);
    const data = [3, 0, 0, 0, 0, 0, 0, 0, 254, 255, 255, 255, 255, 255, 255, 255, 0, 0, 0, 64, 0, 0, 128, 63,
      0x80, 0x3f, 0x00, 0x3c, 0xff, 0xff, 0x38, 0x3c, 0xff, 7, 1, 0];
    expect(Array.from(bytes)).toEqual([...u64(padded.length), ...ascii(padded), ...data]);
  });

  it('writes scalars, zero-size tensors, non-ASCII names and escapes like serde_json', () => {
    const bytes = safetensors.write({ 'é"\n\u0001': Tensor.from([1], [], { dtype: 'uint8' }), empty: Tensor.zeros([0, 3], { dtype: 'int16' }) });
    const header = '{"empty":{"dtype":"I16","shape":[0,3],"data_offsets":[0,0]},"é\\"\\n\\u0001":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}';
    const json = Buffer.from(header, 'utf8');
    const padded = Math.ceil(json.length / 8) * 8;
    expect(Buffer.from(bytes.subarray(8, 8 + json.length)).toString('utf8')).toBe(header);
    expect(Array.from(bytes.subarray(0, 8))).toEqual(u64(padded));
    expect(Array.from(bytes.subarray(8 + json.length))).toEqual([...ascii(' '.repeat(padded - json.length)), 1]);
  });
});

describe('safetensors round trips', () => {
  it('every dtype, odd shapes (scalars, zero-size), through bytes and through a file', () => {
    const tensors = everyDType(1);
    const metadata = { format: 'pt', 'note é': 'x"y' };
    const bytes = safetensors.write(tensors, metadata);
    const fromBytes = safetensors.read(bytes);
    expectSameTensors(fromBytes, tensors);
    expect(fromBytes.metadata).toEqual(metadata);
    const target = path.join(tmp, 'every.safetensors');
    safetensors.writeFile(target, tensors, metadata);
    expect(fs.readFileSync(target)).toEqual(Buffer.from(bytes));
    const fromFile = safetensors.read(target);
    expectSameTensors(fromFile, tensors);
    expect(fromFile.metadata).toEqual(metadata);
    expect(safetensors.read(bytes.buffer as ArrayBuffer).size).toBe(DTYPES.length);
    expect(safetensors.read(safetensors.write({})).metadata).toEqual({});
  });

  it('reads a zero-size tensor whose other dimensions multiply past 2^1024', () => {
    const shape = [...new Array<number>(20).fill(2 ** 52), 0];
    const read = safetensors.read(file({ huge: { dtype: 'F64', shape, data_offsets: [0, 0] } }));
    expect([read.get('huge')!.shape, read.get('huge')!.numel]).toEqual([shape, 0]);
    expect(safetensors.read(safetensors.write(read)).get('huge')!.shape).toEqual(shape);
  });

  it('returns tensors in file order', () => {
    const tensors = everyDType(2);
    const names = [...safetensors.read(safetensors.write(tensors)).keys()];
    const order = ['U64', 'I64', 'F64', 'F32', 'U32', 'I32', 'BF16', 'F16', 'U16', 'I16', 'F8_E4M3', 'F8_E5M2', 'I8', 'U8', 'BOOL'];
    expect(names.map((n) => FILE_DTYPE[tensors.get(n)!.dtype])).toEqual(order);
  });

  it('from bytes: aligned tensors share the memory, misaligned ones are copied once and still right', () => {
    const tensors = { f: Tensor.from([1.5, -2, 3], [3]), d: Tensor.from(Float64Array.from([1 / 3]), [1]), u: Tensor.from([9, 8], [2], { dtype: 'uint8' }) };
    const bytes = safetensors.write(tensors);
    const aligned = safetensors.read(bytes);
    const dataStart = bytes.length - 8 - 12 - 2;
    new DataView(bytes.buffer).setFloat64(dataStart, 0.25, true); // d is first (F64 > F32 > U8)
    expect(aligned.get('d')!.toFloat32()[0]).toBe(0.25);
    // The same file at an odd address: F64 and F32 data are misaligned there, U8 is not.
    const shifted = new Uint8Array(new ArrayBuffer(bytes.length + 1), 1);
    shifted.set(bytes);
    const copied = safetensors.read(shifted);
    expect(Array.from(copied.get('f')!.toFloat32())).toEqual([1.5, -2, 3]);
    expect(copied.get('d')!.toFloat32()[0]).toBe(0.25);
    shifted[dataStart + 8] = shifted[dataStart + 8]! ^ 0xff;
    shifted[shifted.length - 1] = 77;
    expect(Array.from(copied.get('f')!.toFloat32())).toEqual([1.5, -2, 3]);
    expect(copied.get('u')!.toArray()[1]).toBe(77);
  });

  it('from a path: `names` selects tensors (a list or a predicate); a listed name must exist', () => {
    const tensors = everyDType(3);
    const target = path.join(tmp, 'select.safetensors');
    safetensors.writeFile(target, tensors);
    const wanted = ['t0.float32', 't11.uint64'];
    expectSameTensors(safetensors.read(target, { names: wanted }), new Map(wanted.map((n) => [n, tensors.get(n)!])));
    const half = safetensors.read(target, { names: (n) => n.includes('float') });
    expect([...half.keys()].sort()).toEqual([...tensors.keys()].filter((n) => n.includes('float')).sort());
    expectError(() => safetensors.read(target, { names: ['t0.float32', 'nope'] }), 'ERR_ARGUMENT',
      /^safetensors\.read: opts\.names must be names of tensors in .*select\.safetensors, got "nope"$/);
    expectError(() => safetensors.read(safetensors.write(tensors), { names: 'x' as never }), 'ERR_ARGUMENT',
      /^safetensors\.read: opts\.names must be a function or an array of tensor names, got the string "x"$/);
  });

  describe.each(testDevices())('on $device', ({ device }) => {
    it('reads onto the device and writes device tensors', () => {
      const tensors = everyDType(4);
      const there = new Map([...tensors].map(([n, t]) => [n, t.to(device)]));
      const bytes = safetensors.write(there);
      expect(bytes).toEqual(safetensors.write(tensors));
      const target = path.join(tmp, `device-${device}.safetensors`);
      safetensors.writeFile(target, there);
      for (const read of [safetensors.read(bytes, { device }), safetensors.read(target, { device })]) {
        for (const t of read.values()) expect(t.device).toBe(device);
        expectSameTensors(read, tensors);
      }
    });
  });
});

describe('safetensors.read rejects malformed files with ERR_FORMAT', () => {
  const f32 = (name: string, shape: number[], offsets: unknown) => ({ [name]: { dtype: 'F32', shape, data_offsets: offsets } });
  const cases: [string, Uint8Array, RegExp][] = [
    ['shorter than 8 bytes', new Uint8Array(5), /^safetensors\.read: source must be at least 8 bytes \(the header length\), got 5 bytes$/],
    ['a header over 100 MB', file('{}', [], 100_000_001n), /^safetensors\.read: source: the header length must be at most 100000000 bytes, got 100000001$/],
    ['a header length of 2^64 - 1', file('{}', [], 2n ** 64n - 1n), /the header length must be at most 100000000 bytes, got 18446744073709551615$/],
    ['a header past the end', file('{}', [1, 2], 10n), /^safetensors\.read: source: the header length must be at most the 4 bytes after it, got 10$/],
    ['not UTF-8', file('{ab}').map((b, i) => (i === 9 ? 0xff : b)), /source: the header must be UTF-8 text, got bytes that are not UTF-8$/],
    ['a byte-order mark', file('\ufeff{}'), /source: the header must be JSON starting with '\{', got "\ufeff\{\}"$/],
    ['leading space', file(' {}'), /source: the header must be JSON starting with '\{', got " \{\}"$/],
    ['not JSON', file('{oops}'), /^safetensors\.read: source: the header must be JSON, got .+/],
    ['__metadata__ not an object', file({ __metadata__: 5 }), /source: __metadata__ must be an object of strings, got 5$/],
    ['a metadata value not a string', file({ __metadata__: { a: 'x', b: 1 } }), /source: __metadata__\["b"\] must be a string, got 1$/],
    ['an entry not an object', file({ w: [1] }), /source: tensor "w" must be an object \{ dtype, shape, data_offsets \}, got \[1\]$/],
    ['an unknown key', file({ w: { dtype: 'F32', shape: [], data_offsets: [0, 4], endian: 'big' } }, [0, 0, 0, 0]), /source: tensor "w" keys must be dtype, shape and data_offsets, got "endian"$/],
    ['an unknown dtype', file({ w: { dtype: 'F4', shape: [1], data_offsets: [0, 1] } }, [0]), /source: tensor "w" dtype must be one of BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, got "F4"$/],
    ['no dtype', file({ w: { shape: [1], data_offsets: [0, 1] } }, [0]), /tensor "w" dtype must be one of .*, got undefined$/],
    ['a shape that is not an array', file({ w: { dtype: 'U8', shape: 3, data_offsets: [0, 3] } }, [0, 0, 0]), /tensor "w" shape must be an array of non-negative integers, got 3$/],
    ['a negative dimension', file(f32('w', [-1], [0, 0])), /tensor "w" shape must be an array of non-negative integers, got \[-1\]$/],
    ['a fractional dimension', file(f32('w', [1.5], [0, 6])), /got \[1\.5\]$/],
    ['a dimension past 2^53', file('{"w":{"dtype":"U8","shape":[9007199254740993],"data_offsets":[0,0]}}'), /tensor "w" shape must be an array of non-negative integers, got \[9007199254740992\]$/],
    ['one offset', file(f32('w', [1], [0])), /tensor "w" data_offsets must be two non-negative integers \[begin, end\] with begin <= end, got \[0\]$/],
    ['three offsets', file(f32('w', [1], [0, 4, 8])), /got \[0,4,8\]$/],
    ['a negative offset', file(f32('w', [1], [-4, 0])), /with begin <= end, got \[-4,0\]$/],
    ['begin after end', file(f32('w', [1], [4, 0])), /with begin <= end, got \[4,0\]$/],
    ['a string offset', file(f32('w', [1], ['0', 4])), /got \["0",4\]$/],
    ['a size that does not match the shape', file(f32('w', [2], [0, 4]), [0, 0, 0, 0]), /source: tensor "w" data_offsets must be a range of 8 bytes for F32 \[2\], got \[0, 4\] \(4 bytes\)$/],
    ['a size that overflows 64 bits', file(f32('w', [2 ** 40, 2 ** 40], [0, 0])), /must be a range of 4835703278458516698824704 bytes for F32 \[1099511627776, 1099511627776\], got \[0, 0\] \(0 bytes\)$/],
    ['offsets past the data', file(f32('w', [1], [0, 4]), [0, 0]), /source: tensor "w" data_offsets must be within the 2-byte data section, got \[0, 4\]$/],
    ['overlapping ranges', file({ ...f32('a', [2], [0, 8]), ...f32('b', [1], [4, 8]) }, new Array(8).fill(0)),
      /source: tensor "b" data_offsets must be a range starting at 8 \(where tensor "a" \[0, 8\] ends\), got \[4, 8\], an overlap$/],
    ['a hole', file({ ...f32('a', [1], [0, 4]), ...f32('b', [1], [8, 12]) }, new Array(12).fill(0)),
      /source: tensor "b" data_offsets must be a range starting at 4 \(where tensor "a" \[0, 4\] ends\), got \[8, 12\], a hole$/],
    ['data not starting at 0', file(f32('a', [1], [4, 8]), new Array(8).fill(0)),
      /source: tensor "a" data_offsets must be a range starting at 0 \(the start of the data section\), got \[4, 8\], a hole$/],
    ['trailing bytes', file(f32('a', [1], [0, 4]), new Array(6).fill(0)), /source: the data section must be 4 bytes \(where the last tensor ends\), got 6 bytes, 2 trailing$/],
    ['data without tensors', file('{}', [1, 2, 3]), /source: the data section must be 0 bytes \(where the last tensor ends\), got 3 bytes, 3 trailing$/],
    ['a BOOL byte other than 0 or 1', file({ m: { dtype: 'BOOL', shape: [3], data_offsets: [0, 3] } }, [1, 2, 0]),
      /source: tensor "m" \(BOOL\) element 1 must be the byte 0 or 1, got 2$/],
  ];

  it.each(cases)('%s', (_what, bytes, message) => {
    expectError(() => safetensors.read(bytes), 'ERR_FORMAT', message);
    const target = path.join(tmp, 'bad.safetensors');
    fs.writeFileSync(target, bytes);
    const escaped = target.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    const fileMessage = new RegExp(message.source.replace('source', () => escaped));
    expectError(() => safetensors.read(target), 'ERR_FORMAT', fileMessage);
  });

  it('a truncated file never yields a tensor, whatever the cut', () => {
    const bytes = safetensors.write(everyDType(5));
    const target = path.join(tmp, 'truncated.safetensors');
    for (let length = 0; length < bytes.length; length += 1 + (length % 7)) {
      fs.writeFileSync(target, bytes.subarray(0, length));
      expect(() => safetensors.read(target), `length ${length}`).toThrow(expect.objectContaining({ code: 'ERR_FORMAT' }));
      expect(() => safetensors.read(bytes.subarray(0, length)), `length ${length}`).toThrow(expect.objectContaining({ code: 'ERR_FORMAT' }));
    }
  });

  it('a path that does not exist, or a directory, is ERR_ARGUMENT naming it', () => {
    const missing = path.join(tmp, 'missing.safetensors');
    expectError(() => safetensors.read(missing), 'ERR_ARGUMENT', /^safetensors\.read: source must be a readable safetensors file, got ".*missing\.safetensors" \(ENOENT/);
    expectError(() => safetensors.read(tmp), 'ERR_ARGUMENT', /^safetensors\.read: source must be a readable safetensors file, got ".*" \(a directory\)$/);
    expectError(() => safetensors.read(42 as never), 'ERR_ARGUMENT', /^safetensors\.read: source must be a Uint8Array, an ArrayBuffer or a file path, got number 42$/);
  });
});

describe('safetensors.write checks its arguments', () => {
  const t = Tensor.from([1], [1]);
  it.each([
    ['not a map', () => safetensors.write(5 as never), 'ERR_ARGUMENT', /^safetensors\.write: tensors must be a Map or an object of named tensors, got number 5$/],
    ['an array', () => safetensors.write([t] as never), 'ERR_ARGUMENT', /tensors must be a Map or an object of named tensors, got an array of length 1$/],
    ['an empty name', () => safetensors.write({ '': t }), 'ERR_ARGUMENT', /^safetensors\.write: a tensor name must be a non-empty string other than '__metadata__', got the string ""$/],
    ['__metadata__ as a name', () => safetensors.write({ __metadata__: t }), 'ERR_ARGUMENT', /other than '__metadata__', got the string "__metadata__"$/],
    ['a non-string key', () => safetensors.write(new Map([[1, t]]) as never), 'ERR_ARGUMENT', /a tensor name must be .*, got number 1$/],
    ['a value that is not a Tensor', () => safetensors.write({ w: [1] as never }), 'ERR_ARGUMENT', /^safetensors\.write: tensors\["w"\] must be a Tensor, got an array of length 1$/],
    ['a disposed tensor', () => { const d = Tensor.from([1], [1]); d.dispose(); return safetensors.write({ w: d }); }, 'ERR_DISPOSED', /tensors\["w"\] must be a live tensor, got a disposed tensor$/],
    ['metadata not an object', () => safetensors.write({ w: t }, 5 as never), 'ERR_ARGUMENT', /^safetensors\.write: metadata must be an object of strings, got number 5$/],
    ['a metadata value not a string', () => safetensors.write({ w: t }, { a: 1 } as never), 'ERR_ARGUMENT', /^safetensors\.write: metadata\["a"\] must be a string, got number 1$/],
    ['writeFile without a path', () => safetensors.writeFile('', { w: t }), 'ERR_ARGUMENT', /^safetensors\.writeFile: path must be a file path, got the string ""$/],
    ['writeFile into a missing folder', () => safetensors.writeFile(path.join(tmp, 'no', 'x.safetensors'), { w: t }), 'ERR_ARGUMENT',
      /^safetensors\.writeFile: path must be a writable file path, got ".*x\.safetensors" \(ENOENT/],
  ] as const)('%s', (_what, fn, code, message) => expectError(fn, code, message));
});

// ---- the fuzzer --------------------------------------------------------------------------------

const INTERESTING_BYTES = [0x00, 0xff, 0x7f, 0x80, 0x7b, 0x7d, 0x22, 0x2c, 0x3a, 0x5b, 0x5d, 0x30, 0x31, 0x39, 0x2d, 0x20, 0x2e, 0x65, 0xc0, 0xe2, 0x01, 0x02];
const INTERESTING_NUMBERS: unknown[] = [-1, 0, 1, 2, 3, 7, 8, 1.5, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e300, -0, '0', null, true, [], {}];

interface Mutated { bytes: Uint8Array; what: string }

function headerOf(bytes: Uint8Array): { n: number; json: Record<string, unknown> } {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  return { n, json: JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8')) as Record<string, unknown> };
}

/** The header of a (possibly already mutated) file, when it still parses. */
function tryHeaderOf(bytes: Uint8Array): { n: number; json: Record<string, unknown> } | undefined {
  try {
    const header = headerOf(bytes);
    return header.json !== null && typeof header.json === 'object' && !Array.isArray(header.json) ? header : undefined;
  } catch {
    return undefined;
  }
}

function withHeader(bytes: Uint8Array, json: unknown, random: Random): Uint8Array {
  const { n } = headerOf(bytes);
  let text = JSON.stringify(json);
  if (random.uniform() < 0.5) text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  return file(text, bytes.subarray(8 + n));
}

function jsonEdit(bytes: Uint8Array, json: Record<string, unknown>, random: Random): Mutated {
  const names = Object.keys(json).filter((k) => k !== '__metadata__' && json[k] !== null && typeof json[k] === 'object');
  const name = names.length ? random.pick(names) : 'none';
  const entry = json[name] as Record<string, unknown> | undefined;
  // An earlier step may have replaced a field: edit an array in its place.
  const array = (key: string): unknown[] => (Array.isArray(entry![key]) ? entry![key] as unknown[] : (entry![key] = []) as unknown[]);
  const op = random.int(10);
  const value = random.pick(INTERESTING_NUMBERS);
  let what: string;
  if (entry && op === 0) {
    const offsets = array('data_offsets');
    const i = random.int(2);
    offsets[i] = random.uniform() < 0.5 && typeof offsets[i] === 'number' ? offsets[i] + random.pick([-8, -4, -2, -1, 1, 2, 4, 8]) : value;
    what = `data_offsets[${i}] of ${name} := ${JSON.stringify(offsets[i])}`;
  } else if (entry && op === 1) {
    const offsets = array('data_offsets');
    if (random.uniform() < 0.5) offsets.reverse(); else if (random.uniform() < 0.5) offsets.pop(); else offsets.push(value);
    what = `data_offsets of ${name} := ${JSON.stringify(offsets)}`;
  } else if (entry && op === 2) {
    const shape = array('shape');
    const i = random.int(shape.length + 1);
    const kind = random.int(4);
    if (kind === 0) shape.push(random.pick([0, 1, 2]));
    else if (kind === 1) shape.pop();
    else if (kind === 2 && typeof shape[i] === 'number') shape[i] = shape[i] + random.pick([-1, 1, 2]);
    else shape[i] = value;
    what = `shape of ${name} := ${JSON.stringify(shape)}`;
  } else if (entry && op === 3) {
    entry['dtype'] = random.pick([...Object.keys(DTYPE_OF), 'F4', 'f32', 'float32', '', 5, null]);
    what = `dtype of ${name} := ${JSON.stringify(entry['dtype'])}`;
  } else if (entry && op === 4) {
    const copy = `${name}~copy`;
    json[copy] = JSON.parse(JSON.stringify(entry));
    what = `duplicate ${name} as ${copy}`;
  } else if (entry && op === 5) {
    delete json[name];
    what = `remove ${name}`;
  } else if (entry && op === 6) {
    const key = random.pick(['extra', 'offsets', 'dtype ', '']);
    entry[key] = value;
    what = `${name}.${key} := ${JSON.stringify(value)}`;
  } else if (op === 7) {
    json['__metadata__'] = random.pick([5, [], null, { a: 1 }, { a: 'b', c: [] }, 'text', { ok: 'yes' }]);
    what = `__metadata__ := ${JSON.stringify(json['__metadata__'])}`;
  } else if (entry && op === 8) {
    json[name] = random.pick([null, 5, 'x', [], {}, [entry]]);
    what = `${name} := ${JSON.stringify(json[name])}`;
  } else {
    json[random.pick(['__metadata__', 'new', 'x'])] = entry ?? { dtype: 'U8', shape: [1], data_offsets: [0, 1] };
    what = 'add an entry';
  }
  return { bytes: withHeader(bytes, json, random), what };
}

function mutate(bytes: Uint8Array, random: Random): Mutated {
  const header = tryHeaderOf(bytes);
  const n = Math.min(header?.n ?? 0, bytes.length);
  const kind = header ? random.int(7) : random.int(4);
  const out = bytes.slice();
  if (out.length < 8) return { bytes: out, what: 'keep the short file' };
  const position = random.uniform() < 0.7 ? random.int(Math.min(8 + n, out.length)) : random.int(out.length);
  switch (kind) {
    case 0: {
      const bit = random.int(8);
      out[position] = out[position]! ^ (1 << bit);
      return { bytes: out, what: `flip bit ${bit} of byte ${position}` };
    }
    case 1: {
      const value = random.pick(INTERESTING_BYTES);
      out[position] = value;
      return { bytes: out, what: `byte ${position} := 0x${value.toString(16)}` };
    }
    case 2: {
      const length = random.int(out.length);
      return { bytes: out.subarray(0, length), what: `truncate to ${length} bytes` };
    }
    case 3: {
      const extra = random.uniform() < 0.5 ? new Uint8Array(1 + random.int(16)) : random.bytes(1 + random.int(16));
      const longer = new Uint8Array(out.length + extra.length);
      longer.set(out);
      longer.set(extra, out.length);
      return { bytes: longer, what: `append ${extra.length} bytes` };
    }
    case 4: {
      const length = random.pick([n - 1, n + 1, n - 8, n + 8, 0, 1, 7, out.length - 8, out.length, 100_000_001, 2 ** 53]);
      const value = random.uniform() < 0.1 ? 2n ** 63n + BigInt(n) : BigInt(Math.max(0, length));
      new DataView(out.buffer).setBigUint64(0, value, true);
      return { bytes: out, what: `header length := ${value}` };
    }
    default:
      return jsonEdit(bytes, header!.json, random);
  }
}

/** What a successful read must satisfy: every tensor is its header entry's bytes, and the ranges tile the data. */
function checkConsistent(bytes: Uint8Array, result: Map<string, Tensor>, label: string): void {
  const { n, json } = headerOf(bytes);
  const entries = Object.entries(json).filter(([k]) => k !== '__metadata__') as [string, { dtype: string; shape: number[]; data_offsets: [number, number] }][];
  expect(result.size, label).toBe(entries.length);
  const ranges = entries.map(([, e]) => e.data_offsets).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let end = 0;
  for (const [begin, stop] of ranges) {
    expect(begin, `${label}: ranges must tile the data`).toBe(end);
    end = stop;
  }
  expect(8 + n + end, `${label}: the last range ends the file`).toBe(bytes.length);
  for (const [name, entry] of entries) {
    const t = result.get(name)!;
    expect([t.dtype, t.shape], `${label}: ${name}`).toEqual([DTYPE_OF[entry.dtype], entry.shape]);
    expect(bytesOf(t.toArray()), `${label}: ${name} bytes`).toEqual(bytes.subarray(8 + n + entry.data_offsets[0], 8 + n + entry.data_offsets[1]));
  }
}

type Outcome = { ok: true; result: Map<string, Tensor> } | { ok: false; error: unknown };

function attempt(read: () => Map<string, Tensor>): Outcome {
  try {
    return { ok: true, result: read() };
  } catch (error) {
    return { ok: false, error };
  }
}

function baseFiles(seed: number): Uint8Array[] {
  const random = new Random(seed);
  return Array.from({ length: 8 }, (_, f) => {
    const tensors = new Map<string, Tensor>();
    for (let i = 0; i < 1 + random.int(5); i++) {
      const shape = random.pick([[], [0], [2, 0], [1], [3], [2, 3], [5, 1, 2]]);
      tensors.set(`layer.${i}.${random.pick(['weight', 'bias', 'é'])}`, randomTensor(random.pick(DTYPES), shape, random));
    }
    return safetensors.write(tensors, f % 2 ? { format: 'pt', file: String(f) } : undefined);
  });
}

describe('safetensors.read fuzzing', () => {
  it('5000 seeded mutations of valid files: consistent tensors or ERR_FORMAT, never anything else', () => {
    const seed = Number(process.env['LK_FUZZ_SEED'] ?? 20240611);
    const random = new Random(seed);
    const bases = baseFiles(seed);
    const target = path.join(tmp, 'fuzz.safetensors');
    let accepted = 0;
    for (let c = 0; c < 5000; c++) {
      let mutated: Mutated = { bytes: random.pick(bases), what: '' };
      const steps: string[] = [];
      for (let s = 0; s < 1 + (random.uniform() < 0.3 ? random.int(3) : 0); s++) {
        mutated = mutate(mutated.bytes, random);
        steps.push(mutated.what);
      }
      const label = `seed ${seed}, case ${c}: ${steps.join('; ')}`;
      // Half the cases from an odd address, where tensors are copied instead of viewed.
      let source = mutated.bytes;
      if (c % 2) {
        source = new Uint8Array(new ArrayBuffer(mutated.bytes.length + 3), 3, mutated.bytes.length);
        source.set(mutated.bytes);
      }
      const outcome = attempt(() => safetensors.read(source));
      if (outcome.ok) {
        accepted++;
        checkConsistent(mutated.bytes, outcome.result, label);
      } else if (!(outcome.error instanceof LoraKernelsError) || outcome.error.code !== 'ERR_FORMAT') {
        expect.fail(`${label}: threw ${String(outcome.error)}`);
      }
      if (c % 16 === 0) {
        fs.writeFileSync(target, mutated.bytes);
        const fromFile = attempt(() => safetensors.read(target));
        expect(fromFile.ok, label).toBe(outcome.ok);
        if (!fromFile.ok && !outcome.ok) {
          expect((fromFile.error as Error).message.replace(target, 'source'), label).toBe((outcome.error as Error).message);
        }
      }
    }
    // Both outcomes occur: the mutations reach the validation and also leave valid files.
    expect(accepted).toBeGreaterThan(100);
    expect(accepted).toBeLessThan(4000);
  }, 60_000);
});
