/**
 * quant.int8 (BitNet b1.58's per-token int8 activation quantizer) on every backend: codes and
 * scales byte for byte those of reference.quant.int8 (so the CPU and CUDA write the same bytes),
 * dequantize exactly the reference's float32 values rounded once to the dtype, hand-checked
 * roundings (the float32 product x·s, then half to even), the non-finite rows, quant.matmul's
 * `activations: 'int8'` against the reference and against its own composition, and typed errors.
 */
import { describe, expect, it } from 'vitest';

import { type Device, type DType, type Int8Activations, quant, type QuantizedTensor, reference, Tensor } from '../lib/index.js';
import { compareClose } from '../lib/reference/tolerance.js';
import { poisoned, testDevices } from './helpers/devices.js';
import { expectError } from './helpers/errors.js';
import { Random } from './helpers/random.js';

const FLOATS = ['float32', 'float16', 'bfloat16'] as const;
const NAN_BITS = 0x7fc00000;

const onDevice = (t: Tensor, device: Device) => (device === 'cpu' ? t : t.to(device));

/** Rows of uniform values whose magnitudes span 1e-3 … 1e3 by row (each row its own scale). */
function randomRows(shape: number[], seed: number): Float32Array {
  const random = new Random(seed);
  const k = shape[shape.length - 1]!;
  const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let row = 0; row < values.length / k; row++) {
    const magnitude = 10 ** (random.uniform() * 6 - 3);
    for (let c = 0; c < k; c++) values[row * k + c] = (random.uniform() * 2 - 1) * magnitude;
  }
  return values;
}

function scaleBits(t: Tensor): number[] {
  return Array.from(new Uint32Array(t.toFloat32().slice().buffer));
}

function codes(t: Tensor): number[] {
  return Array.from(t.toArray() as Int8Array);
}

/** Output tensors full of poison: codes 0x5A, NaN scales. */
function poisonedOut(shape: number[], device: Device): { values: Tensor; scales: Tensor } {
  const k = shape[shape.length - 1]!;
  const count = shape.reduce((a, b) => a * b, 1);
  return {
    values: onDevice(Tensor.from(new Int8Array(count).fill(0x5a), shape, { dtype: 'int8' }), device),
    scales: poisoned([count / k], 'float32', device),
  };
}

/** Codes and scale bits identical to the reference's. */
function expectSameQuantized(got: Int8Activations, want: Int8Activations): void {
  expect(got.values.dtype).toBe('int8');
  expect(got.values.shape).toEqual(want.values.shape);
  expect(got.scales.shape).toEqual(want.scales.shape);
  expect(scaleBits(got.scales)).toEqual(scaleBits(want.scales));
  expect(codes(got.values)).toEqual(codes(want.values));
}

/** The reference's float32 values rounded once to the dtype, storage for storage (NaN as NaN: its bits differ by backend). */
function expectExactDequantize(got: Tensor, q: Int8Activations, dtype: DType): void {
  const want = reference.quant.int8.dequantize(q);
  expect(got.dtype).toBe(dtype);
  expect(got.shape).toEqual(want.shape);
  const wantStorage = Tensor.from(want.data, want.shape, { dtype }).toArray();
  const gotStorage = got.toArray();
  const gotValues = got.toFloat32();
  let mismatch = -1;
  for (let i = 0; i < wantStorage.length && mismatch < 0; i++) {
    const same = Number.isNaN(want.data[i]!) ? Number.isNaN(gotValues[i]!) : gotStorage[i] === wantStorage[i];
    if (!same) mismatch = i;
  }
  expect(mismatch, mismatch >= 0 ? `element ${mismatch}: got ${gotValues[mismatch]}, want ${want.data[mismatch]}` : '').toBe(-1);
}

