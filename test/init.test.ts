import { describe, expect, it } from 'vitest';

import { type Device, type DType, init, quant, reference, Tensor } from '../lib/index.js';
import type { LoftqResult } from '../lib/index.js';
import { NF4_CODE } from '../lib/ops/quant_tables.js';
import { testDevices } from './helpers/devices.js';
import { expectError } from './helpers/errors.js';
import { Random } from './helpers/random.js';

function onDevice(t: Tensor, device: Device): Tensor {
  return device === 'cpu' ? t : t.to(device);
}

/**
 * W = U·diag(1, 1/2, 1/3, 1/4)·V / sqrt(K) + 0.1·Z: a weight whose spectrum decays (four strong
 * directions over a noise floor), as trained weights' do, in `dtype`.
 */
function lowRankPlusNoise(n: number, k: number, seed: number, dtype: DType = 'float32'): Tensor {
  const r = 4;
  const u = Tensor.randn([n, r], { seed }).toFloat32(), v = Tensor.randn([r, k], { seed: seed + 1 }).toFloat32();
  const z = Tensor.randn([n, k], { seed: seed + 2 }).toFloat32();
  const w = new Float64Array(n * k);
  for (let i = 0; i < n; i++) {
    for (let p = 0; p < k; p++) {
      let s = 0;
      for (let j = 0; j < r; j++) s += (u[i * r + j]! * v[j * k + p]!) / (1 + j);
      w[i * k + p] = s / Math.sqrt(k) + 0.1 * z[i * k + p]!;
    }
  }
  return Tensor.from(w, [n, k], { dtype });
}

function frobenius(values: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i]! * values[i]!;
  return Math.sqrt(s);
}

/** ‖W − deq(quantize(W))‖_F / ‖W‖_F: plain quantization, no correction. */
function plainError(w: Tensor, format: 'nf4' | 'ternary', blockSize = 64): number {
  const q = format === 'nf4' ? reference.quant.nf4.quantize(w, { blockSize }) : reference.quant.ternary.quantize(w);
  const d = reference.quant.dequantize(q).data, wv = w.toFloat32();
  return frobenius(Float64Array.from(wv, (x, i) => x - d[i]!)) / frobenius(wv);
}

/** B·A [N, K] in float64 from the returned parts. */
function product(b: Tensor, a: Tensor): Float64Array {
  const [n, r] = b.shape as [number, number], k = a.shape[1]!;
  const bv = b.toFloat32(), av = a.toFloat32();
  const out = new Float64Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < r; j++) for (let p = 0; p < k; p++) out[i * k + p]! += bv[i * r + j]! * av[j * k + p]!;
  return out;
}

/** ‖W − deq(Q) − scale·B·A‖_F / ‖W‖_F in float64 from what the op returned. */
function errorOfParts(w: Tensor, got: LoftqResult, scale: number): number {
  const wv = w.toFloat32(), d = reference.quant.dequantize(got.quantized).data, ba = product(got.b, got.a);
  return frobenius(Float64Array.from(wv, (x, i) => x - d[i]! - scale * ba[i]!)) / frobenius(wv);
}

/** The result's parts have the documented shapes, dtype and device; errors one finite number per step. */
function expectParts(got: LoftqResult, w: Tensor, rank: number, format: 'nf4' | 'ternary', iters: number): void {
  const [n, k] = w.shape as [number, number];
  expect(got.quantized.format).toBe(format);
  expect(got.quantized.shape).toEqual([n, k]);
  expect(got.quantized.dtype).toBe(w.dtype);
  expect(got.quantized.device).toBe(w.device);
  expect(got.a.shape).toEqual([rank, k]);
  expect(got.b.shape).toEqual([n, rank]);
  for (const t of [got.a, got.b]) {
    expect(t.dtype).toBe(w.dtype);
    expect(t.device).toBe(w.device);
  }
  expect(got.errors).toHaveLength(iters);
  for (const e of got.errors) expect(Number.isFinite(e)).toBe(true);
}

