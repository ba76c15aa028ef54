import { describe, expect, it } from 'vitest';

import { backends, DTYPES, type DType, LoraKernelsError, Tensor } from '../lib/index.js';
import { bfloat16ToFloat, float16ToFloat, floatToBFloat16, floatToFloat16 } from '../lib/dtype.js';
import { testDevices } from './helpers/devices.js';

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

describe('Tensor on the host', () => {
  it('from() is zero-copy for matching TypedArrays and converts otherwise', () => {
    const data = new Float32Array([1, 2, 3, 4, 5, 6]);
    const t = Tensor.from(data, [2, 3]);
    data[0] = 42;
    expect(t.toFloat32()[0]).toBe(42);
    const h = Tensor.from([1, 0.5, -2], [3], { dtype: 'float16' });
    expect(Array.from(h.toArray())).toEqual([0x3c00, 0x3800, 0xc000]);
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
    expect(Array.from(half)).toEqual(Array.from(a, floatToBFloat16));
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
  it.each(DTYPES.map((d) => [d] as const))('%s round-trips through to() and randn matches the host', (dtype: DType) => {
    const host = Tensor.randn([3, 37], { dtype, seed: 3 });
    const there = host.to(device);
    expect(there.device).toBe(device);
    expect(there.toArray()).toEqual(host.toArray());
    expect(Tensor.randn([3, 37], { dtype, seed: 3, device }).toArray()).toEqual(host.toArray());
    expect(there.to(device).toArray()).toEqual(host.toArray());
    expect(there.to('cpu').device).toBe('cpu');
    expect(Array.from(Tensor.zeros([5], { dtype, device }).toArray())).toEqual([0, 0, 0, 0, 0]);
    there.dispose();
    expect(() => there.toArray()).toThrow(LoraKernelsError);
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