describe.each(testDevices())('quant.int8 on $device', ({ device }) => {
  const float32Row = (values: number[]) => onDevice(Tensor.from(Float32Array.from(values), [1, values.length]), device);

  describe.each(FLOATS)('%s x', (dtype) => {
    it.each([[[1, 37]], [[5, 130]], [[3, 2, 77]]])('codes and scales of %j are the reference\'s bytes; dequantize exact', async (shape) => {
      const seed = shape.reduce((a, b) => a * 31 + b, FLOATS.indexOf(dtype));
      const host = Tensor.from(randomRows(shape, seed), shape, { dtype });
      const x = onDevice(host, device);
      const want = reference.quant.int8.quantize(host);
      const out = poisonedOut(shape, device);
      const q = quant.int8.quantize(x, { out });
      expect(q.values).toBe(out.values);
      expect(q.scales).toBe(out.scales);
      expectSameQuantized(q, want);
      expectSameQuantized(await quant.int8.quantizeAsync(x), want);
      for (const to of FLOATS) {
        const target = poisoned(shape, to, device);
        expect(quant.int8.dequantize(q, { out: target })).toBe(target);
        expectExactDequantize(target, want, to);
      }
      expectExactDequantize(quant.int8.dequantize(q), want, 'float32');
      expectExactDequantize(await quant.int8.dequantizeAsync(q, { dtype }), want, dtype);
    });
  });

  it('rounds the float32 product x·s half to even: 1.5/127 → 2 where x·127 is 1.49999999 exactly, 4.5/127 → 4 where it is 4.5000002', () => {
    // Max 1: s = 127 exactly. fp32(fp32(t / 127)·127) = t for these t although the exact products
    // are not t: a fused or float64 product would round them to 0, 1, 3, 5, 7.
    const f = Math.fround;
    const x = float32Row([1, -1, f(0.5 / 127), f(1.5 / 127), f(3.5 / 127), f(4.5 / 127), f(6.5 / 127), -f(1.5 / 127), 0.5, -0.5, 0.25]);
    const q = quant.int8.quantize(x);
    expect(scaleBits(q.scales)).toEqual(scaleBits(Tensor.from([127], [1])));
    expect(codes(q.values)).toEqual([127, -127, 0, 2, 4, 4, 6, -2, 64, -64, 32]);
  });

  it('exact ties at s = 128 (max 127/128) go to the even code; the max gives 127 and −max −127', () => {
    const x = float32Row([127 / 128, -127 / 128, 1 / 256, 3 / 256, 5 / 256, 7 / 256, -1 / 256, -3 / 256, -5 / 256, 253 / 256, 0]);
    const q = quant.int8.quantize(x);
    expect(q.scales.toFloat32()[0]).toBe(128);
    expect(codes(q.values)).toEqual([127, -127, 0, 2, 2, 4, 0, -2, -2, 126, 0]);
  });

  it('the max rounds to 127 whether fp32(max·s) lands below, on or above 127 (max 3, 0.3, 1.1), never clamped', () => {
    for (const m of [3, 0.3, 1.1]) {
      const host = Tensor.from(Float32Array.from([m, -m, m / 2]), [1, 3]);
      const q = quant.int8.quantize(onDevice(host, device));
      expect(q.scales.toFloat32()[0]).toBe(Math.fround(127 / Math.fround(m)));
      expect(codes(q.values).slice(0, 2)).toEqual([127, -127]);
      expectSameQuantized(q, reference.quant.int8.quantize(host));
    }
  });

  it('a row whose max is below 1e-5 uses 1e-5: s = fp32(127 / 1e-5), zeros give code 0', () => {
    const q = quant.int8.quantize(onDevice(Tensor.from(Float32Array.from([0, 0, 0, 1e-7, -4e-7, 0]), [2, 3]), device));
    const s = Math.fround(127 / Math.fround(1e-5));
    expect(Array.from(q.scales.toFloat32())).toEqual([s, s]);
    // 1e-7·1.27e7 = 1.27 → 1; −4e-7·1.27e7 = −5.08 → −5.
    expect(codes(q.values)).toEqual([0, 0, 0, 1, -5, 0]);
    expect(Array.from(quant.int8.dequantize(q).toFloat32())).toEqual([0, 0, 0, Math.fround(1 / s), Math.fround(-5 / s), 0]);
  });

  it('non-finite rows: a NaN (any payload) gives s = NaN (0x7fc00000) and codes 0, ±inf s = 0 and codes 0; dequantize is NaN there, other rows untouched', () => {
    const bits = new Uint32Array([
      0x3f800000, 0xffc00001, 0x40000000, // 1, −NaN with a payload, 2
      0x7f800000, 0x3f800000, 0xff800000, // inf, 1, −inf
      0x7f800000, 0x7fc00000, 0x3f800000, // inf and NaN: NaN wins
      0x3f800000, 0xbf000000, 0x00000000, // 1, −0.5, 0: finite
    ]);
    const host = Tensor.from(new Float32Array(bits.buffer), [4, 3]);
    const q = quant.int8.quantize(onDevice(host, device));
    expect(scaleBits(q.scales)).toEqual([NAN_BITS, 0, NAN_BITS, 0x42fe0000]);
    expect(codes(q.values)).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 127, -64, 0]);
    expectSameQuantized(q, reference.quant.int8.quantize(host));
    const xHat = Array.from(quant.int8.dequantize(q).toFloat32());
    expect(xHat.slice(0, 9).every(Number.isNaN)).toBe(true);
    expect(xHat.slice(9)).toEqual([1, Math.fround(-64 / 127), 0]);

    // The same inside the CPU kernel's vector body (K = 37): a NaN at column 3, an inf at 17.
    const long = randomRows([3, 37], 7);
    long[3] = NaN;
    long[37 + 17] = -Infinity;
    const longHost = Tensor.from(long, [3, 37]);
    const longQ = quant.int8.quantize(onDevice(longHost, device));
    expect(scaleBits(longQ.scales).slice(0, 2)).toEqual([NAN_BITS, 0]);
    expect(codes(longQ.values).slice(0, 74).every((c) => c === 0)).toBe(true);
    expectSameQuantized(longQ, reference.quant.int8.quantize(longHost));
  });

  it('x with zero rows gives empty codes and scales', () => {
    const q = quant.int8.quantize(onDevice(Tensor.from([], [0, 7]), device));
    expect(q.values.shape).toEqual([0, 7]);
    expect(q.scales.shape).toEqual([0]);
    expect(quant.int8.dequantize(q, { dtype: 'bfloat16' }).shape).toEqual([0, 7]);
  });

  it('typed errors name the argument', () => {
    const x = onDevice(Tensor.from(new Float32Array(6), [2, 3]), device);
    expectError(() => quant.int8.quantize(onDevice(Tensor.from(new Int32Array(6), [2, 3], { dtype: 'int32' }), device)), 'ERR_DTYPE', /quant\.int8\.quantize: x must be of dtype float32 or float16 or bfloat16, got int32/);
    expectError(() => quant.int8.quantize(onDevice(Tensor.from([], [2, 0]), device)), 'ERR_SHAPE', /x\.shape must be \[\.\.\., K\] with K ≥ 1, got \[2, 0\]/);
    expectError(() => quant.int8.quantize(x, { out: { values: Tensor.empty([3, 2], { dtype: 'int8', device }) } }), 'ERR_SHAPE', /opts\.out\.values\.shape must be \[2, 3\], got \[3, 2\]/);
    expectError(() => quant.int8.quantize(x, { out: { scales: Tensor.empty([3], { device }) } }), 'ERR_SHAPE', /opts\.out\.scales\.shape must be \[2\], got \[3\]/);
    expectError(() => quant.int8.quantize(x, { out: { values: Tensor.empty([2, 3], { dtype: 'uint8', device }) } }), 'ERR_DTYPE', /opts\.out\.values must be of dtype int8, got uint8/);
    const q = quant.int8.quantize(x);
    expectError(() => quant.int8.dequantize(q, { out: Tensor.empty([2, 4], { device }) }), 'ERR_SHAPE', /opts\.out\.shape must be \[2, 3\], got \[2, 4\]/);
    expectError(() => quant.int8.dequantize(q, { dtype: 'float16', out: Tensor.empty([2, 3], { device }) }), 'ERR_DTYPE', /opts\.out must be float16 like opts\.dtype, got float32/);
    expectError(() => quant.int8.dequantize({ values: q.values, scales: Tensor.empty([3], { device }) }), 'ERR_SHAPE', /q\.scales\.shape must be \[2\], got \[3\]/);
    expectError(() => quant.int8.dequantize({ values: x, scales: q.scales }), 'ERR_DTYPE', /q\.values must be of dtype int8, got float32/);
    expectError(() => quant.int8.dequantize(q, { dtype: 'int8' as 'float32' }), 'ERR_DTYPE', /opts\.dtype must be float32 or float16 or bfloat16/);
  });
});

