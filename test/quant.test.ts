import { describe, expect, it } from 'vitest';

import { type Device, type DType, type Nf4Tensor, quant, reference, Tensor, type TernaryTensor } from '../lib/index.js';
import { DYNAMIC_MAP, NF4_CODE } from '../lib/ops/quant_tables.js';
import { testDevices } from './helpers/devices.js';
import { expectError } from './helpers/errors.js';

// ---- float32 helpers ---------------------------------------------------------------------------------
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The next float32 above v (v finite, v ≠ −0). */
function nextUp(v: number): number {
  f32[0] = v;
  if (v === 0) u32[0] = 1;
  else u32[0] = v > 0 ? u32[0]! + 1 : u32[0]! - 1;
  return f32[0]!;
}

/**
 * FORMATS.md's 15 NF4 thresholds as bitsandbytes' kernel compiles them (each decimal rounded straight
 * to float32), written out here rather than imported.
 */
const MIDPOINTS = Array.from(new Float32Array(Uint32Array.from([
  0xbf591cd9, 0xbf1c5270, 0xbeeb8480, 0xbeadea76, 0xbe703cec, 0xbe0d38bc, 0xbd3a7871, 0x3d22faff,
  0x3df64863, 0x3e5067e0, 0x3e9582d4, 0x3ec753f9, 0x3f006d03, 0x3f248daf, 0x3f5c89d9,
]).buffer));

function onDevice(t: Tensor, device: Device): Tensor {
  return device === 'cpu' ? t : t.to(device);
}

function bytes(t: Tensor): number[] {
  return Array.from(t.toArray() as Uint8Array);
}

/** Every part of two NF4 weights is identical: packed bytes, absmax bits, nested codes, offset. */
function expectSameNf4(got: Nf4Tensor, want: Nf4Tensor): void {
  expect(got.format).toBe('nf4');
  expect(got.shape).toEqual(want.shape);
  expect(got.blockSize).toBe(want.blockSize);
  expect(bytes(got.packed)).toEqual(bytes(want.packed));
  if (want.absmax instanceof Tensor) {
    expect(got.absmax).toBeInstanceOf(Tensor);
    expect(Array.from((got.absmax as Tensor).toFloat32())).toEqual(Array.from(want.absmax.toFloat32()));
  } else {
    const g = got.absmax as Exclude<Nf4Tensor['absmax'], Tensor>;
    expect(g.offset).toBe(want.absmax.offset);
    expect(bytes(g.code)).toEqual(bytes(want.absmax.code));
    expect(Array.from(g.nestedAbsmax.toFloat32())).toEqual(Array.from(want.absmax.nestedAbsmax.toFloat32()));
    expect(Array.from(g.nestedCode.toFloat32())).toEqual(Array.from(DYNAMIC_MAP));
  }
}

/** A dequantized tensor holds exactly the reference's float32 values, rounded once to its dtype. */
function expectExactDequantize(got: Tensor, q: Nf4Tensor | TernaryTensor, dtype: DType): void {
  const want = reference.quant.dequantize(q);
  expect(got.dtype).toBe(dtype);
  expect(got.shape).toEqual([...q.shape]);
  const wantStorage = Tensor.from(want.data, want.shape, { dtype }).toArray();
  const gotStorage = got.toArray();
  let mismatch = -1;
  for (let i = 0; i < wantStorage.length && mismatch < 0; i++) if (!Object.is(gotStorage[i], wantStorage[i])) mismatch = i;
  expect(mismatch, mismatch >= 0 ? `element ${mismatch}: got ${gotStorage[mismatch]}, want ${wantStorage[mismatch]}` : '').toBe(-1);
}

