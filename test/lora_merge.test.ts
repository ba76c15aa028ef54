/**
 * lora.compress and lora.merge on every backend: the re-ranked product b'·a' against the float64
 * reference (the formed product's truncated SVD), Eckart–Young optimality, the even √σ split, a
 * full rank that keeps the product, half dtypes, and typed errors.
 */
import { describe, expect, it } from 'vitest';

import { type Device, type DType, lora, type LoraFactors, reference, type RefTensor, Tensor } from '../lib/index.js';
import { testDevices } from './helpers/devices.js';
import { expectError } from './helpers/errors.js';

const TOL = reference.LINALG_TOLERANCES;

const onDevice = (t: Tensor, device: Device) => (device === 'cpu' ? t : t.to(device));

/** An adapter a [r, K], b [N, r] of `dtype` with a decaying spectrum (column j of b scaled by 0.6^j). */
function adapter(n: number, k: number, r: number, seed: number, dtype: DType, device: Device): LoraFactors {
  const a = Tensor.randn([r, k], { seed }).toFloat32();
  const b = Tensor.randn([n, r], { seed: seed + 1 }).toFloat32().map((x, e) => x * 0.6 ** (e % r));
  return { a: onDevice(Tensor.from(a, [r, k], { dtype }), device), b: onDevice(Tensor.from(b, [n, r], { dtype }), device) };
}

/** b·a [N, K] in float64. */
function productOf(b: Tensor | RefTensor, a: Tensor | RefTensor): Float64Array {
  const values = (t: Tensor | RefTensor) => ('data' in t ? t.data : t.toFloat32());
  const [n, r] = b.shape as [number, number], k = a.shape[1]!;
  const bv = values(b), av = values(a);
  const out = new Float64Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < r; j++) for (let p = 0; p < k; p++) out[i * k + p]! += bv[i * r + j]! * av[j * k + p]!;
  return out;
}

function frob(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return Math.sqrt(s);
}

/** Shapes, dtype and device of the result; its product close to the reference's; the √σ split even. */
function expectRanked(got: LoraFactors, want: { a: RefTensor; b: RefTensor }, like: LoraFactors, rank: number): void {
  const n = like.b.shape[0]!, k = like.a.shape[1]!, dtype = like.a.dtype;
  expect(got.a.shape).toEqual([rank, k]);
  expect(got.b.shape).toEqual([n, rank]);
  for (const t of [got.a, got.b]) {
    expect(t.dtype).toBe(dtype);
    expect(t.device).toBe(like.a.device);
  }
  reference.assertClose(productOf(got.b, got.a), productOf(want.b, want.a), { dtype: dtype as DType, label: `b'·a'` });
  // b' = U·√σ and a' = √σ·Vh: column j of b' and row j of a' have the same norm, √σ_j.
  const bv = got.b.toFloat32(), av = got.a.toFloat32();
  for (let j = 0; j < rank; j++) {
    const bn = frob(Array.from({ length: n }, (_, i) => bv[i * rank + j]!)), an = frob(av.subarray(j * k, (j + 1) * k));
    expect(Math.abs(bn - an)).toBeLessThanOrEqual(dtype === 'float32' ? 1e-5 * an : 2e-2 * an);
  }
}

