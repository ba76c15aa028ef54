import { describe, expect, it } from 'vitest';

import { backends, DTYPES, type DType, lora, LoraKernelsError, reference, Tensor, type TypedArray } from '../lib/index.js';
import {
  bfloat16ToFloat, float16ToFloat, float8E4M3FNToFloat, float8E5M2ToFloat, floatToBFloat16, floatToFloat16,
  floatToFloat8E4M3FN, floatToFloat8E5M2, STORAGE,
} from '../lib/dtype.js';
import { testDevices } from './helpers/devices.js';
import { expectError } from './helpers/errors.js';
import { Random } from './helpers/random.js';

function bytesOf(data: TypedArray): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Random storage for `dtype`: random bits (NaNs included) for floats, 0/1 for bool. */
function randomStorage(dtype: DType, count: number, seed: number): TypedArray {
  const data = new STORAGE[dtype](count);
  bytesOf(data).set(new Random(seed).bytes(data.byteLength));
  if (dtype === 'bool') (data as Uint8Array).forEach((v, i, a) => { a[i] = v & 1; });
  return data;
}

const RANDN_DTYPES: DType[] = ['float32', 'float16', 'bfloat16', 'float64', 'int8', 'uint8', 'int32'];

describe('backends()', () => {
  it('reports the CPU SIMD level and threads, and CUDA with a reason when unavailable', () => {
    const info = backends();
    expect(['avx512', 'avx2', 'neon', 'scalar']).toContain(info.cpu.simd);
    expect(info.cpu.threads).toBeGreaterThan(0);
    if (info.cuda.available) expect(info.cuda.devices.length).toBeGreaterThan(0);
    else expect(info.cuda.reason).toMatch(/\w+/);
  });
});

