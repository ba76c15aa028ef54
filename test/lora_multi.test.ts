import { describe, expect, it } from 'vitest';

import { type DType, LoraKernelsError, lora, reference, Tensor, type Device } from '../lib/index.js';
import { poisoned, testDevices } from './helpers/devices.js';
import { BIAS_C, cancellingBias, column0, withColumn0 } from './helpers/bias.js';
import { deviceCopiesDuring } from './helpers/copies.js';
import { expectError } from './helpers/errors.js';

type Popularity = 'uniform' | 'zipf' | 'base-only' | 'fixed';

interface MultiCase {
  name: string;
  dtype: DType;
  lead: number[]; // leading dims of x; T = product
  k: number;
  n: number;
  rMax: number;
  ranks?: number[]; // length L; undefined: every adapter rMax (the default)
  adapters: number; // L
  popularity: Popularity;
  baseShare: number; // fraction of rows with id -1
  bias: boolean;
  out: boolean;
  large: boolean; // skipped under emulation
}

// Seeded ids: uniform over the adapters, or Zipf (p(l) ∝ 1/(l+1)^1.2: a few hot adapters and a
// long tail), with a share of base-only rows (-1).
function makeIds(c: MultiCase, seed: number): Int32Array {
  const rows = c.lead.reduce((p, d) => p * d, 1);
  let state = seed * 2654435761 >>> 0;
  const random = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 15), z | 1);
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61);
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296;
  };
  const weights = Array.from({ length: c.adapters }, (_, l) => (c.popularity === 'zipf' ? 1 / (l + 1) ** 1.2 : 1));
  const total = weights.reduce((a, b) => a + b, 0);
  return Int32Array.from({ length: rows }, (_, t) => {
    if (c.popularity === 'base-only') return -1;
    if (c.popularity === 'fixed') return (t * 7 + 2) % c.adapters;
    if (random() < c.baseShare) return -1;
    let u = random() * total;
    for (let l = 0; l < c.adapters; l++) {
      u -= weights[l]!;
      if (u <= 0) return l;
    }
    return c.adapters - 1;
  });
}

const MIXED_RANKS = [1, 7, 16, 64, 200, 256];