// ---- quant.matmul({ activations: 'int8' }) ----------------------------------------------------------------
type Format = 'nf4' | 'ternary';

function weightOf(format: Format, n: number, k: number, device: Device, seed: number): QuantizedTensor {
  const w = Tensor.randn([n, k], { seed });
  const q = format === 'ternary' ? quant.ternary.quantize(w) : quant.nf4.quantize(w, { blockSize: 64 });
  return device === 'cpu' ? q : quant.to(q, device);
}

describe.each(testDevices())('quant.matmul activations: int8 on $device', ({ device }) => {
  const cases = (['nf4', 'ternary'] as Format[]).flatMap((format) => FLOATS.flatMap((dtype) =>
    [[1], [4, 5]].map((lead) => ({ format, dtype, lead }))));

  it.each(cases)('$format, $dtype x, leading dims $lead (K 77, N 45, r 3): the reference on x̂, and bit for bit matmul on dequantize(quantize(x))', async ({ format, dtype, lead }) => {
    const k = 77, n = 45, r = 3;
    const seed = lead.length * 100 + FLOATS.indexOf(dtype) * 10 + (format === 'nf4' ? 1 : 2);
    const host = (shape: number[], s: number, std = 1) => Tensor.from(Tensor.randn(shape, { seed: s }).toFloat32().map((v) => v * std), shape, { dtype });
    const xHost = host([...lead, k], seed), aHost = host([r, k], seed + 1, 0.1), bHost = host([n, r], seed + 2, 0.1), biasHost = host([n], seed + 3);
    const weight = weightOf(format, n, k, device, seed + 4);
    const [x, a, b, bias] = [xHost, aHost, bHost, biasHost].map((t) => onDevice(t, device)) as [Tensor, Tensor, Tensor, Tensor];
    const out = poisoned([...lead, n], dtype, device);
    const y = quant.matmul({ x, weight, a, b, bias, scale: 0.5, activations: 'int8', out });
    expect(y).toBe(out);
    const inputs = { x: xHost, weight, a: aHost, b: bHost, bias: biasHost, scale: 0.5 };
    reference.assertClose(y, reference.quant.matmul({ ...inputs, activations: 'int8' }), { dtype });
    if (dtype === 'float32') {
      // The option is not a no-op: the unquantized layer is far outside float32's tolerance.
      expect(compareClose(y, reference.quant.matmul(inputs), { dtype }).ok).toBe(false);
    }
    const xHat = quant.int8.dequantize(quant.int8.quantize(x), { dtype });
    const composed = quant.matmul({ x: xHat, weight, a, b, bias, scale: 0.5 });
    expect(y.toArray()).toEqual(composed.toArray());
    const yAsync = await quant.matmulAsync({ x, weight, a, b, bias, scale: 0.5, activations: 'int8' });
    expect(yAsync.toArray()).toEqual(composed.toArray());
    // x itself is left as it was.
    expect(x.toArray()).toEqual(xHost.toArray());
  });

  it('activations must be float or int8', () => {
    const weight = weightOf('ternary', 5, 7, device, 1);
    const x = onDevice(Tensor.from(new Float32Array(14), [2, 7]), device);
    expectError(() => quant.matmul({ x, weight, activations: 'int4' as 'int8' }), 'ERR_ARGUMENT', /quant\.matmul: activations must be 'float' or 'int8', got/);
    expect(Array.from(quant.matmul({ x, weight, activations: 'float' }).toFloat32())).toEqual(new Array(10).fill(0));
  });
});