describe('half conversions', () => {
  it('round to nearest even and keep specials', () => {
    expect(floatToFloat16(1)).toBe(0x3c00);
    expect(floatToFloat16(65504)).toBe(0x7bff);
    expect(floatToFloat16(65520)).toBe(0x7c00);
    expect(floatToFloat16(-0)).toBe(0x8000);
    expect(floatToFloat16(2 ** -24)).toBe(1);
    expect(floatToFloat16(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(floatToFloat16(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(Number.isNaN(float16ToFloat(floatToFloat16(NaN)))).toBe(true);
    expect(floatToBFloat16(1 + 2 ** -8)).toBe(0x3f80); // tie → even
    expect(floatToBFloat16(1 + 3 * 2 ** -8)).toBe(0x3f82);
    expect(Number.isNaN(bfloat16ToFloat(floatToBFloat16(NaN)))).toBe(true);
    for (let bits = 0; bits < 0x7c00; bits += 7) expect(floatToFloat16(float16ToFloat(bits))).toBe(bits);
  });
});

// An oracle independent of the conversion's arithmetic: the nearest value of the format's grid,
// ties to the even pattern. The grid is the 256 decoded patterns plus the next value past the
// largest finite one (480 for e4m3fn, 65536 for e5m2): a value that rounds there overflows, to NaN
// (e4m3fn) or ±inf (e5m2), as PyTorch's casts do.
function nearestFp8(value: number, decode: (bits: number) => number, beyondMax: { value: number; odd: boolean }, overflow: number): number {
  const v = Math.fround(value);
  if (Number.isNaN(v)) return 0x7f;
  const sign = v < 0 || Object.is(v, -0) ? 0x80 : 0;
  const a = Math.abs(v);
  let best = -1;
  let bestError = Infinity;
  let bestOdd = false;
  for (let bits = 0; bits < 0x80; bits++) {
    const g = decode(bits);
    if (!Number.isFinite(g)) continue;
    const error = Math.abs(g - a);
    if (error < bestError || (error === bestError && bestOdd && bits % 2 === 0)) {
      [best, bestError, bestOdd] = [bits, error, bits % 2 === 1];
    }
  }
  const beyond = Math.abs(beyondMax.value - a);
  if (a === Infinity || beyond < bestError || (beyond === bestError && bestOdd && !beyondMax.odd)) return sign | overflow;
  return sign | best;
}

function interestingFloats(seed: number, count: number, maxExponent: number, minExponent: number): number[] {
  const random = new Random(seed);
  const values: number[] = [];
  for (let i = 0; i < count; i++) {
    const exponent = minExponent - 3 + random.int(maxExponent - minExponent + 6);
    // Mostly float32 values near the grid (ties included), some arbitrary doubles.
    const mantissa = i % 4 === 0 ? random.uniform() : random.int(64) / 32;
    values.push((random.uniform() < 0.5 ? -1 : 1) * (1 + mantissa) * 2 ** exponent);
  }
  return values;
}

describe('fp8 conversions (OCP FP8, PyTorch casting rules)', () => {
  it('float8_e4m3fn: ±0, subnormals, max, ties to even, overflow to NaN, no infinities', () => {
    const cases: [number, number][] = [
      [0, 0x00], [-0, 0x80], [1, 0x38], [-2, 0xc0], [448, 0x7e], [-448, 0xfe],
      [2 ** -6, 0x08], [7 * 2 ** -9, 0x07], [2 ** -9, 0x01], [-(2 ** -9), 0x81],
      [2 ** -10, 0x00], [-(2 ** -10), 0x80], [3 * 2 ** -10, 0x02], [Math.fround(2 ** -10 * (1 + 2 ** -20)), 0x01],
      [1 + 2 ** -4, 0x38], [1 + 3 * 2 ** -4, 0x3a], [15 * 2 ** -4 + 2 ** -5, 0x38], // the last: a tie that carries into 2^0
      [464, 0x7e], [464.0001, 0x7f], [479, 0x7f], [480, 0x7f], [1e6, 0x7f], [-1e6, 0xff],
      [Infinity, 0x7f], [-Infinity, 0xff], [NaN, 0x7f],
      // a double is rounded to float32 first (PyTorch casts take a float): 1 + 2^-4 + 2^-40 is a tie there
      [1 + 2 ** -4 + 2 ** -40, 0x38],
    ];
    for (const [value, bits] of cases) expect(floatToFloat8E4M3FN(value), `e4m3fn(${value})`).toBe(bits);
    expect([0x7e, 0xfe, 0x78, 0x08, 0x07, 0x01, 0x80].map(float8E4M3FNToFloat)).toEqual([448, -448, 256, 2 ** -6, 7 * 2 ** -9, 2 ** -9, -0]);
    expect(Number.isNaN(float8E4M3FNToFloat(0x7f)) && Number.isNaN(float8E4M3FNToFloat(0xff))).toBe(true);
    for (let bits = 0; bits < 256; bits++) {
      if ((bits & 0x7f) !== 0x7f) expect(floatToFloat8E4M3FN(float8E4M3FNToFloat(bits)), `bits ${bits}`).toBe(bits);
    }
  });

  it('float8_e5m2: ±0, subnormals, max, ties to even, overflow to ±inf, NaN', () => {
    const cases: [number, number][] = [
      [0, 0x00], [-0, 0x80], [1, 0x3c], [57344, 0x7b], [-57344, 0xfb], [61439, 0x7b], [61440, 0x7c], [-61440, 0xfc],
      [2 ** -14, 0x04], [2 ** -16, 0x01], [3 * 2 ** -16, 0x03], [2 ** -17, 0x00], [3 * 2 ** -17, 0x02],
      [1 + 2 ** -3, 0x3c], [1 + 3 * 2 ** -3, 0x3e],
      [Infinity, 0x7c], [-Infinity, 0xfc], [1e10, 0x7c], [NaN, 0x7f],
    ];
    for (const [value, bits] of cases) expect(floatToFloat8E5M2(value), `e5m2(${value})`).toBe(bits);
    expect([0x7b, 0x7c, 0xfc, 0x04, 0x01].map(float8E5M2ToFloat)).toEqual([57344, Infinity, -Infinity, 2 ** -14, 2 ** -16]);
    for (const bits of [0x7d, 0x7e, 0x7f, 0xfd, 0xfe, 0xff]) expect(Number.isNaN(float8E5M2ToFloat(bits))).toBe(true);
    for (let bits = 0; bits < 256; bits++) {
      if ((bits & 0x7f) <= 0x7c) expect(floatToFloat8E5M2(float8E5M2ToFloat(bits)), `bits ${bits}`).toBe(bits);
    }
  });

  it('agree with a nearest-value search over the whole grid on 20000 seeded values each', () => {
    for (const value of interestingFloats(1, 20000, 9, -9)) {
      const want = nearestFp8(value, float8E4M3FNToFloat, { value: 480, odd: true }, 0x7f);
      if (floatToFloat8E4M3FN(value) !== want) expect(floatToFloat8E4M3FN(value), `e4m3fn(${value})`).toBe(want);
    }
    for (const value of interestingFloats(2, 20000, 16, -17)) {
      const want = nearestFp8(value, float8E5M2ToFloat, { value: 65536, odd: false }, 0x7c);
      if (floatToFloat8E5M2(value) !== want) expect(floatToFloat8E5M2(value), `e5m2(${value})`).toBe(want);
    }
  });
});

describe('storage dtypes on the host', () => {
  it('from() is zero-copy for the natural TypedArray of each dtype', () => {
    const arrays: [TypedArray, DType][] = [
      [new Float64Array([1 / 3, -2]), 'float64'], [new Int16Array([-3, 7]), 'int16'], [new Uint32Array([4e9, 1]), 'uint32'],
      [new BigInt64Array([-5n, 2n ** 62n]), 'int64'], [new BigUint64Array([2n ** 64n - 1n, 0n]), 'uint64'],
    ];
    for (const [data, dtype] of arrays) {
      const t = Tensor.from(data, [2]);
      expect(t.dtype).toBe(dtype);
      data[1] = (typeof data[0] === 'bigint' ? 9n : 9) as never;
      expect(t.toArray()[1]).toBe(data[1]);
    }
    for (const dtype of ['bool', 'float8_e4m3fn', 'float8_e5m2', 'uint8'] as const) {
      const bits = new Uint8Array([1, 0, 1]);
      const t = Tensor.from(bits, [3], { dtype });
      bits[1] = 1;
      expect([t.dtype, t.toArray()[1]]).toEqual([dtype, 1]);
    }
    const u16 = new Uint16Array([65535, 2]);
    const t = Tensor.from(u16, [2], { dtype: 'uint16' });
    u16[1] = 7;
    expect(Array.from(t.toFloat32())).toEqual([65535, 7]);
    expect(Tensor.from(new Uint8Array(2), [2]).dtype).toBe('uint8');
  });

  it('a Uint16Array needs a dtype, and bool storage must hold only 0 and 1', () => {
    expectError(() => Tensor.from(new Uint16Array(2), [2]), 'ERR_DTYPE',
      /^Tensor.from: opts.dtype must be 'float16', 'bfloat16' or 'uint16' for a Uint16Array, got undefined$/);
    expectError(() => Tensor.from(new Uint8Array([0, 1, 2]), [3], { dtype: 'bool' }), 'ERR_ARGUMENT',
      /^Tensor.from: data\[2\] must be 0 or 1 for dtype bool, got 2$/);
    expectError(() => Tensor.zeros([2], { dtype: 'float128' as DType }), 'ERR_DTYPE',
      /^Tensor.zeros: dtype must be one of float32, float16, bfloat16, int8, uint8, int32, float64, int16, uint16, uint32, int64, uint64, bool, float8_e4m3fn, float8_e5m2, got the string "float128"$/);
  });

  it('numbers and BigInts convert to every storage dtype', () => {
    const cases: [DType, (number | bigint)[], TypedArray][] = [
      ['float64', [1 / 3, -0.1, 2 ** 60 + 2 ** 8], Float64Array.from([1 / 3, -0.1, 2 ** 60 + 2 ** 8])],
      ['int16', [40000, -1.9, NaN, 70000n], Int16Array.from([-25536, -1, 0, 4464])],
      ['uint16', [-1, 65536.5, Infinity, -1n], Uint16Array.from([65535, 0, 0, 65535])],
      ['uint32', [-1, 2 ** 32 + 5, 3.99, 2n ** 40n + 3n], Uint32Array.from([4294967295, 5, 3, 3])],
      ['int32', [2n ** 31n, -(2n ** 33n) - 1n], Int32Array.from([-(2 ** 31), -1])],
      ['int64', [2 ** 60, -1.9, NaN, 2n ** 63n - 1n, 2n ** 64n + 7n], BigInt64Array.from([2n ** 60n, -1n, 0n, 2n ** 63n - 1n, 7n])],
      ['uint64', [-1, 2 ** 53, -1n, 2n ** 64n - 1n], BigUint64Array.from([2n ** 64n - 1n, 2n ** 53n, 2n ** 64n - 1n, 2n ** 64n - 1n])],
      ['bool', [0, -0, 2, NaN, -1, 0.5, 0n, 3n], Uint8Array.from([0, 0, 1, 1, 1, 1, 0, 1])],
      ['float8_e4m3fn', [1, -448, 1000, 2 ** -10, 12n], Uint8Array.from([0x38, 0xfe, 0x7f, 0x00, 0x54])],
      ['float8_e5m2', [1, 57344, 1e6, -(2 ** -16)], Uint8Array.from([0x3c, 0x7b, 0x7c, 0x81])],
      ['float32', [2n ** 40n + 1n, 1 / 3], Float32Array.from([2 ** 40, 1 / 3])],
    ];
    for (const [dtype, values, want] of cases) {
      const t = Tensor.from(values as number[], [values.length], { dtype });
      expect(t.toArray(), dtype).toEqual(want);
    }
    // A BigInt64Array converts to another dtype through its values.
    expect(Tensor.from(BigInt64Array.from([3n, -2n]), [2], { dtype: 'float16' }).toFloat32()).toEqual(Float32Array.from([3, -2]));
  });

  it('toFloat32() converts every dtype (int64/uint64 through Number)', () => {
    const cases: [TypedArray, DType, number[]][] = [
      [Float64Array.from([1 / 3, 1e300]), 'float64', [Math.fround(1 / 3), Infinity]],
      [BigInt64Array.from([2n ** 63n - 1n, -3n]), 'int64', [2 ** 63, -3]],
      [BigUint64Array.from([2n ** 64n - 1n]), 'uint64', [2 ** 64]],
      [Uint8Array.from([1, 0]), 'bool', [1, 0]],
      [Uint8Array.from([0x38, 0xc4, 0x01, 0x7e]), 'float8_e4m3fn', [1, -3, 2 ** -9, 448]],
      [Uint8Array.from([0x3c, 0x7c, 0x01]), 'float8_e5m2', [1, Infinity, 2 ** -16]],
      [Uint16Array.from([65535]), 'uint16', [65535]], [Int16Array.from([-32768]), 'int16', [-32768]],
      [Uint32Array.from([4294967295]), 'uint32', [4294967296]],
    ];
    for (const [data, dtype, want] of cases) expect(Array.from(Tensor.from(data, [data.length], { dtype }).toFloat32()), dtype).toEqual(want);
  });

  it('reference.assertClose reads tensors at full precision, with exact entries for integers', () => {
    const t = Tensor.from(Float64Array.from([1 / 3, 2 / 3]), [2]);
    reference.assertClose(t, { data: Float64Array.from([1 / 3, 2 / 3]), shape: [2] }, { dtype: 'float64' });
    expect(reference.compareClose(t, [1 / 3 + 1e-9, 2 / 3], { dtype: 'float64' }).ok).toBe(false);
    const big = Tensor.from(BigInt64Array.from([2n ** 40n + 1n]), [1]);
    expect(reference.compareClose(big, [2 ** 40 + 1], { dtype: 'int64' }).ok).toBe(true);
    expect(reference.compareClose(big, [2 ** 40], { dtype: 'int64' }).ok).toBe(false);
    for (const dtype of DTYPES) expect(reference.TOLERANCES[dtype], dtype).toBeDefined();
  });

  it('ops keep accepting only float32, float16 and bfloat16, and say so', () => {
    for (const dtype of ['float64', 'int64', 'bool', 'float8_e4m3fn'] as const) {
      const x = Tensor.zeros([2, 3], { dtype });
      const weight = Tensor.zeros([4, 3], { dtype });
      expectError(() => lora.forward({ x, weight }), 'ERR_DTYPE',
        new RegExp(`^lora.forward: x must be of dtype float32 or float16 or bfloat16, got ${dtype}$`));
    }
  });
});

describe('Tensor on the host', () => {
  it('from() is zero-copy for matching TypedArrays and converts otherwise', () => {
    const data = new Float32Array([1, 2, 3, 4, 5, 6]);
    const t = Tensor.from(data, [2, 3]);
    data[0] = 42;
    expect(t.toFloat32()[0]).toBe(42);
    const h = Tensor.from([1, 0.5, -2], [3], { dtype: 'float16' });
    expect(h.toArray()).toEqual(Uint16Array.from([0x3c00, 0x3800, 0xc000]));
    const bf = Tensor.from([1, 0.5, -2], [3], { dtype: 'bfloat16' });
    expect(Array.from(bf.toFloat32())).toEqual([1, 0.5, -2]);
  });

  it('from() rejects a Uint16Array without a dtype and a wrong element count', () => {
    expect(() => Tensor.from(new Uint16Array(2), [2])).toThrow(LoraKernelsError);
    try {
      Tensor.from([1, 2, 3], [2, 2]);
    } catch (e) {
      expect((e as LoraKernelsError).code).toBe('ERR_SHAPE');
      expect((e as LoraKernelsError).message).toMatch(/Tensor.from: data must be 4 elements for shape \[2, 2\], got 3/);
    }
  });

  it('randn is reproducible, seed-dependent and standard normal', () => {
    const a = Tensor.randn([1001], { seed: 7 }).toFloat32();
    const b = Tensor.randn([1001], { seed: 7 }).toFloat32();
    const c = Tensor.randn([1001], { seed: 8 }).toFloat32();
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    const big = Tensor.randn([200_000], { seed: 1 }).toFloat32();
    const mean = big.reduce((s, v) => s + v, 0) / big.length;
    const variance = big.reduce((s, v) => s + (v - mean) ** 2, 0) / big.length;
    expect(Math.abs(mean)).toBeLessThan(0.01);
    expect(Math.abs(variance - 1)).toBeLessThan(0.02);
    // half dtypes hold the float32 samples rounded once
    const half = Tensor.randn([1001], { seed: 7, dtype: 'bfloat16' }).toArray();
    expect(half).toEqual(Uint16Array.from(a, floatToBFloat16));
    // float64 holds the same float32 samples, widened exactly
    expect(Tensor.randn([1001], { seed: 7, dtype: 'float64' }).toArray()).toEqual(Float64Array.from(a));
  });

  it('randn names the dtypes it supports for a storage-only dtype', () => {
    for (const dtype of DTYPES.filter((d) => !RANDN_DTYPES.includes(d))) {
      expectError(() => Tensor.randn([3], { dtype }), 'ERR_DTYPE',
        new RegExp(`^Tensor.randn: opts.dtype must be one of float32, float16, bfloat16, float64, int8, uint8, int32 \\(randn\\), got ${dtype}$`));
    }
  });

  it('dispose is idempotent and later use is ERR_DISPOSED', () => {
    const t = Tensor.randn([4]);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(() => t.toArray()).toThrow(/disposed/);
    {
      using scoped = Tensor.zeros([2]);
      expect(scoped.disposed).toBe(false);
    }
  });

  it('reshape shares storage and checks the element count', () => {
    const t = Tensor.randn([2, 6]);
    expect(t.reshape([3, 4]).toFloat32()).toEqual(t.toFloat32());
    expect(() => t.reshape([5])).toThrow(/12 elements/);
  });
});

describe.each(testDevices())('Tensor on $device', ({ device }) => {
  it.each(RANDN_DTYPES.map((d) => [d] as const))('randn(%s) on the device matches the host', (dtype: DType) => {
    const host = Tensor.randn([3, 37], { dtype, seed: 3 });
    expect(Tensor.randn([3, 37], { dtype, seed: 3, device }).toArray()).toEqual(host.toArray());
  });

  it.each(DTYPES.map((d, i) => [d, i] as const))('%s round-trips its bytes through to(), zeros, empty and reshape', (dtype: DType, seed) => {
    const data = randomStorage(dtype, 3 * 37, seed + 11);
    const host = Tensor.from(data, [3, 37], { dtype });
    const there = host.to(device);
    expect(there.device).toBe(device);
    expect(there.dtype).toBe(dtype);
    expect(bytesOf(there.toArray())).toEqual(bytesOf(data));
    expect(bytesOf(there.to(device).toArray())).toEqual(bytesOf(data));
    const back = there.to('cpu');
    expect(back.device).toBe('cpu');
    expect(bytesOf(back.toArray())).toEqual(bytesOf(data));
    expect(there.toFloat32()).toEqual(host.toFloat32());
    const reshaped = there.reshape([37, 3]);
    expect(reshaped.shape).toEqual([37, 3]);
    expect(bytesOf(reshaped.toArray())).toEqual(bytesOf(data));
    const zeros = Tensor.zeros([5], { dtype, device }).toArray();
    expect(zeros).toBeInstanceOf(STORAGE[dtype]);
    expect(bytesOf(zeros)).toEqual(new Uint8Array(zeros.byteLength));
    const empty = Tensor.empty([2, 0, 3], { dtype, device });
    expect([empty.dtype, empty.device, empty.numel, empty.toArray().length]).toEqual([dtype, device, 0, 0]);
    there.dispose();
    expect(() => there.toArray()).toThrow(LoraKernelsError);
  });

  it('an int64 beyond 2^53 and a uint64 beyond 2^63 keep every bit', () => {
    const big = BigInt64Array.from([-(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n, -1n]);
    const ubig = BigUint64Array.from([2n ** 64n - 1n, 2n ** 63n + 12345n]);
    expect(Tensor.from(big, [4]).to(device).toArray()).toEqual(big);
    expect(Tensor.from(ubig, [2]).to(device).toArray()).toEqual(ubig);
  });
});

describe('out of memory', () => {
  it('a host allocation that cannot be made is ERR_OUT_OF_MEMORY', () => {
    expect(() => Tensor.zeros([2 ** 26, 2 ** 20])).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_MEMORY' }));
  });
  it.each(testDevices().filter((d) => d.device !== 'cpu'))('a device allocation that cannot be made is ERR_OUT_OF_MEMORY on $device', ({ device }) => {
    expect(() => Tensor.empty([2 ** 46], { device })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_MEMORY' }));
  });
});

describe('without a usable CUDA device', () => {
  it('cuda tensors fail with ERR_DEVICE and the reason', () => {
    const info = backends();
    if (info.cuda.available) return;
    try {
      Tensor.zeros([2], { device: 'cuda' });
      expect.unreachable();
    } catch (e) {
      expect((e as LoraKernelsError).code).toBe('ERR_DEVICE');
      expect((e as LoraKernelsError).message).toContain(info.cuda.reason!);
    }
  });
});