function multiCases(): MultiCase[] {
  const cases: MultiCase[] = [];
  const base = { name: '', baseShare: 0.1, bias: true, out: true, large: false };
  for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
    // decode-sized (streamed weight): T ≤ 64
    cases.push({ ...base, dtype, lead: [37], k: 45, n: 77, rMax: 16, ranks: [1, 7, 16, 3, 16], adapters: 5, popularity: 'uniform' });
    cases.push({ ...base, dtype, lead: [1], k: 130, n: 131, rMax: 7, adapters: 3, popularity: 'fixed', bias: false });
    cases.push({ ...base, dtype, lead: [2, 3], k: 19, n: 50, rMax: 256, ranks: MIXED_RANKS, adapters: 6, popularity: 'zipf', out: false });
    cases.push({ ...base, dtype, lead: [17], k: 64, n: 33, rMax: 4, adapters: 2, popularity: 'base-only' });
    // decode edges (the CUDA BGMV, cuda/gemv.cu): M = 16 exactly mixing ranks up to 128 and base-only
    // rows, 16-byte loads (K a multiple of 8), split-K in the GEMV (N ≤ 16, K ≥ 1024) and the shrink;
    // N = 1 with element loads (K = 1030); M = 17 with adapters (the tile GEMM).
    cases.push({ ...base, dtype, lead: [16], k: 264, n: 40, rMax: 128, ranks: [128, 1, 33, 16, 64], adapters: 5, popularity: 'uniform', baseShare: 0.25 });
    cases.push({ ...base, dtype, lead: [2, 2], k: 1030, n: 1, rMax: 8, ranks: [8, 3, 5], adapters: 3, popularity: 'fixed', bias: false });
    cases.push({ ...base, dtype, lead: [16], k: 1024, n: 13, rMax: 16, adapters: 2, popularity: 'zipf', out: false });
    cases.push({ ...base, dtype, lead: [17], k: 45, n: 20, rMax: 16, ranks: [16, 2, 9], adapters: 3, popularity: 'uniform' });
    // prefill-sized (packed GEMM): T > 64, ragged MR panels and NR column panels
    cases.push({ ...base, dtype, lead: [3, 43], k: 203, n: 19, rMax: 64, ranks: [1, 7, 16, 64, 33, 2, 64, 5], adapters: 8, popularity: 'zipf', bias: false });
    cases.push({ ...base, dtype, lead: [70], k: 19, n: 131, rMax: 256, ranks: MIXED_RANKS, adapters: 6, popularity: 'uniform', baseShare: 0.3 });
    cases.push({ ...base, dtype, lead: [129], k: 45, n: 77, rMax: 16, adapters: 11, popularity: 'uniform', out: false });
    cases.push({ ...base, dtype, lead: [97], k: 37, n: 29, rMax: 8, adapters: 1, popularity: 'base-only' });
  }
  // Past every cache block of the CPU kernel, many adapters.
  cases.push({ ...base, dtype: 'float32', lead: [2, 150], k: 1100, n: 700, rMax: 16, adapters: 64, popularity: 'zipf', large: true });
  cases.push({ ...base, dtype: 'bfloat16', lead: [301], k: 777, n: 515, rMax: 256, ranks: [...MIXED_RANKS, 9, 255], adapters: 8, popularity: 'uniform', large: true });
  cases.push({ ...base, dtype: 'float16', lead: [40], k: 1029, n: 260, rMax: 32, adapters: 40, popularity: 'uniform', baseShare: 0, large: true });
  // K a multiple of 8 (rows TMA can read): on an sm_90 x·Wᵀ runs apart on wgmma, the low-rank sum
  // in a float32 scratch as its epilogue's addend (the base-only [17, 64] above: a scratch of zeros).
  cases.push({ ...base, dtype: 'bfloat16', lead: [2, 75], k: 136, n: 200, rMax: 32, ranks: [32, 8, 1, 17, 24], adapters: 5, popularity: 'zipf', baseShare: 0.2 });
  for (const c of cases) {
    c.name = `${c.dtype} x[${c.lead.join(',')},${c.k}] N=${c.n} L=${c.adapters} rMax=${c.rMax}${c.ranks ? ' ranks' : ''} ${c.popularity}` +
      `${c.bias ? ' bias' : ''}${c.out ? ' out=' : ''}`;
  }
  return cases;
}

function makeInputs(c: MultiCase, device: Device, seed: number) {
  const opts = (s: number) => ({ dtype: c.dtype, device, seed: seed * 100 + s });
  const x = Tensor.randn([...c.lead, c.k], opts(1));
  const weight = Tensor.randn([c.n, c.k], opts(2));
  const bias = c.bias ? Tensor.randn([c.n], opts(3)) : undefined;
  const onDevice = (t: Tensor) => (device === 'cpu' ? t : t.to(device));
  // Ranks past an adapter's own are padding that must never be read: NaN there would show.
  const nan = c.dtype === 'float32' ? NaN : c.dtype === 'float16' ? 0x7e00 : 0x7fc0;
  const padded = (shape: number[], s: number, isPadding: (l: number, i: number) => boolean) => {
    const host = Tensor.randn(shape, { dtype: c.dtype, seed: seed * 100 + s }).toArray();
    const inner = shape[2]!;
    for (let e = 0; e < host.length; e++) {
      const l = Math.floor(e / (shape[1]! * inner));
      if (c.ranks && isPadding(l, e % (shape[1]! * inner))) host[e] = nan;
    }
    return onDevice(Tensor.from(host, shape, { dtype: c.dtype }));
  };
  const a = padded([c.adapters, c.rMax, c.k], 4, (l, i) => Math.floor(i / c.k) >= c.ranks![l]!);
  const b = padded([c.adapters, c.n, c.rMax], 5, (l, i) => i % c.rMax >= c.ranks![l]!);
  const ranks = c.ranks ? onDevice(Tensor.from(Int32Array.from(c.ranks), [c.adapters], { dtype: 'int32' })) : undefined;
  const scales = onDevice(Tensor.from(Float32Array.from({ length: c.adapters }, (_, l) => 0.25 + (l % 5) * 0.5), [c.adapters]));
  const ids = makeIds(c, seed);
  const adapterIds = onDevice(Tensor.from(ids, [ids.length], { dtype: 'int32' }));
  return { x, weight, bias, a, b, ranks, scales, adapterIds };
}