describe.each(testDevices())('lora.compress / lora.merge on $device', ({ device }) => {
  it.each(['float32', 'float16', 'bfloat16'] as const)('compress a %s adapter of rank 6 to 3: the reference\'s best rank-3 product', (dtype) => {
    const ad = adapter(29, 37, 6, 3, dtype, device);
    const got = lora.compress(ad, 3);
    const want = reference.lora.compress(ad, 3);
    expectRanked(got, want, ad, 3);
    // Eckart–Young: the error is that of the dropped singular values.
    const full = productOf(ad.b, ad.a), approx = productOf(got.b, got.a);
    const sigma = reference.linalg.svd({ data: full, shape: [29, 37] }).s.data;
    const optimal = Math.sqrt(sigma.slice(3).reduce((s, x) => s + x * x, 0));
    const error = frob(Float64Array.from(full, (x, e) => x - approx[e]!));
    expect(Math.abs(error - optimal)).toBeLessThanOrEqual(dtype === 'float32' ? 1e-4 * optimal : 3e-2 * frob(full));
  });

  it('compress to the full rank keeps the product; r above N or K is capped at min(N, K, r)', () => {
    const ad = adapter(17, 23, 5, 8, 'float32', device);
    const same = lora.compress(ad, 5);
    const full = productOf(ad.b, ad.a);
    expect(frob(Float64Array.from(full, (x, e) => x - productOf(same.b, same.a)[e]!))).toBeLessThanOrEqual(TOL.reconstruction * frob(full));
    const wide = adapter(4, 30, 9, 2, 'float32', device);
    const four = lora.compress(wide, 4);
    const product = productOf(wide.b, wide.a);
    expect(frob(Float64Array.from(product, (x, e) => x - productOf(four.b, four.a)[e]!))).toBeLessThanOrEqual(TOL.reconstruction * frob(product));
    expectError(() => lora.compress(wide, 5), 'ERR_ARGUMENT', /^lora\.compress: rank must be an integer from 1 to min\(N, K, r\) = 4, got number 5/);
  });

  it.each(['float32', 'bfloat16'] as const)('merge three %s adapters with weights: the reference\'s best rank-5 product of Σ w·b·a', (dtype) => {
    const ads = [adapter(31, 26, 2, 10, dtype, device), adapter(31, 26, 3, 20, dtype, device), adapter(31, 26, 4, 30, dtype, device)];
    const weights = [1, -0.5, 2];
    const got = lora.merge(ads, weights, 5);
    expectRanked(got, reference.lora.merge(ads, weights, 5), ads[0]!, 5);
  });

  it('merge at rank Σr is the weighted sum exactly (to float32)', () => {
    const ads = [adapter(19, 21, 2, 1, 'float32', device), adapter(19, 21, 3, 2, 'float32', device)];
    const got = lora.merge(ads, [0.25, 3], 5);
    const want = productOf(ads[0]!.b, ads[0]!.a).map((x, e) => 0.25 * x + 3 * productOf(ads[1]!.b, ads[1]!.a)[e]!);
    expect(frob(Float64Array.from(want, (x, e) => x - productOf(got.b, got.a)[e]!))).toBeLessThanOrEqual(TOL.reconstruction * frob(want));
  });

  it('bad arguments are typed errors naming them', () => {
    const one = adapter(9, 8, 3, 1, 'float32', device), other = adapter(9, 7, 2, 2, 'float32', device);
    expectError(() => lora.compress({ a: one.a, b: other.b }, 2), 'ERR_SHAPE', /^lora\.compress: adapter\.b\.shape must be \[N, 3\] \(N ≥ 1, r of adapter\.a\), got \[9, 2\]/);
    expectError(() => lora.compress({ a: one.a.toFloat32() } as unknown as LoraFactors, 2), 'ERR_ARGUMENT', /adapter\.a must be a Tensor, got a Float32Array/);
    expectError(() => lora.compress(one, 0), 'ERR_ARGUMENT', /rank must be an integer from 1 to min\(N, K, r\) = 3, got number 0/);
    expectError(() => lora.compress({ a: Tensor.randn([3, 8], { dtype: 'int8' }), b: one.b }, 2), 'ERR_DTYPE', /adapter\.a must be of dtype float32 or float16 or bfloat16, got int8/);
    expectError(() => lora.merge([], [], 1), 'ERR_ARGUMENT', /^lora\.merge: adapters must be a non-empty array of \{ a, b \}, got an array of length 0/);
    expectError(() => lora.merge([one, other], [1, 1], 2), 'ERR_SHAPE', /adapters\[1\]\.a\.shape must be \[r, 8\] \(r ≥ 1, K of adapters\[0\]\), got \[2, 7\]/);
    expectError(() => lora.merge([one, one], [1], 2), 'ERR_ARGUMENT', /weights must be an array of 2 numbers \(one per adapter\), got an array of length 1/);
    expectError(() => lora.merge([one, one], [1, NaN], 2), 'ERR_ARGUMENT', /weights\[1\] must be a finite number, got number NaN/);
    expectError(() => lora.merge([one, one], [1, 1], 7), 'ERR_ARGUMENT', /rank must be an integer from 1 to min\(N, K, Σr\) = 6, got number 7/);
    const half = adapter(9, 8, 3, 1, 'float16', device);
    expectError(() => lora.merge([one, half], [1, 1], 2), 'ERR_DTYPE', /adapters\[1\]\.a must be float32 like adapters\[0\]\.a, got float16/);
  });
});