/**
 * A float32 weight whose quantization error is exactly a rank-r matrix L (up to W's own float32
 * rounding) with max |L| = amplitude·(the smallest scale), and L itself.
 * NF4 (blockSize 64): every block's absmax sits where L is zero: in one of the columns {0, 31, 62}
 * (any 64 consecutive elements of a row-major [N, 93] weight meet one of them) or in the last row
 * (the short last block may lie in it alone); elsewhere
 * |L| ≤ 0.005·absmax moves x/absmax by less than the 0.04 to the nearest NF4 midpoint, so
 * quantize(W) has the codes and absmax of quantize(W − L).
 * Ternary: W = s·T + L with T = ±1 everywhere and ⟨T, L⟩ = 0, so mean |W| = s and
 * (s·T + L)/s rounds back to T while |L| < s/2.
 */
function weightWithRankRError(format: 'nf4' | 'ternary', n: number, k: number, rank: number, amplitude: number, seed: number): { w: Tensor; low: Float64Array } {
  const rng = new Random(seed);
  const b0 = Float64Array.from({ length: n * rank }, () => rng.uniform() * 2 - 1);
  const a0 = Float64Array.from({ length: rank * k }, () => rng.uniform() * 2 - 1);
  const base = new Float64Array(n * k);
  let smallest: number;
  if (format === 'nf4') {
    const anchors = [0, 31, 62];
    for (let j = 0; j < rank; j++) for (const c of anchors) a0[j * k + c] = 0;
    for (let j = 0; j < rank; j++) b0[(n - 1) * rank + j] = 0;
    const free = (e: number) => anchors.includes(e % k) || e >= (n - 1) * k;
    // Random codes, then each block's first free element at ±absmax (code 0 or 15).
    const blockSize = 64, blocks = Math.ceil((n * k) / blockSize);
    const absmax = Float64Array.from({ length: blocks }, () => Math.fround(0.5 + rng.uniform()));
    for (let e = 0; e < n * k; e++) base[e] = Math.fround(NF4_CODE[1 + rng.int(14)]! * absmax[Math.floor(e / blockSize)]!);
    for (let blk = 0; blk < blocks; blk++) {
      let e = blk * blockSize;
      while (!free(e)) e++;
      if (Math.floor(e / blockSize) !== blk) throw new Error(`weightWithRankRError: block ${blk} has no element where L is zero`);
      base[e] = rng.uniform() < 0.5 ? -absmax[blk]! : absmax[blk]!;
    }
    smallest = Math.min(...absmax);
  } else {
    const s = Math.fround(0.75);
    const t = Float64Array.from({ length: n * k }, () => (rng.uniform() < 0.5 ? -1 : 1));
    for (let e = 0; e < n * k; e++) base[e] = s * t[e]!;
    // ⟨T, B0·A0⟩ = Σ_j ⟨T·A0[j]ᵀ, B0[:, j]⟩: make each B0 column orthogonal to its T·A0[j]ᵀ.
    for (let j = 0; j < rank; j++) {
      const c = new Float64Array(n);
      for (let i = 0; i < n; i++) for (let p = 0; p < k; p++) c[i]! += t[i * k + p]! * a0[j * k + p]!;
      let cb = 0, cc = 0;
      for (let i = 0; i < n; i++) {
        cb += c[i]! * b0[i * rank + j]!;
        cc += c[i]! * c[i]!;
      }
      for (let i = 0; i < n; i++) b0[i * rank + j]! -= (cb / cc) * c[i]!;
    }
    smallest = s;
  }
  const low = new Float64Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < rank; j++) for (let p = 0; p < k; p++) low[i * k + p]! += b0[i * rank + j]! * a0[j * k + p]!;
  const peak = Math.max(...low.map(Math.abs));
  if (peak > 0) for (let e = 0; e < n * k; e++) low[e] = (low[e]! * amplitude * smallest) / peak;
  const w = Float32Array.from(base, (x, e) => x + low[e]!);
  return { w: Tensor.from(w, [n, k]), low };
}