type Inputs = ReturnType<typeof makeInputs>;

// The same result as a loop of single-adapter references: row t through reference.lora.forward
// with adapter id's a[id][:r] and b[id][:, :r] sliced out (or no adapter for -1).
function perRowReference(c: MultiCase, inputs: Inputs): Float64Array {
  const rows = c.lead.reduce((p, d) => p * d, 1);
  // The stored elements of the case's float tensors (float32, or half bits) and int32 tensors.
  const floats = (t: Tensor) => t.toArray() as Float32Array | Uint16Array;
  const ints = (t: Tensor) => t.toArray() as Int32Array;
  const xs = floats(inputs.x);
  const as = floats(inputs.a);
  const bs = floats(inputs.b);
  const ids = ints(inputs.adapterIds);
  const scales = inputs.scales.toFloat32();
  const ranks = inputs.ranks ? ints(inputs.ranks) : undefined;
  const host = (data: Float32Array | Uint16Array, shape: number[]) => Tensor.from(data, shape, { dtype: c.dtype });
  const weight = host(floats(inputs.weight), [c.n, c.k]);
  const bias = inputs.bias ? host(floats(inputs.bias), [c.n]) : undefined;
  const y = new Float64Array(rows * c.n);
  for (let t = 0; t < rows; t++) {
    const x = host(xs.slice(t * c.k, (t + 1) * c.k), [1, c.k]);
    const id = ids[t]!;
    let adapter = {};
    if (id >= 0) {
      const r = ranks ? ranks[id]! : c.rMax;
      const a = host(as.slice(id * c.rMax * c.k, (id * c.rMax + r) * c.k), [r, c.k]);
      const bRows = Array.from({ length: c.n }, (_, j) => Array.from(bs.slice((id * c.n + j) * c.rMax, (id * c.n + j) * c.rMax + r)));
      const bData = new (xs.constructor as Float32ArrayConstructor)(bRows.flat());
      adapter = { a, b: host(bData, [c.n, r]), scale: scales[id]! };
    }
    y.set(reference.lora.forward({ x, weight, bias, ...adapter }).data, t * c.n);
  }
  return y;
}