describe.each(testDevices())('quant.nf4 on $device', ({ device, emulated }) => {
  const fromValues = (values: number[], shape: number[], dtype: DType = 'float32') => onDevice(Tensor.from(values, shape, { dtype }), device);

  it('a value on a midpoint takes the LOWER code, the next float32 above it the upper one (absmax 1: x·(1/1) = x)', () => {
    // Block of 32: 1.0 (absmax, code 15), −1.0 (code 0), then the 15 midpoints and the float32 just above each.
    const values = [1, -1];
    for (const m of MIDPOINTS) values.push(m, nextUp(m));
    const q = quant.nf4.quantize(fromValues(values, [1, 32]), { blockSize: 32 });
    const codes = [15, 0, ...MIDPOINTS.flatMap((_, i) => [i, i + 1])];
    const expected = Array.from({ length: 16 }, (_, j) => (codes[2 * j]! << 4) | codes[2 * j + 1]!);
    expect(bytes(q.packed)).toEqual(expected);
    expect(Array.from((q.absmax as Tensor).toFloat32())).toEqual([1]);
    expectSameNf4(q, reference.quant.nf4.quantize(Tensor.from(values, [1, 32]), { blockSize: 32 }));
  });

  it('the decimal thresholds, not the rounded midpoints: fp32((c[i] + c[i+1]) / 2) takes the upper code for i = 0, 12, 14', () => {
    const roundedMidpoints = [0, 8, 12, 14].map((i) => Math.fround((NF4_CODE[i]! + NF4_CODE[i + 1]!) / 2));
    roundedMidpoints.forEach((m, j) => expect(m).not.toBe(MIDPOINTS[[0, 8, 12, 14][j]!]));
    const values = [1, -1, ...roundedMidpoints, ...new Array(26).fill(0)];
    const q = quant.nf4.quantize(fromValues(values, [1, 32]), { blockSize: 32 });
    expect(bytes(q.packed).slice(0, 3)).toEqual([(15 << 4) | 0, (1 << 4) | 8, (13 << 4) | 15]);
    expectSameNf4(q, reference.quant.nf4.quantize(Tensor.from(values, [1, 32]), { blockSize: 32 }));
  });

  it('double quantization: an absmax exactly on a dynamic-map midpoint takes the EVEN code (bitsandbytes\' 8-bit search)', () => {
    // Blocks of 32 with absmax 0, 2, 1 + M, 1 − M: offset 1 exactly, absmax − offset = −1, 1, M, −M,
    // nested absmax 1, so the encoder sees M itself: a midpoint between an odd code c and c + 1 with
    // 1 + M exact in float32.
    let c = 1, m = 0;
    for (; c < 255; c += 2) {
      m = Math.fround(Math.fround(DYNAMIC_MAP[c]! + DYNAMIC_MAP[c + 1]!) * 0.5);
      if (Math.abs(m) >= 0.5 && Math.fround(1 + m) === 1 + m) break;
    }
    expect(c).toBeLessThan(255);
    const values = new Array(4 * 32).fill(0);
    [0, 2, 1 + m, 1 - m].forEach((a, b) => (values[32 * b] = a));
    const q = quant.nf4.quantize(fromValues(values, [4, 32]), { blockSize: 32, doubleQuant: true });
    const nested = q.absmax as Exclude<Nf4Tensor['absmax'], Tensor>;
    expect(nested.offset).toBe(1);
    expect(Array.from(nested.nestedAbsmax.toFloat32())).toEqual([1]);
    expect(bytes(nested.code)[2]).toBe(c + 1);
    expectSameNf4(q, reference.quant.nf4.quantize(Tensor.from(values, [4, 32]), { blockSize: 32, doubleQuant: true }));
  });

  it('scales by the float32 reciprocal, not by a division: absmax 3', () => {
    // x·fp32(1/3) lands just above the midpoint between codes 7 and 8, x/3 exactly on it.
    const absmax = 3, x = Math.fround(0.11937045305967331);
    expect(Math.fround(x / absmax)).toBe(MIDPOINTS[7]);
    expect(Math.fround(x * Math.fround(1 / absmax))).toBeGreaterThan(MIDPOINTS[7]!);
    const q = quant.nf4.quantize(fromValues([absmax, x, -x, ...new Array(29).fill(0)], [2, 16]), { blockSize: 32 });
    // 3 → 15, x → 8 (a division would give 7), −x → 7 (just above the −0.0455 threshold: 7 either way)
    expect(bytes(q.packed).slice(0, 2)).toEqual([(15 << 4) | 8, (7 << 4) | 7]);
  });

  it('an all-zero block gives 0x77 bytes, absmax 0 and exact zeros back; −0.0 is a zero', () => {
    const values = [...new Array(32).fill(-0), 0.5, -0, ...new Array(30).fill(0)];
    const q = quant.nf4.quantize(fromValues(values, [2, 32]), { blockSize: 32 });
    const packed = bytes(q.packed);
    expect(packed.slice(0, 16)).toEqual(new Array(16).fill(0x77));
    // second block: 0.5 is its absmax (code 15), −0.0 and the zeros code 7
    expect(packed.slice(16)).toEqual([0xf7, ...new Array(15).fill(0x77)]);
    expect(Array.from((q.absmax as Tensor).toFloat32())).toEqual([0, 0.5]);
    const back = quant.nf4.dequantize(q).toFloat32();
    expect(Array.from(back)).toEqual([...new Array(32).fill(0), 0.5, ...new Array(31).fill(0)]);
  });

  it('an odd element count leaves 7 in the last byte\'s low nibble; tail blocks take their own absmax', () => {
    // 3 × 5 = 15 elements in blocks of 32: one partial block; 3 × 50 = 150 in blocks of 64: a 22-element tail.
    const w = Tensor.randn([3, 5], { seed: 3 });
    const q = quant.nf4.quantize(onDevice(w, device), { blockSize: 32 });
    const packed = bytes(q.packed);
    expect(packed.length).toBe(8);
    expect(packed[7]! & 15).toBe(7);
    expectSameNf4(q, reference.quant.nf4.quantize(w, { blockSize: 32 }));
    const tail = Tensor.randn([3, 50], { seed: 4 });
    const qt = quant.nf4.quantize(onDevice(tail, device));
    const values = tail.toFloat32();
    expect((qt.absmax as Tensor).toFloat32()[2]).toBe(Math.max(...Array.from(values.slice(128), Math.abs)));
    expectSameNf4(qt, reference.quant.nf4.quantize(tail));
  });

  it.each([32, 64, 128, 256, 512, 1024, 2048, 4096])('block size %i: the reference\'s bytes, with and without double quantization', (blockSize) => {
    const shape = emulated ? [3, 1100] : [7, 1500];
    const w = Tensor.randn(shape, { seed: blockSize });
    for (const doubleQuant of [false, true]) {
      const q = quant.nf4.quantize(onDevice(w, device), { blockSize, doubleQuant });
      expectSameNf4(q, reference.quant.nf4.quantize(w, { blockSize, doubleQuant }));
      expectExactDequantize(quant.nf4.dequantize(q), q, 'float32');
    }
  });

  it('double quantization of > 256 blocks: the reference\'s bytes, and absmax back within half a step of the dynamic map', () => {
    // 300 × 64 / 32 = 600 blocks: three nested blocks, the last one partial; rows of mixed magnitude.
    const base = Tensor.randn([300, 64], { seed: 9 }).toFloat32();
    const w = Tensor.from(base.map((v, i) => v * (1 + Math.floor(i / 64) % 7)), [300, 64]);
    const q = quant.nf4.quantize(onDevice(w, device), { blockSize: 32, doubleQuant: true });
    const want = reference.quant.nf4.quantize(w, { blockSize: 32, doubleQuant: true });
    expectSameNf4(q, want);
    const plain = (reference.quant.nf4.quantize(w, { blockSize: 32 }).absmax as Tensor).toFloat32();
    const nested = q.absmax as Exclude<Nf4Tensor['absmax'], Tensor>;
    const code = nested.code.toArray() as Uint8Array, nestedAbsmax = nested.nestedAbsmax.toFloat32();
    const back = reference.quant.nf4.absmax(q);
    // FORMATS.md's formula in float64: nestedCode[q]·nestedAbsmax[i / 256] + offset.
    const maxHalfGap = Math.max(...Array.from({ length: 255 }, (_, i) => (DYNAMIC_MAP[i + 1]! - DYNAMIC_MAP[i]!) / 2));
    for (let i = 0; i < plain.length; i++) {
      const formula = DYNAMIC_MAP[code[i]!]! * nestedAbsmax[i >> 8]! + nested.offset;
      const product = DYNAMIC_MAP[code[i]!]! * nestedAbsmax[i >> 8]!;
      // two float32 roundings: of the product, then of the sum
      expect(Math.abs(back[i]! - formula)).toBeLessThanOrEqual(2 ** -24 * (Math.abs(product) + Math.abs(back[i]!)));
      // nearest code: within half the map's largest step of absmax − offset (plus float32 rounding)
      expect(Math.abs(formula - plain[i]!)).toBeLessThanOrEqual(maxHalfGap * nestedAbsmax[i >> 8]! * (1 + 1e-6) + 1e-6 * (plain[i]! + nested.offset));
    }
    expectExactDequantize(quant.nf4.dequantize(q), q, 'float32');
  });

  it.each(['float16', 'bfloat16'] as const)('a %s weight: the bytes of its float32 values, remembered as the default dtype', (dtype) => {
    const w = Tensor.randn([5, 77], { dtype, seed: 12 });
    const q = quant.nf4.quantize(onDevice(w, device), { doubleQuant: true });
    expect(q.dtype).toBe(dtype);
    expectSameNf4(q, reference.quant.nf4.quantize(w, { doubleQuant: true }));
    expectExactDequantize(quant.nf4.dequantize(q), q, dtype);
  });

  it.each(['float32', 'float16', 'bfloat16'] as const)('dequantize to %s: code·absmax in float32, rounded once; out= and Async', async (dtype) => {
    const w = Tensor.randn([9, 96], { seed: 21 }).toFloat32().map((v) => v * 300);  // |w| up to ~10³: float16 keeps 0.5 steps there
    const q = quant.nf4.quantize(onDevice(Tensor.from(w, [9, 96]), device), { blockSize: 32 });
    expectExactDequantize(quant.nf4.dequantize(q, { dtype }), q, dtype);
    const out = onDevice(Tensor.zeros([9, 96], { dtype }), device);
    expect(quant.nf4.dequantize(q, { out })).toBe(out);
    expectExactDequantize(out, q, dtype);
    expectExactDequantize(await quant.nf4.dequantizeAsync(q, { dtype }), q, dtype);
  });

  it('quantizeAsync gives the bytes of quantize', async () => {
    const w = onDevice(Tensor.randn([6, 70], { seed: 5 }), device);
    expectSameNf4(await quant.nf4.quantizeAsync(w, { blockSize: 128, doubleQuant: true }), quant.nf4.quantize(w, { blockSize: 128, doubleQuant: true }));
  });
});