const CASES = [
  { format: 'nf4' as const, n: 67, k: 93, rank: 3, blockSize: 64 },
  { format: 'nf4' as const, n: 93, k: 67, rank: 8, blockSize: 32 },
  { format: 'ternary' as const, n: 67, k: 93, rank: 8, blockSize: undefined },
  { format: 'ternary' as const, n: 93, k: 67, rank: 3, blockSize: undefined },
];

describe.each(testDevices())('init.loftq on $device', ({ device }) => {
  it.each(CASES)('$format, rank $rank, [$n, $k]: errors, the parts that make them, and the exact-SVD reference', ({ format, n, k, rank, blockSize }) => {
    const iters = 3;
    const w = lowRankPlusNoise(n, k, 11 + rank);
    const opts = { rank, format, iters, ...(blockSize ? { blockSize } : {}) };
    const got = init.loftq(onDevice(w, device), opts);
    expectParts(got, onDevice(w, device), rank, format, iters);
    // The correction helps: one step beats quantization alone.
    expect(got.errors[0]).toBeLessThan(plainError(w, format, blockSize));
    // The reported error is the returned parts' (B·A recomputed here in float64; the op's is a float32 GEMM).
    expect(Math.abs(errorOfParts(w, got, 1) - got.errors[iters - 1]!)).toBeLessThan(1e-6 * got.errors[iters - 1]!);
    const want = reference.init.loftq(w, opts);
    // Step 1 quantizes W itself in both, so the exact truncated SVD is optimal (Eckart–Young) and
    // the randomized one may only fall short by its excess on this nearly flat quantization-noise
    // spectrum: measured ≤ 1.5e-4 relative on these four cases, bounded at 1e-3.
    expect(got.errors[0]).toBeGreaterThanOrEqual(want.errors[0]! * (1 - 1e-6));
    expect(got.errors[0]).toBeLessThanOrEqual(want.errors[0]! * (1 + 1e-3));
    // Later steps quantize slightly different residuals (a few codes flip), so the two runs drift
    // apart either way: measured ≤ 1.3e-3 relative, bounded at 1e-2.
    for (let t = 1; t < iters; t++) expect(Math.abs(got.errors[t]! - want.errors[t]!)).toBeLessThanOrEqual(1e-2 * want.errors[t]!);
  });

  it('scale ≠ 1 splits the same correction: scale·B·A and the errors are those of scale 1', () => {
    const w = lowRankPlusNoise(67, 93, 5);
    const one = init.loftq(onDevice(w, device), { rank: 3, format: 'nf4', iters: 2 });
    const scaled = init.loftq(onDevice(w, device), { rank: 3, format: 'nf4', iters: 2, scale: 2.5 });
    for (let t = 0; t < 2; t++) expect(Math.abs(scaled.errors[t]! - one.errors[t]!)).toBeLessThan(1e-5 * one.errors[t]!);
    expect(Math.abs(errorOfParts(w, scaled, 2.5) - scaled.errors[1]!)).toBeLessThan(1e-6 * scaled.errors[1]!);
    const want = product(one.b, one.a);
    reference.assertClose(product(scaled.b, scaled.a).map((x) => 2.5 * x), want, { dtype: 'float32' });
    // B and A carry sqrt(Σ/scale) each: neither takes the whole scale.
    expect(frobenius(scaled.b.toFloat32()) / frobenius(one.b.toFloat32())).toBeCloseTo(1 / Math.sqrt(2.5), 4);
  });

  it.each(['float16', 'bfloat16'] as const)('a %s weight: parts in its dtype, errors of the rounded parts, close to the reference', (dtype) => {
    const w = lowRankPlusNoise(67, 93, 3, dtype);
    const opts = { rank: 8, format: 'nf4' as const, iters: 2 };
    const got = init.loftq(onDevice(w, device), opts);
    expectParts(got, onDevice(w, device), 8, 'nf4', 2);
    expect(got.errors[0]).toBeLessThan(plainError(w, 'nf4'));
    expect(Math.abs(errorOfParts(w, got, 1) - got.errors[1]!)).toBeLessThan(1e-6 * got.errors[1]!);
    // B and A are rounded to the dtype in both runs, so Eckart–Young no longer orders the two
    // exactly: measured ≤ 9.2e-4 relative apart, bounded at 1e-2.
    const want = reference.init.loftq(w, opts);
    for (let t = 0; t < 2; t++) expect(Math.abs(got.errors[t]! - want.errors[t]!)).toBeLessThanOrEqual(1e-2 * want.errors[t]!);
    // Dequantize defaults to the weight's dtype.
    expect(quant.nf4.dequantize(got.quantized as Parameters<typeof quant.nf4.dequantize>[0]).dtype).toBe(dtype);
  });

  it.each(['nf4', 'ternary'] as const)('%s: a quantization error of exactly rank r is removed by the first step', (format) => {
    const rank = 3, scale = 2;
    const { w, low } = weightWithRankRError(format, 67, 93, rank, format === 'nf4' ? 0.005 : 0.3, 21);
    const plain = plainError(w, format);
    expect(plain).toBeGreaterThan(1e-3);
    const got = init.loftq(onDevice(w, device), { rank, format, iters: 2, scale });
    // What is left is float32 rounding: W's own, E's and the GEMMs' (~1e-7 of ‖W‖).
    for (const e of got.errors) expect(e).toBeLessThan(1e-5);
    reference.assertClose(product(got.b, got.a).map((x) => scale * x), low, { dtype: 'float32' });
    expect(reference.init.loftq(w, { rank, format, iters: 1, scale }).errors[0]).toBeLessThan(1e-6);
  });

  it.each(['nf4', 'ternary'] as const)('%s: a weight the format holds exactly has error 0 and a zero correction (no 0/0)', (format) => {
    const { w } = weightWithRankRError(format, 67, 93, 3, 0, 4);
    const got = init.loftq(onDevice(w, device), { rank: 3, format, iters: 2 });
    expect(got.errors).toEqual([0, 0]);
    expect(Array.from(got.a.toFloat32()).every((x) => x === 0)).toBe(true);
    expect(Array.from(got.b.toFloat32()).every((x) => x === 0)).toBe(true);
    const zero = init.loftq(onDevice(Tensor.zeros([5, 7]), device), { rank: 2, format, iters: 1 });
    expect(zero.errors).toEqual([0]);
  });

  it('rank = min(N, K) (also N or K = 1): the sample covers the whole range and the correction is all of E', () => {
    const w = Tensor.randn([9, 13], { seed: 2 });
    const got = init.loftq(onDevice(w, device), { rank: 9, format: 'ternary', iters: 2 });
    expect(plainError(w, 'ternary')).toBeGreaterThan(0.1);
    for (const e of got.errors) expect(e).toBeLessThan(1e-5);
    for (const shape of [[1, 37], [37, 1]]) {
      const line = Tensor.randn(shape, { seed: 3 });
      const one = init.loftq(onDevice(line, device), { rank: 1, format: 'nf4', blockSize: 32, iters: 1 });
      expect(plainError(line, 'nf4', 32)).toBeGreaterThan(1e-2);
      expect(one.errors[0]).toBeLessThan(1e-5);
    }
  });

  it('bad input is a typed error naming the argument', () => {
    const w = onDevice(Tensor.randn([9, 13], { seed: 1 }), device);
    const ok = { rank: 2, format: 'nf4' as const };
    const call = (weight: unknown, opts: unknown) => () => init.loftq(weight as Tensor, opts as typeof ok);
    expectError(call(w.toFloat32(), ok), 'ERR_ARGUMENT', /^init\.loftq: weight must be a Tensor, got a Float32Array$/);
    expectError(call(onDevice(Tensor.randn([9, 13], { dtype: 'int8' }), device), ok), 'ERR_DTYPE', /weight must be of dtype float32 or float16 or bfloat16, got int8/);
    expectError(call(onDevice(Tensor.randn([117]), device), ok), 'ERR_SHAPE', /weight\.shape must be \[N, K\] with N, K ≥ 1, got \[117\]/);
    expectError(call(w, undefined), 'ERR_ARGUMENT', /opts must be an object with rank and format, got undefined/);
    expectError(call(w, { ...ok, rank: 0 }), 'ERR_ARGUMENT', /opts\.rank must be an integer from 1 to min\(N, K\) = 9, got number 0/);
    expectError(call(w, { ...ok, rank: 10 }), 'ERR_ARGUMENT', /opts\.rank must be an integer from 1 to min\(N, K\) = 9, got number 10/);
    expectError(call(w, { ...ok, rank: 1.5 }), 'ERR_ARGUMENT', /opts\.rank .* got number 1\.5/);
    expectError(call(w, { ...ok, format: 'int4' }), 'ERR_ARGUMENT', /opts\.format must be 'nf4' or 'ternary', got the string "int4"/);
    expectError(call(w, { ...ok, iters: 0 }), 'ERR_ARGUMENT', /opts\.iters must be an integer ≥ 1, got number 0/);
    expectError(call(w, { ...ok, blockSize: 48 }), 'ERR_ARGUMENT', /opts\.blockSize must be a power of two from 32 to 4096, got number 48/);
    expectError(call(w, { rank: 2, format: 'ternary', blockSize: 64 }), 'ERR_ARGUMENT', /opts\.blockSize must be undefined for format 'ternary'/);
    for (const scale of [0, -1, NaN]) {
      expectError(call(w, { ...ok, scale }), 'ERR_ARGUMENT', /opts\.scale must be a positive finite number/);
    }
    const gone = onDevice(Tensor.randn([9, 13]), device);
    gone.dispose();
    expectError(call(gone, ok), 'ERR_DISPOSED', /weight must be a live tensor/);
  });
});