describe.each(testDevices())('lora.forwardMulti on $device', ({ device, emulated }) => {
  const cases = multiCases().filter((c) => !(emulated && c.large));
  it.each(cases.map((c, i) => [c.name, c, i] as const))('%s', (_name, c, seed) => {
    const inputs = makeInputs(c, device, seed + 1);
    const outShape = [...c.lead, c.n];
    const out = c.out ? poisoned(outShape, c.dtype, device) : undefined;
    const y = lora.forwardMulti({ ...inputs, out });
    if (out) expect(y).toBe(out);
    expect(y.shape).toEqual(outShape);
    expect(y.dtype).toBe(c.dtype);
    expect(y.device).toBe(device);
    const expected = reference.lora.forwardMulti(inputs);
    reference.assertClose(y, expected, { dtype: c.dtype, label: 'vs reference.lora.forwardMulti' });
    // The float64 references agree with each other to float64 accuracy.
    reference.assertClose(expected, perRowReference(c, inputs), { dtype: 'float64', label: 'vs per-row reference.lora.forward' });
  });

  it('forwardMultiAsync matches forwardMulti, writing into a poisoned out', async () => {
    const c = multiCases()[5]!;
    const inputs = makeInputs(c, device, 77);
    const out = poisoned([...c.lead, c.n], c.dtype, device);
    const y = await lora.forwardMultiAsync({ ...inputs, out });
    expect(y).toBe(out);
    reference.assertClose(y, lora.forwardMulti(inputs), { dtype: c.dtype });
  });

  it('a bad id or rank is ERR_ARGUMENT from the op itself, naming the row / adapter (never an out-of-bounds read)', async () => {
    const { native } = await import('../lib/native.js');
    const c = multiCases()[0]!;  // L = 5, rMax = 16
    const inputs = makeInputs(c, device, 5);
    const withValue = (t: Tensor, index: number, value: number) => {
      const host = t.toArray() as Int32Array;
      host[index] = value;
      const bad = Tensor.from(host, [host.length], { dtype: 'int32' });
      return device === 'cpu' ? bad : bad.to(device);
    };
    const variants: [Tensor, Tensor, RegExp][] = [
      ...[5, -2, 1 << 30].map((bad): [Tensor, Tensor, RegExp] => [withValue(inputs.adapterIds, 3, bad), inputs.ranks!,
        new RegExp(`adapterIds\\[3\\] must be -1 \\(base only\\) or an adapter index in \\[0, 5\\), got ${bad}`)]),
      ...[0, 17, -1].map((bad): [Tensor, Tensor, RegExp] => [inputs.adapterIds, withValue(inputs.ranks!, 2, bad),
        new RegExp(`ranks\\[2\\] must be in \\[1, 16\\] \\(rMax\\), got ${bad}`)]),
    ];
    // On CUDA also from host memory (numbers the TS layer kept there: no read-back, the same checks).
    const onHost = device === 'cpu' ? [] : variants.map(([ids, ranks, message]): [Tensor, Tensor, RegExp, Tensor] =>
      [ids.to('cpu'), ranks.to('cpu'), message, inputs.scales.to('cpu')]);
    for (const [adapterIds, ranks, message, scales] of [...variants.map(([i, r, m]): [Tensor, Tensor, RegExp, Tensor] => [i, r, m, inputs.scales]), ...onHost]) {
      const nat = (t: Tensor, name: string) => Tensor.native(t, 'test', name);
      let caught: unknown;
      try {
        // Past the TypeScript checks: the native op must refuse on its own.
        native().loraForwardMulti({
          x: nat(inputs.x, 'x'), weight: nat(inputs.weight, 'weight'), a: nat(inputs.a, 'a'), b: nat(inputs.b, 'b'),
          ranks: nat(ranks, 'ranks'), scales: nat(scales, 'scales'), adapterIds: nat(adapterIds, 'adapterIds'),
          out: nat(Tensor.empty([...c.lead, c.n], { dtype: c.dtype, device }), 'out'),
        });
      } catch (error) {
        caught = error;
      }
      expect((caught as { code?: string }).code).toBe('ERR_ARGUMENT');
      expect(String((caught as Error).message)).toMatch(message);
    }
  });

  // M = 37 runs the CUDA GEMM path, M = 16 the decode BGMV; all three as numbers stay on the host
  // (a CUDA op uploads them itself), with a device Tensor among them the numbers are copied up.
  it.each([0, 4])('ranks, scales and adapterIds as typed arrays or numbers: the Tensor form\'s result, sync and async (case %i)', async (index) => {
    const c = multiCases()[index]!;  // L = 5, ranks given
    const inputs = makeInputs(c, device, 31);
    const expected = Array.from(lora.forwardMulti(inputs).toArray());
    const ranks = Array.from(inputs.ranks!.toArray()), scales = Array.from(inputs.scales.toArray()), ids = Array.from(inputs.adapterIds.toArray());
    const typed = { ranks: Int32Array.from(ranks), scales: Float32Array.from(scales), adapterIds: Int32Array.from(ids) };
    const mixed = { ranks: inputs.ranks, scales, adapterIds: Int32Array.from(ids) };
    for (const host of [typed, { ranks, scales, adapterIds: ids }, { scales, adapterIds: ids }, mixed]) {
      const rankless = !('ranks' in host);
      const want = rankless ? Array.from(lora.forwardMulti({ ...inputs, ranks: undefined }).toArray()) : expected;
      expect(Array.from(lora.forwardMulti({ ...inputs, ranks: undefined, ...host }).toArray())).toEqual(want);
      expect(Array.from((await lora.forwardMultiAsync({ ...inputs, ranks: undefined, ...host })).toArray())).toEqual(want);
    }
    // The values are taken at the call: changing the array before the async op runs changes nothing.
    const changing = ids.slice();
    const pending = lora.forwardMultiAsync({ ...inputs, ranks, scales, adapterIds: changing });
    changing.fill(-1);
    expect(Array.from((await pending).toArray())).toEqual(expected);
  });

  it('numbers stay on the host (no device copy); beside a device Tensor they are copied for the call and freed after it', async () => {
    const c = multiCases()[0]!;
    const inputs = makeInputs(c, device, 32);
    const host = {
      ranks: Array.from(inputs.ranks!.toArray()), scales: Float32Array.from(inputs.scales.toArray()),
      adapterIds: Int32Array.from(inputs.adapterIds.toArray()),
    };
    const copies = await deviceCopiesDuring(async () => {
      lora.forwardMulti({ ...inputs, ...host });
      await lora.forwardMultiAsync({ ...inputs, ...host });
      expectError(() => lora.forwardMulti({ ...inputs, ...host, out: inputs.x }), 'ERR_SHAPE', /out\.shape/);
    });
    expect(copies).toEqual([]);
    const mixedCopies = await deviceCopiesDuring(async () => {
      lora.forwardMulti({ ...inputs, ...host, ranks: inputs.ranks });
      await lora.forwardMultiAsync({ ...inputs, ...host, ranks: inputs.ranks });
    });
    expect(mixedCopies.length).toBe(device === 'cpu' ? 0 : 4);
    expect(mixedCopies.filter((t) => !t.disposed)).toEqual([]);
  });

  it('zero rows give an empty result', () => {
    const y = lora.forwardMulti({
      x: Tensor.zeros([0, 8], { device }), weight: Tensor.randn([5, 8], { device }),
      a: Tensor.randn([2, 3, 8], { device }), b: Tensor.randn([2, 5, 3], { device }),
      scales: Tensor.from([1, 2], [2]).to(device), adapterIds: Tensor.zeros([0], { dtype: 'int32', device }),
    });
    expect(y.shape).toEqual([0, 5]);
  });
});