describe.each(testDevices())('quant.ternary on $device', ({ device }) => {
  const fromValues = (values: number[], shape: number[]) => onDevice(Tensor.from(values, shape), device);

  it('absmean scale, round half to even, clamp to ±1, four codes per byte (element k at bits 2·(k % 4))', () => {
    // mean |w| = 16 / 8 = 2: 7/2 = 3.5 → +1, 1/2 = 0.5 → 0 (half to even), 0 → 0, −7 → −1.
    const q = quant.ternary.quantize(fromValues([7, 1, 0, 0, -1, -7, 0, 0], [1, 8]));
    expect(q.scale).toBe(2);
    expect(bytes(q.packed)).toEqual([2 | 1 << 2 | 1 << 4 | 1 << 6, 1 | 0 << 2 | 1 << 4 | 1 << 6]);
    // Just above half: the same scale (2 + 2^-23·… rounds to 2 in float32), codes ±1.
    const up = nextUp(1);
    const q2 = quant.ternary.quantize(fromValues([7, up, 0, 0, -up, -7, 0, 0], [1, 8]));
    expect(q2.scale).toBe(2);
    expect(bytes(q2.packed)).toEqual([2 | 2 << 2 | 1 << 4 | 1 << 6, 0 | 0 << 2 | 1 << 4 | 1 << 6]);
    expect(Array.from(quant.ternary.dequantize(q2).toFloat32())).toEqual([2, 2, 0, 0, -2, -2, 0, 0]);
  });

  it('scales by the float32 reciprocal, not by a division (BitNet\'s w·(1/scale)): mean 25, w one ulp above 12.5', () => {
    // fp32(1/25) is just below 0.04: w·(1/25) rounds to 0.5 exactly (half to even → 0), w/25 to the float above (→ +1).
    const w = nextUp(12.5);
    expect(Math.fround(w / 25)).toBeGreaterThan(0.5);
    expect(Math.fround(w * Math.fround(1 / 25))).toBe(0.5);
    const q = quant.ternary.quantize(fromValues([w, 37.5], [1, 2]));  // Σ|w| = 50 + 2^-20: mean 25 in float32
    expect(q.scale).toBe(25);
    expect(bytes(q.packed)).toEqual([1 | 2 << 2 | 1 << 4 | 1 << 6]);
  });

  it('rows of K not a multiple of 4 are padded with code 1; an all-zero weight takes the eps scale', () => {
    const q = quant.ternary.quantize(fromValues([5, -5, 0, 5, -5], [1, 5]));
    expect(q.packed.shape).toEqual([1, 2]);
    expect(bytes(q.packed)[1]).toBe(0 | 1 << 2 | 1 << 4 | 1 << 6);
    const zero = quant.ternary.quantize(fromValues([0, -0, 0], [3, 1]), { eps: 0.25 });
    expect(zero.scale).toBe(0.25);
    expect(bytes(zero.packed)).toEqual([0x55, 0x55, 0x55]);
  });

  it.each(['float32', 'float16', 'bfloat16'] as const)('%s: the reference\'s scale and bytes; dequantize exact; Async', async (dtype) => {
    const w = Tensor.randn([37, 203], { dtype, seed: 6 });
    const q = quant.ternary.quantize(onDevice(w, device));
    const want = reference.quant.ternary.quantize(w);
    expect(q.scale).toBe(want.scale);
    expect(q.dtype).toBe(dtype);
    expect(bytes(q.packed)).toEqual(bytes(want.packed));
    expectExactDequantize(quant.ternary.dequantize(q), q, dtype);
    expectExactDequantize(await quant.ternary.dequantizeAsync(q, { dtype: 'float32' }), q, 'float32');
    const again = await quant.ternary.quantizeAsync(onDevice(w, device), { eps: 1e-5 });
    expect(bytes(again.packed)).toEqual(bytes(want.packed));
  });

  it('I2_S: weight j of a 128-block in byte j % 32 at shift 6 − 2·(j / 32), then the float32 scale; round trip', () => {
    // [2, 160] = 320 elements: two whole blocks and a padded third.
    const values = Array.from({ length: 320 }, (_, e) => [1, 0, -1][e % 3]!);
    const q = quant.ternary.quantize(fromValues(values, [2, 160]));
    const i2s = quant.ternary.toI2S(q);
    const data = i2s.toArray() as Uint8Array;
    expect(data.length).toBe(3 * 32 + 32);
    const codeAt = (e: number) => (data[Math.floor(e / 128) * 32 + (e % 128) % 32]! >> (6 - 2 * Math.floor((e % 128) / 32))) & 3;
    for (let e = 0; e < 384; e++) expect(codeAt(e), `element ${e}`).toBe(e < 320 ? [2, 1, 0][e % 3] : 1);
    expect(new DataView(data.buffer, data.byteOffset).getFloat32(96, true)).toBe(q.scale);
    const back = quant.ternary.fromI2S(i2s, [2, 160], { device });
    expect(back.scale).toBe(q.scale);
    expect(back.device).toBe(device);
    expect(bytes(back.packed)).toEqual(bytes(q.packed));
    // Code 3 (never written) reads as 0.
    const threes = quant.ternary.fromI2S(Uint8Array.from([...new Array(32).fill(0xff), 0, 0, 0x80, 0x3f]), [1, 128]);
    expect(Array.from(quant.ternary.dequantize(threes).toFloat32())).toEqual(new Array(128).fill(0));
  });

  it('I2_S export of a random weight imports back to the same weight', () => {
    const q = quant.ternary.quantize(onDevice(Tensor.randn([7, 45], { seed: 8 }), device));
    const back = quant.ternary.fromI2S(quant.ternary.toI2S(q).toArray() as Uint8Array, [7, 45], { dtype: 'bfloat16' });
    expect(back.dtype).toBe('bfloat16');
    expect(bytes(back.packed)).toEqual(bytes(q.packed));
  });
});

