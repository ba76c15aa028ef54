import { describe, expect, it } from 'vitest';

import { reference, Tensor } from '../lib/index.js';

describe('reference.assertClose', () => {
  const expected = { data: Float64Array.from([1, -2, 3, 1e-9, 0]), shape: [5] };
  it('accepts results within the dtype tolerance', () => {
    reference.assertClose([1 + 1e-6, -2, 3, 0, 1e-6], expected, { dtype: 'float32' });
    reference.assertClose([1.001, -2.002, 3, 0, 0], expected, { dtype: 'float16' });
  });
  it('rejects a single wrong element, NaN for a number and a length mismatch', () => {
    expect(() => reference.assertClose([1, -2, 3.01, 0, 0], expected, { dtype: 'float32' })).toThrow(/element 2/);
    expect(() => reference.assertClose([1, -2, 3, NaN, 0], expected, { dtype: 'bfloat16' })).toThrow(/element 3/);
    expect(() => reference.assertClose([1, -2, 3], expected, { dtype: 'float32' })).toThrow(/length/);
    expect(() => reference.assertClose([1, 2, 3, 0, 0], expected, { dtype: 'bfloat16' })).toThrow(/not close/);
  });
  it('requires NaN where NaN is expected', () => {
    const withNaN = { data: Float64Array.from([NaN, 1]), shape: [2] };
    reference.assertClose([NaN, 1], withNaN, { dtype: 'float32' });
    expect(() => reference.assertClose([0, 1], withNaN, { dtype: 'float32' })).toThrow(/expected NaN/);
  });
});

describe('reference.lora.forward', () => {
  it('computes a small case worked by hand', () => {
    const x = Tensor.from([1, 2, 3], [1, 3]);
    const weight = Tensor.from([1, 0, 0, 0, 1, 1], [2, 3]);
    const bias = Tensor.from([10, 20], [2]);
    const a = Tensor.from([1, 1, 1], [1, 3]);
    const b = Tensor.from([1, -1], [2, 1]);
    const mask = Tensor.from([2, 0, 1], [1, 3]);
    // x·Wᵀ = [1, 5]; (x⊙m)·aᵀ = 2 + 0 + 3 = 5; y = [1 + 10 + 0.5·5, 5 + 20 − 0.5·5]
    const y = reference.lora.forward({ x, weight, bias, a, b, scale: 0.5, dropoutMask: mask });
    expect(Array.from(y.data)).toEqual([13.5, 22.5]);
    expect(y.shape).toEqual([1, 2]);
  });
});