// A float32 bias with float16/bfloat16 x, added before the single rounding (see helpers/bias.ts):
// M = 1 and 4 take the decode paths (CUDA BGMV, CPU streaming), 37 the CUDA GEMM, 129 the CPU's too.
describe.each(testDevices())('lora.forwardMulti with a float32 bias and 16-bit x on $device', ({ device }) => {
  const onDevice = (t: Tensor) => (device === 'cpu' ? t : t.to(device));
  const cases = (['float16', 'bfloat16'] as DType[]).flatMap((dtype) =>
    [1, 4, 37, 129].map((m, i) => ({ dtype, m, k: [45, 203, 19, 130][i]!, n: [19, 131, 50, 77][i]! })));
  it.each(cases.map((c, i) => [`${c.dtype} x[${c.m},${c.k}] N=${c.n} L=3`, c, i] as const))('%s', (_name, c, i) => {
    const opts = (s: number) => ({ dtype: c.dtype, device, seed: 9100 + 10 * i + s });
    const x = withColumn0(Tensor.randn([c.m, c.k], opts(1)), c.k, BIAS_C);
    const weight = Tensor.randn([c.n, c.k], opts(2));
    const a = withColumn0(Tensor.randn([3, 8, c.k], opts(3)), c.k, 0);
    const b = Tensor.randn([3, c.n, 8], opts(4));
    const ranks = onDevice(Tensor.from([8, 3, 5], [3], { dtype: 'int32' }));
    const scales = onDevice(Tensor.from([0.5, 1, 2], [3]));
    const adapterIds = onDevice(Tensor.from(Int32Array.from({ length: c.m }, (_, t) => (t % 4) - 1), [c.m], { dtype: 'int32' }));
    const bias = cancellingBias(column0(weight, c.n, c.k), device, 9100 + 10 * i + 5);
    const inputs = { x, weight, bias, a, b, ranks, scales, adapterIds };
    const out = poisoned([c.m, c.n], c.dtype, device);
    expect(lora.forwardMulti({ ...inputs, out })).toBe(out);
    reference.assertClose(out, reference.lora.forwardMulti(inputs), { dtype: c.dtype });
  });
});