describe('quant quantize / dequantize reject bad input with a code and a message naming the argument', () => {
  const w = Tensor.randn([4, 64], { seed: 1 });
  const q = quant.nf4.quantize(w);
  const qd = quant.nf4.quantize(w, { doubleQuant: true });
  const t = quant.ternary.quantize(w);
  const nested = qd.absmax as Exclude<Nf4Tensor['absmax'], Tensor>;
  const cases: [string, () => unknown, string, RegExp][] = [
    ['block size 16', () => quant.nf4.quantize(w, { blockSize: 16 }), 'ERR_ARGUMENT', /quant.nf4.quantize: opts.blockSize must be a power of two from 32 to 4096, got number 16/],
    ['block size 48', () => quant.nf4.quantize(w, { blockSize: 48 }), 'ERR_ARGUMENT', /opts.blockSize must be a power of two from 32 to 4096, got number 48/],
    ['block size 8192', () => quant.nf4.quantize(w, { blockSize: 8192 }), 'ERR_ARGUMENT', /opts.blockSize .* got number 8192/],
    ['block size string', () => quant.nf4.quantize(w, { blockSize: '64' as never }), 'ERR_ARGUMENT', /opts.blockSize .* got the string "64"/],
    ['doubleQuant number', () => quant.nf4.quantize(w, { doubleQuant: 1 as never }), 'ERR_ARGUMENT', /quant.nf4.quantize: opts.doubleQuant must be a boolean, got number 1/],
    ['w not a tensor', () => quant.nf4.quantize(new Float32Array(4) as never), 'ERR_ARGUMENT', /quant.nf4.quantize: w must be a Tensor, got a Float32Array/],
    ['w 1-D', () => quant.nf4.quantize(Tensor.zeros([64])), 'ERR_SHAPE', /quant.nf4.quantize: w.shape must be \[N, K\] with N, K ≥ 1, got \[64\]/],
    ['w empty', () => quant.ternary.quantize(Tensor.zeros([0, 4])), 'ERR_SHAPE', /quant.ternary.quantize: w.shape must be \[N, K\] with N, K ≥ 1, got \[0, 4\]/],
    ['w int8', () => quant.nf4.quantize(Tensor.zeros([2, 32], { dtype: 'int8' })), 'ERR_DTYPE', /w must be of dtype float32 or float16 or bfloat16, got int8/],
    ['eps 0', () => quant.ternary.quantize(w, { eps: 0 }), 'ERR_ARGUMENT', /quant.ternary.quantize: opts.eps must be a positive number, got 0/],
    ['eps NaN', () => quant.ternary.quantize(w, { eps: NaN }), 'ERR_ARGUMENT', /quant.ternary.quantize: opts.eps must be a finite number, got number NaN/],
    ['opts not an object', () => quant.nf4.quantize(w, 64 as never), 'ERR_ARGUMENT', /quant.nf4.quantize: opts must be an object of options, got number 64/],
    ['dequantize a ternary as nf4', () => quant.nf4.dequantize(t as never), 'ERR_ARGUMENT', /quant.nf4.dequantize: q must be an Nf4Tensor .* got a quantized weight of format ternary/],
    ['dequantize a plain tensor', () => quant.ternary.dequantize(w as never), 'ERR_ARGUMENT', /quant.ternary.dequantize: q must be a TernaryTensor .* got an object with format undefined/],
    ['absmax too short', () => quant.nf4.dequantize({ ...q, absmax: Tensor.zeros([3]) }), 'ERR_SHAPE', /q.absmax.shape must be \[4\], got \[3\]/],
    ['absmax float16', () => quant.nf4.dequantize({ ...q, absmax: Tensor.zeros([4], { dtype: 'float16' }) }), 'ERR_DTYPE', /q.absmax must be float32, got float16/],
    ['packed wrong length', () => quant.nf4.dequantize({ ...q, packed: Tensor.zeros([127], { dtype: 'uint8' }) }), 'ERR_SHAPE', /q.packed.shape must be \[128\], got \[127\]/],
    ['packed int8', () => quant.ternary.dequantize({ ...t, packed: Tensor.zeros([4, 16], { dtype: 'int8' }) }), 'ERR_DTYPE', /q.packed must be uint8, got int8/],
    ['shape mismatch', () => quant.nf4.dequantize({ ...q, shape: [4, 63] }), 'ERR_SHAPE', /q.packed.shape must be \[126\], got \[128\]/],
    ['shape not 2-D', () => quant.nf4.dequantize({ ...q, shape: [256] as never }), 'ERR_SHAPE', /q.shape must be \[N, K\] with N, K ≥ 1, got \[256\]/],
    ['block size of a weight', () => quant.nf4.dequantize({ ...q, blockSize: 100 }), 'ERR_ARGUMENT', /q.blockSize must be a power of two from 32 to 4096, got number 100/],
    ['nested code missing', () => quant.nf4.dequantize({ ...qd, absmax: { ...nested, code: undefined as never } }), 'ERR_ARGUMENT', /q.absmax.code must be a Tensor, got undefined/],
    ['nested map short', () => quant.nf4.dequantize({ ...qd, absmax: { ...nested, nestedCode: Tensor.zeros([255]) } }), 'ERR_SHAPE', /q.absmax.nestedCode.shape must be \[256\], got \[255\]/],
    ['nested offset NaN', () => quant.nf4.dequantize({ ...qd, absmax: { ...nested, offset: NaN } }), 'ERR_ARGUMENT', /q.absmax.offset must be a finite number, got number NaN/],
    ['ternary scale missing', () => quant.ternary.dequantize({ ...t, scale: undefined as never }), 'ERR_ARGUMENT', /q.scale must be a finite number, got undefined/],
    ['dtype of a weight', () => quant.nf4.dequantize({ ...q, dtype: 'int8' as never }), 'ERR_DTYPE', /q.dtype must be float32 or float16 or bfloat16, got the string "int8"/],
    ['device field wrong', () => quant.nf4.dequantize({ ...q, device: 'cuda' }), 'ERR_DEVICE', /q.device must be cpu, where its packed codes are, got the string "cuda"/],
    ['disposed part', () => { const a = Tensor.zeros([4]); a.dispose(); return quant.nf4.dequantize({ ...q, absmax: a }); }, 'ERR_DISPOSED', /q.absmax must be a live tensor/],
    ['dequantize dtype int8', () => quant.nf4.dequantize(q, { dtype: 'int8' as never }), 'ERR_DTYPE', /quant.nf4.dequantize: opts.dtype must be float32 or float16 or bfloat16, got the string "int8"/],
    ['out shape', () => quant.nf4.dequantize(q, { out: Tensor.zeros([4, 63]) }), 'ERR_SHAPE', /opts.out.shape must be \[4, 64\], got \[4, 63\]/],
    ['out dtype vs dtype', () => quant.nf4.dequantize(q, { dtype: 'float16', out: Tensor.zeros([4, 64]) }), 'ERR_DTYPE', /opts.out must be float16 like opts.dtype, got float32/],
    ['fromI2S short', () => quant.ternary.fromI2S(new Uint8Array(40), [2, 128]), 'ERR_FORMAT', /quant.ternary.fromI2S: data must hold 64 bytes of I2_S blocks for \[2, 128\] and a float32 scale after them, got 40 bytes/],
    ['fromI2S float data', () => quant.ternary.fromI2S(Tensor.zeros([64]) as never, [1, 128]), 'ERR_ARGUMENT', /data must be a uint8 Tensor or a Uint8Array, got a float32 Tensor/],
    ['fromI2S shape', () => quant.ternary.fromI2S(new Uint8Array(64), [128] as never), 'ERR_SHAPE', /quant.ternary.fromI2S: shape must be \[N, K\] with N, K ≥ 1, got \[128\]/],
    ['fromI2S NaN scale', () => quant.ternary.fromI2S(Uint8Array.from([...new Array(32).fill(0x55), 0, 0, 0xc0, 0x7f]), [1, 128]), 'ERR_FORMAT', /the scale after the I2_S blocks must be a finite float32, got NaN/],
  ];
  it.each(cases)('%s', (_name, fn, code, pattern) => expectError(fn, code, pattern));

  it('the Async forms reject (do not throw synchronously)', async () => {
    await expect(quant.nf4.quantizeAsync(w, { blockSize: 100 })).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
    await expect(quant.ternary.dequantizeAsync(q as never)).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
  });

  it('parts on different devices are ERR_DEVICE', () => {
    if (!testDevices().some((d) => d.device === 'cuda')) return;
    expectError(() => quant.nf4.dequantize({ ...q, absmax: (q.absmax as Tensor).to('cuda') }), 'ERR_DEVICE', /q.absmax must be on cpu like the weight's packed codes, got cuda/);
  });

  it('the addon itself rejects descriptors whose buffers do not fit (memory safety)', async () => {
    const { native } = await import('../lib/native.js');
    const desc = (data: ArrayBufferView, shape: number[], dtype: number) => ({ dtype, shape, data });
    const weight = { format: 0 as const, n: 4, k: 64, blockSize: 64, packed: desc(new Uint8Array(128), [128], 4), absmax: desc(new Float32Array(4), [4], 0) };
    const call = (fn: () => void) => {
      try {
        fn();
      } catch (error) {
        return error as { code?: string; message: string };
      }
      return undefined;
    };
    const out = desc(new Float32Array(256), [4, 64], 0);
    expect(call(() => native().quantDequantize({ weight: { ...weight, packed: desc(new Uint8Array(100), [100], 4) }, out })))
      .toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/quant.dequantize: weight.packed must hold 128 elements, got 100/) });
    expect(call(() => native().quantDequantize({ weight: { ...weight, blockSize: 16 }, out })))
      .toMatchObject({ code: 'ERR_ARGUMENT', message: expect.stringMatching(/weight.blockSize must be an integer in \[32, 4096\]/) });
    expect(call(() => native().quantDequantize({ weight, out: desc(new Float32Array(200), [4, 50], 0) })))
      .toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/out must hold N·K elements/) });
    expect(call(() => native().nf4Quantize({ w: desc(new Float32Array(256), [4, 64], 0), blockSize: 64, doubleQuant: false, packed: desc(new Uint8Array(64), [64], 4), absmax: desc(new Float32Array(4), [4], 0) })))
      .toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/packed must hold 128 elements/) });
  });
});