/** residual + scale·b·a [N, K] in float64 from what init.pissa returned. */
function reassembled(got: { a: Tensor; b: Tensor; residual: Tensor }, scale: number): Float64Array {
  const ba = product(got.b, got.a), residual = got.residual.toFloat32();
  return Float64Array.from(residual, (x, e) => x + scale * ba[e]!);
}

describe.each(testDevices())('init.pissa on $device', ({ device }) => {
  const expectPissaParts = (got: { a: Tensor; b: Tensor; residual: Tensor }, w: Tensor, rank: number) => {
    const [n, k] = w.shape as [number, number];
    expect(got.a.shape).toEqual([rank, k]);
    expect(got.b.shape).toEqual([n, rank]);
    expect(got.residual.shape).toEqual([n, k]);
    for (const t of [got.a, got.b, got.residual]) {
      expect(t.dtype).toBe(w.dtype);
      expect(t.device).toBe(device);
    }
  };

  it.each([
    { n: 37, k: 29, rank: 4, scale: 1 },
    { n: 29, k: 41, rank: 4, scale: 2.5 },
    { n: 23, k: 31, rank: 1, scale: 0.5 },
  ])('exact, [$n, $k], rank $rank, scale $scale: the reference\'s parts; residual + scale·b·a = W', ({ n, k, rank, scale }) => {
    const w = lowRankPlusNoise(n, k, 40 + n);
    const got = init.pissa(onDevice(w, device), { rank, scale });
    expectPissaParts(got, w, rank);
    const want = reference.init.pissa(w, { rank, scale });
    reference.assertClose(reassembled(got, scale), w, { dtype: 'float32', label: 'residual + scale·b·a' });
    reference.assertClose(got.residual, want.residual, { dtype: 'float32', label: 'residual' });
    reference.assertClose(product(got.b, got.a), product(Tensor.from(want.b.data, [n, rank]), Tensor.from(want.a.data, [rank, k])), { dtype: 'float32', label: 'b·a' });
    // b = U·sqrt(S/scale), a = sqrt(S/scale)·Vh: column j of b and row j of a both have norm sqrt(σ_j/scale).
    const sigma = reference.linalg.svd(w).s.data, bv = got.b.toFloat32(), av = got.a.toFloat32();
    for (let j = 0; j < rank; j++) {
      const expected = Math.sqrt(sigma[j]! / scale);
      expect(frobenius(Array.from({ length: n }, (_, i) => bv[i * rank + j]!))).toBeCloseTo(expected, 5);
      expect(frobenius(av.subarray(j * k, (j + 1) * k))).toBeCloseTo(expected, 5);
    }
  });

  it.each(['float16', 'bfloat16'] as const)('a %s weight: parts in its dtype, close to the reference, residual + scale·b·a = W to its rounding', (dtype) => {
    const w = lowRankPlusNoise(33, 27, 9, dtype);
    const got = init.pissa(onDevice(w, device), { rank: 4, scale: 2 });
    expectPissaParts(got, w, 4);
    reference.assertClose(reassembled(got, 2), w, { dtype, label: 'residual + scale·b·a' });
    const want = reference.init.pissa(w, { rank: 4, scale: 2 });
    reference.assertClose(got.residual, want.residual, { dtype, label: 'residual' });
  });

  it('randomized on a low-rank-plus-noise weight: residual within 2% of the exact one\'s, residual + scale·b·a = W', () => {
    const w = lowRankPlusNoise(67, 93, 13);
    const opts = { rank: 4, scale: 1.5, method: 'randomized' as const, iters: 2, seed: 5 };
    const got = init.pissa(onDevice(w, device), opts);
    expectPissaParts(got, w, 4);
    reference.assertClose(reassembled(got, 1.5), w, { dtype: 'float32', label: 'residual + scale·b·a' });
    const exact = frobenius(reference.init.pissa(w, opts).residual.data);
    const residual = frobenius(got.residual.toFloat32());
    expect(residual).toBeGreaterThanOrEqual(exact * (1 - 1e-5));
    expect(residual).toBeLessThanOrEqual(exact * (1 + reference.LINALG_TOLERANCES.lowRankExcess));
    // The seed fixes the result.
    expect(Array.from(init.pissa(onDevice(w, device), opts).a.toFloat32())).toEqual(Array.from(got.a.toFloat32()));
  });

  it('a zero weight gives zero parts and a zero residual', () => {
    const got = init.pissa(Tensor.zeros([6, 5], { device }), { rank: 2 });
    for (const t of [got.a, got.b, got.residual]) expect(Array.from(t.toFloat32()).every((x) => x === 0)).toBe(true);
  });

  it('bad input is a typed error naming the argument', () => {
    const w = onDevice(Tensor.randn([9, 13], { seed: 1 }), device);
    const call = (weight: unknown, opts: unknown) => () => init.pissa(weight as Tensor, opts as { rank: number });
    expectError(call(w.toFloat32(), { rank: 2 }), 'ERR_ARGUMENT', /^init\.pissa: weight must be a Tensor, got a Float32Array$/);
    expectError(call(onDevice(Tensor.randn([9, 13], { dtype: 'int8' }), device), { rank: 2 }), 'ERR_DTYPE', /weight must be of dtype float32 or float16 or bfloat16, got int8/);
    expectError(call(onDevice(Tensor.randn([2, 9, 13]), device), { rank: 2 }), 'ERR_SHAPE', /weight\.shape must be \[N, K\] with N, K ≥ 1, got \[2, 9, 13\]/);
    expectError(call(w, 3), 'ERR_ARGUMENT', /opts must be an object with rank, got number 3/);
    expectError(call(w, { rank: 10 }), 'ERR_ARGUMENT', /opts\.rank must be an integer from 1 to min\(N, K\) = 9, got number 10/);
    expectError(call(w, { rank: 2, scale: 0 }), 'ERR_ARGUMENT', /opts\.scale must be a positive finite number/);
    expectError(call(w, { rank: 2, method: 'svd' }), 'ERR_ARGUMENT', /opts\.method must be 'exact' or 'randomized', got the string "svd"/);
    expectError(call(w, { rank: 2, iters: 3 }), 'ERR_ARGUMENT', /opts\.iters must be undefined for method 'exact', got number 3/);
    expectError(call(w, { rank: 2, method: 'randomized', iters: -1 }), 'ERR_ARGUMENT', /opts\.iters must be an integer ≥ 0/);
    expectError(call(w, { rank: 2, method: 'randomized', seed: 0.5 }), 'ERR_ARGUMENT', /opts\.seed must be a safe integer/);
  });
});