describe('lora.forwardMulti rejects bad input with a code and a message naming the argument', () => {
  const x = Tensor.randn([3, 10], { seed: 1 });
  const weight = Tensor.randn([6, 10], { seed: 2 });
  const a = Tensor.randn([2, 4, 10], { seed: 3 });
  const b = Tensor.randn([2, 6, 4], { seed: 4 });
  const scales = Tensor.from([1, 0.5], [2]);
  const adapterIds = Tensor.from([0, -1, 1], [3], { dtype: 'int32' });
  const ok = { x, weight, a, b, scales, adapterIds };
  const ids = (v: number[]) => Tensor.from(v, [v.length], { dtype: 'int32' });
  const cases: [string, () => unknown, string, RegExp][] = [
    ['no argument object', () => lora.forwardMulti(undefined as never), 'ERR_ARGUMENT', /the argument must be an object/],
    ['id ≥ L', () => lora.forwardMulti({ ...ok, adapterIds: ids([0, 2, 1]) }), 'ERR_ARGUMENT', /adapterIds\[1\] must be -1 \(base only\) or an adapter index in \[0, 2\), got 2/],
    ['id < -1', () => lora.forwardMulti({ ...ok, adapterIds: ids([0, 1, -3]) }), 'ERR_ARGUMENT', /adapterIds\[2\] must be .* got -3/],
    ['rank > rMax', () => lora.forwardMulti({ ...ok, ranks: ids([4, 5]) }), 'ERR_ARGUMENT', /ranks\[1\] must be in \[1, 4\] \(rMax\), got 5/],
    ['rank 0', () => lora.forwardMulti({ ...ok, ranks: ids([0, 4]) }), 'ERR_ARGUMENT', /ranks\[0\] must be in \[1, 4\] \(rMax\), got 0/],
    ['a missing', () => lora.forwardMulti({ ...ok, a: undefined as never }), 'ERR_ARGUMENT', /a must be a Tensor, got undefined/],
    ['a 2-D', () => lora.forwardMulti({ ...ok, a: Tensor.zeros([4, 10]) }), 'ERR_SHAPE', /a.shape must be \[L, rMax, 10\].*got \[4, 10\]/],
    ['a wrong K', () => lora.forwardMulti({ ...ok, a: Tensor.zeros([2, 4, 9]) }), 'ERR_SHAPE', /a.shape must be \[L, rMax, 10\]/],
    ['b shape', () => lora.forwardMulti({ ...ok, b: Tensor.zeros([2, 4, 6]) }), 'ERR_SHAPE', /b.shape must be \[2, 6, 4\], got \[2, 4, 6\]/],
    ['weight shape', () => lora.forwardMulti({ ...ok, weight: Tensor.zeros([6, 11]) }), 'ERR_SHAPE', /weight.shape must be \[N, 10\]/],
    ['scales length', () => lora.forwardMulti({ ...ok, scales: Tensor.from([1, 2, 3], [3]) }), 'ERR_SHAPE', /scales.shape must be \[2\], got \[3\]/],
    ['ranks length', () => lora.forwardMulti({ ...ok, ranks: ids([1]) }), 'ERR_SHAPE', /ranks.shape must be \[2\], got \[1\]/],
    ['adapterIds length', () => lora.forwardMulti({ ...ok, adapterIds: ids([0, 1]) }), 'ERR_SHAPE', /adapterIds.shape must be \[3\], got \[2\]/],
    ['adapterIds float32', () => lora.forwardMulti({ ...ok, adapterIds: Tensor.from([0, 1, 1], [3]) }), 'ERR_DTYPE', /adapterIds must be of dtype int32, got float32/],
    ['scales int32', () => lora.forwardMulti({ ...ok, scales: ids([1, 1]) }), 'ERR_DTYPE', /scales must be of dtype float32, got int32/],
    ['scales float16', () => lora.forwardMulti({ ...ok, scales: Tensor.zeros([2], { dtype: 'float16' }) }), 'ERR_DTYPE', /scales must be of dtype float32, got float16/],
    ['ranks float32', () => lora.forwardMulti({ ...ok, ranks: Tensor.from([1, 2], [2]) }), 'ERR_DTYPE', /ranks must be of dtype int32, got float32/],
    ['int x', () => lora.forwardMulti({ ...ok, x: Tensor.zeros([3, 10], { dtype: 'int32' }) }), 'ERR_DTYPE', /x must be of dtype float32 or float16 or bfloat16, got int32/],
    ['a dtype', () => lora.forwardMulti({ ...ok, a: Tensor.zeros([2, 4, 10], { dtype: 'bfloat16' }) }), 'ERR_DTYPE', /a must be float32 like x, got bfloat16/],
    ['bias shape', () => lora.forwardMulti({ ...ok, bias: Tensor.zeros([5]) }), 'ERR_SHAPE', /bias.shape must be \[6\], got \[5\]/],
    ['float16 bias, float32 x', () => lora.forwardMulti({ ...ok, bias: Tensor.zeros([6], { dtype: 'float16' }) }), 'ERR_DTYPE', /bias must be float32 like x, got float16/],
    ['float16 bias, bfloat16 x', () => lora.forwardMulti({ ...ok, x: Tensor.zeros([3, 10], { dtype: 'bfloat16' }), weight: Tensor.zeros([6, 10], { dtype: 'bfloat16' }), a: Tensor.zeros([2, 4, 10], { dtype: 'bfloat16' }), b: Tensor.zeros([2, 6, 4], { dtype: 'bfloat16' }), bias: Tensor.zeros([6], { dtype: 'float16' }) }), 'ERR_DTYPE', /bias must be bfloat16 like x \(or float32\), got float16/],
    ['int32 bias, float16 x', () => lora.forwardMulti({ ...ok, x: Tensor.zeros([3, 10], { dtype: 'float16' }), weight: Tensor.zeros([6, 10], { dtype: 'float16' }), a: Tensor.zeros([2, 4, 10], { dtype: 'float16' }), b: Tensor.zeros([2, 6, 4], { dtype: 'float16' }), bias: Tensor.zeros([6], { dtype: 'int32' }) }), 'ERR_DTYPE', /bias must be float16 like x \(or float32\), got int32/],
    ['out shape', () => lora.forwardMulti({ ...ok, out: Tensor.zeros([3, 5]) }), 'ERR_SHAPE', /out.shape must be \[3, 6\], got \[3, 5\]/],
    ['out aliases x', () => { const s = Tensor.zeros([3, 6]); return lora.forwardMulti({ ...ok, x: s, weight: Tensor.zeros([6, 6]), a: Tensor.zeros([2, 4, 6]), out: s.reshape([3, 6]) }); }, 'ERR_ARGUMENT', /out must be memory not shared with x/],
  ];
  it.each(cases)('%s', (_name, fn, code, pattern) => expectError(fn, code, pattern));

  const hostCases: [string, () => unknown, string, RegExp][] = [
    ['ranks numbers length', () => lora.forwardMulti({ ...ok, ranks: [1] }), 'ERR_SHAPE', /ranks\.length must be 2 \(L of a\), got 1/],
    ['scales Float32Array length', () => lora.forwardMulti({ ...ok, scales: Float32Array.from([1, 2, 3]) }), 'ERR_SHAPE', /scales\.length must be 2 \(L of a\), got 3/],
    ['adapterIds numbers length', () => lora.forwardMulti({ ...ok, adapterIds: [0, 1] }), 'ERR_SHAPE', /adapterIds\.length must be 3 \(the rows of x\), got 2/],
    ['ranks Float32Array', () => lora.forwardMulti({ ...ok, ranks: Float32Array.from([1, 2]) as never }), 'ERR_DTYPE', /ranks must be an int32 Tensor, an Int32Array or an array of integers, got a Float32Array/],
    ['scales Int32Array', () => lora.forwardMulti({ ...ok, scales: Int32Array.from([1, 2]) as never }), 'ERR_DTYPE', /scales must be a float32 Tensor, a Float32Array or an array of numbers, got a Int32Array/],
    ['id not an integer', () => lora.forwardMulti({ ...ok, adapterIds: [0, 0.5, 1] }), 'ERR_ARGUMENT', /adapterIds\[1\] must be an integer \(int32\), got 0\.5/],
    ['id ≥ L in numbers', () => lora.forwardMulti({ ...ok, adapterIds: [0, 2, 1] }), 'ERR_ARGUMENT', /adapterIds\[1\] must be -1 \(base only\) or an adapter index in \[0, 2\), got 2/],
    ['id < -1 in an Int32Array', () => lora.forwardMulti({ ...ok, adapterIds: Int32Array.from([0, 1, -2]) }), 'ERR_ARGUMENT', /adapterIds\[2\] must be -1 \(base only\)/],
    ['rank > rMax in numbers', () => lora.forwardMulti({ ...ok, ranks: [4, 5] }), 'ERR_ARGUMENT', /ranks\[1\] must be in \[1, 4\] \(rMax\), got 5/],
    ['rank 0 in an Int32Array', () => lora.forwardMulti({ ...ok, ranks: Int32Array.from([0, 4]) }), 'ERR_ARGUMENT', /ranks\[0\] must be in \[1, 4\] \(rMax\), got 0/],
    ['rank not an integer', () => lora.forwardMulti({ ...ok, ranks: [1.5, 2] }), 'ERR_ARGUMENT', /ranks\[0\] must be an integer \(int32\), got 1\.5/],
    ['rank NaN', () => lora.forwardMulti({ ...ok, ranks: [2, Number.NaN] }), 'ERR_ARGUMENT', /ranks\[1\] must be in \[1, 4\] \(rMax\), got NaN/],
    ['scale a string', () => lora.forwardMulti({ ...ok, scales: ['1', 2] as never }), 'ERR_ARGUMENT', /scales\[0\] must be a number, got the string "1"/],
    ['adapterIds a string', () => lora.forwardMulti({ ...ok, adapterIds: '0,1,1' as never }), 'ERR_ARGUMENT', /adapterIds must be an int32 Tensor, an Int32Array or an array of integers, got the string "0,1,1"/],
    ['scales null', () => lora.forwardMulti({ ...ok, scales: null as never }), 'ERR_ARGUMENT', /scales must be a float32 Tensor, .* got null/],
  ];
  it.each(hostCases)('host values: %s', (_name, fn, code, pattern) => expectError(fn, code, pattern));

  it('forwardMultiAsync rejects (does not throw synchronously) with the same error', async () => {
    const promise = lora.forwardMultiAsync({ ...ok, adapterIds: ids([0, 7, 1]) });
    await expect(promise).rejects.toBeInstanceOf(LoraKernelsError);
    await expect(promise).rejects.toMatchObject({ code: 'ERR_ARGUMENT' });
  });

  it('ids, scales and ranks on another device are ERR_DEVICE', () => {
    if (!testDevices().some((d) => d.device === 'cuda')) return;
    expectError(() => lora.forwardMulti({ ...ok, adapterIds: adapterIds.to('cuda') }), 'ERR_DEVICE', /adapterIds must be on cpu like x, got cuda/);
  });
});
