import { pbkdf2 } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import * as path from 'node:path';

import { describe, expect, it } from 'vitest';

import { type DType, LoraKernelsError, lora, reference, Tensor, type Device } from '../lib/index.js';
import { focusedRun, poisoned, testDevices } from './helpers/devices.js';
import { BIAS_C, cancellingBias, column0, withColumn0 } from './helpers/bias.js';
import { expectError } from './helpers/errors.js';

interface ForwardCase {
  name: string;
  dtype: DType;
  lead: number[]; // leading dims of x; M = product
  k: number;
  n: number;
  r: number; // 0: no adapter
  bias: boolean;
  mask: boolean;
  out: boolean;
  scale: number;
  allowTf32: boolean;
  large: boolean; // skipped under emulation
}

// Odd sizes on purpose: M in {1, 3, 37, 129}, K and N not multiples of 8, ranks 1…64; decode edges below.
const LEADS: Record<number, number[]> = { 1: [1], 3: [1, 3], 37: [37], 129: [3, 43] };
const KS = [45, 203, 19, 130];
const NS = [77, 19, 131, 50];

function forwardCases(): ForwardCase[] {
  const cases: ForwardCase[] = [];
  let i = 0;
  for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
    for (const m of [1, 3, 37, 129]) {
      for (const r of [1, 7, 16, 64]) {
        const c: ForwardCase = {
          name: '', dtype, lead: LEADS[m]!, k: KS[i % 4]!, n: NS[(i + 1) % 4]!, r,
          bias: i % 2 === 0, mask: i % 5 === 0, out: i % 3 !== 0, scale: i % 2 ? 0.5 : 2,
          allowTf32: dtype === 'float32' && i % 4 === 1, large: false,
        };
        i++;
        cases.push(c);
      }
    }
  }
  // Past every cache block of the CPU kernel (K, N and M beyond one panel), and without adapter.
  cases.push({ name: '', dtype: 'float32', lead: [2, 150], k: 1100, n: 700, r: 16, bias: true, mask: false, out: true, scale: 0.25, allowTf32: false, large: true });
  cases.push({ name: '', dtype: 'bfloat16', lead: [301], k: 777, n: 515, r: 33, bias: false, mask: true, out: false, scale: 1, allowTf32: false, large: true });
  cases.push({ name: '', dtype: 'float16', lead: [5], k: 4099, n: 1029, r: 8, bias: true, mask: false, out: true, scale: 1, allowTf32: false, large: true });
  cases.push({ name: '', dtype: 'float32', lead: [17], k: 64, n: 33, r: 0, bias: true, mask: false, out: true, scale: 1, allowTf32: false, large: false });
  // Decode (M ≤ 16: the CUDA GEMV, cuda/gemv.cu) edges: every row bucket up to M = 16 exactly and
  // M = 17 (the tile GEMM); K a multiple of 8 (16-byte loads) or not (element loads); N ≤ 16 with
  // K ≥ 1024 (one block of rows: split-K in the GEMV, and in the shrink, on ≥ 2 SMs); r = 128 (four
  // 32-rank slices of T); no adapter.
  const decode = { name: '', bias: true, mask: false, out: true, scale: 0.5, allowTf32: false, large: false };
  cases.push({ ...decode, dtype: 'float32', lead: [16], k: 1024, n: 16, r: 16, mask: true });
  cases.push({ ...decode, dtype: 'bfloat16', lead: [4, 4], k: 520, n: 33, r: 128, out: false });
  cases.push({ ...decode, dtype: 'float16', lead: [17], k: 64, n: 33, r: 16 });
  cases.push({ ...decode, dtype: 'float32', lead: [1], k: 1100, n: 1, r: 16, mask: true, bias: false });
  cases.push({ ...decode, dtype: 'bfloat16', lead: [2], k: 2050, n: 7, r: 33, mask: true });
  cases.push({ ...decode, dtype: 'float16', lead: [8], k: 256, n: 130, r: 64, mask: true, scale: 2 });
  cases.push({ ...decode, dtype: 'float16', lead: [5], k: 1030, n: 1, r: 5 });
  cases.push({ ...decode, dtype: 'float32', lead: [4], k: 64, n: 33, r: 0, bias: false });
  for (const c of cases) {
    c.name = `${c.dtype} x[${c.lead.join(',')},${c.k}] N=${c.n} r=${c.r}${c.bias ? ' bias' : ''}${c.mask ? ' mask' : ''}${c.out ? ' out=' : ''}${c.allowTf32 ? ' tf32' : ''}`;
  }
  return cases;
}

function makeInputs(c: ForwardCase, device: Device, seed: number) {
  const opts = (s: number) => ({ dtype: c.dtype, device, seed: seed * 100 + s });
  const x = Tensor.randn([...c.lead, c.k], opts(1));
  const weight = Tensor.randn([c.n, c.k], opts(2));
  const bias = c.bias ? Tensor.randn([c.n], opts(3)) : undefined;
  const a = c.r ? Tensor.randn([c.r, c.k], opts(4)) : undefined;
  const b = c.r ? Tensor.randn([c.n, c.r], opts(5)) : undefined;
  let dropoutMask: Tensor | undefined;
  if (c.mask) {
    // Inverted dropout with p = 0.25: entries 0 or 1/(1-p), exactly representable in every dtype.
    const keep = Tensor.randn([...c.lead, c.k], { dtype: 'float32', seed: seed * 100 + 6 }).toFloat32();
    const values = Array.from(keep, (z) => (z > -0.6745 ? 4 / 3 : 0));
    dropoutMask = Tensor.from(values, [...c.lead, c.k], { dtype: c.dtype });
    if (device !== 'cpu') dropoutMask = dropoutMask.to(device);
  }
  return { x, weight, bias, a, b, dropoutMask };
}

describe.each(testDevices())('lora.forward on $device', ({ device, emulated }) => {
  const cases = forwardCases().filter((c) => !(emulated && c.large));
  it.each(cases.map((c, i) => [c.name, c, i] as const))('%s', (_name, c, seed) => {
    const inputs = makeInputs(c, device, seed + 1);
    const outShape = [...c.lead, c.n];
    const out = c.out ? poisoned(outShape, c.dtype, device) : undefined;
    const y = lora.forward({ ...inputs, scale: c.scale, out, allowTf32: c.allowTf32 });
    if (out) expect(y).toBe(out);
    expect(y.shape).toEqual(outShape);
    expect(y.dtype).toBe(c.dtype);
    expect(y.device).toBe(device);
    const expected = reference.lora.forward({ ...inputs, scale: c.scale });
    reference.assertClose(y, expected, { dtype: c.allowTf32 && device !== 'cpu' ? 'tf32' : c.dtype });
  });

  it('forwardAsync matches forward, writing into a poisoned out', async () => {
    const c = forwardCases()[9]!;
    const inputs = makeInputs(c, device, 77);
    const out = poisoned([...c.lead, c.n], c.dtype, device);
    const y = await lora.forwardAsync({ ...inputs, scale: c.scale, out });
    expect(y).toBe(out);
    reference.assertClose(y, lora.forward({ ...inputs, scale: c.scale }), { dtype: c.dtype });
  });

  const calls = focusedRun ? 20 : 100;
  it(`${calls} concurrent forwardAsync calls are all correct`, async () => {
    const weight = Tensor.randn([29, 53], { device, seed: 1 });
    const a = Tensor.randn([5, 53], { device, seed: 2 });
    const b = Tensor.randn([29, 5], { device, seed: 3 });
    const xs = Array.from({ length: calls }, (_, i) => Tensor.randn([1 + (i % 7), 53], { device, seed: 1000 + i }));
    const ys = await Promise.all(xs.map((x, i) => lora.forwardAsync({ x, weight, a, b, scale: 1 + i / calls })));
    ys.forEach((y, i) => {
      reference.assertClose(y, reference.lora.forward({ x: xs[i]!, weight, a, b, scale: 1 + i / calls }), { dtype: 'float32', label: `call ${i}` });
    });
  });

  it('NaN in x gives NaN in exactly the rows it touches', () => {
    for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
      const host = Tensor.randn([4, 21], { dtype, seed: 5 }).toArray();
      host[2 * 21 + 13] = dtype === 'float32' ? NaN : dtype === 'float16' ? 0x7e00 : 0x7fc0;
      let x = Tensor.from(host, [4, 21], { dtype });
      if (device !== 'cpu') x = x.to(device);
      const weight = Tensor.randn([9, 21], { dtype, device, seed: 6 });
      const y = lora.forward({ x, weight, a: Tensor.randn([3, 21], { dtype, device, seed: 7 }), b: Tensor.randn([9, 3], { dtype, device, seed: 8 }) }).toFloat32();
      for (let i = 0; i < 4; i++) {
        for (let j = 0; j < 9; j++) expect(Number.isNaN(y[i * 9 + j]!), `${dtype} y[${i},${j}]`).toBe(i === 2);
      }
    }
  });

  it('zero rows give an empty result', () => {
    const y = lora.forward({ x: Tensor.zeros([0, 8], { device }), weight: Tensor.randn([5, 8], { device }) });
    expect(y.shape).toEqual([0, 5]);
  });
});

// A float32 bias with float16/bfloat16 x, added before the single rounding (see helpers/bias.ts):
// M = 1 and 4 take the decode paths (CUDA GEMV, CPU streaming), 37 the CUDA GEMM, 129 the CPU's too.
describe.each(testDevices())('lora.forward with a float32 bias and 16-bit x on $device', ({ device }) => {
  const cases = (['float16', 'bfloat16'] as DType[]).flatMap((dtype) =>
    [1, 4, 37, 129].map((m, i) => ({ dtype, m, k: KS[i]!, n: NS[(i + 1) % 4]!, r: [7, 0, 16, 5][i]! })));
  it.each(cases.map((c, i) => [`${c.dtype} x[${c.m},${c.k}] N=${c.n} r=${c.r}`, c, i] as const))('%s', (_name, c, i) => {
    const opts = (s: number) => ({ dtype: c.dtype, device, seed: 9000 + 10 * i + s });
    const x = withColumn0(Tensor.randn([c.m, c.k], opts(1)), c.k, BIAS_C);
    const weight = Tensor.randn([c.n, c.k], opts(2));
    const a = c.r ? withColumn0(Tensor.randn([c.r, c.k], opts(3)), c.k, 0) : undefined;
    const b = c.r ? Tensor.randn([c.n, c.r], opts(4)) : undefined;
    const bias = cancellingBias(column0(weight, c.n, c.k), device, 9000 + 10 * i + 5);
    const out = poisoned([c.m, c.n], c.dtype, device);
    const y = lora.forward({ x, weight, bias, a, b, scale: 0.5, out });
    expect(y).toBe(out);
    reference.assertClose(y, reference.lora.forward({ x, weight, bias, a, b, scale: 0.5 }), { dtype: c.dtype });
  });
});

describe('lora.forward rejects bad input with a code and a message naming the argument', () => {
  const x = Tensor.randn([3, 10], { seed: 1 });
  const weight = Tensor.randn([6, 10], { seed: 2 });
  const a = Tensor.randn([4, 10], { seed: 3 });
  const b = Tensor.randn([6, 4], { seed: 4 });
  const cases: [string, () => unknown, string, RegExp][] = [
    ['no argument object', () => lora.forward(undefined as never), 'ERR_ARGUMENT', /the argument must be an object/],
    ['x not a tensor', () => lora.forward({ x: new Float32Array(30) as never, weight }), 'ERR_ARGUMENT', /x must be a Tensor, got a Float32Array/],
    ['weight missing', () => lora.forward({ x } as never), 'ERR_ARGUMENT', /weight must be a Tensor, got undefined/],
    ['int dtype x', () => lora.forward({ x: Tensor.zeros([3, 10], { dtype: 'int32' }), weight }), 'ERR_DTYPE', /x must be of dtype float32 or float16 or bfloat16, got int32/],
    ['dtype mismatch', () => lora.forward({ x, weight: Tensor.zeros([6, 10], { dtype: 'float16' }) }), 'ERR_DTYPE', /weight must be float32 like x, got float16/],
    ['K mismatch', () => lora.forward({ x, weight: Tensor.zeros([6, 11]) }), 'ERR_SHAPE', /weight.shape must be \[N, 10\].*got \[6, 11\]/],
    ['weight 1-D', () => lora.forward({ x, weight: Tensor.zeros([60]) }), 'ERR_SHAPE', /weight.shape must be/],
    ['scalar x', () => lora.forward({ x: Tensor.zeros([]), weight }), 'ERR_SHAPE', /x.shape must be \[..., K\]/],
    ['bias shape', () => lora.forward({ x, weight, bias: Tensor.zeros([5]) }), 'ERR_SHAPE', /bias.shape must be \[6\], got \[5\]/],
    ['float16 bias, float32 x', () => lora.forward({ x, weight, bias: Tensor.zeros([6], { dtype: 'float16' }) }), 'ERR_DTYPE', /bias must be float32 like x, got float16/],
    ['float16 bias, bfloat16 x', () => lora.forward({ x: Tensor.zeros([3, 10], { dtype: 'bfloat16' }), weight: Tensor.zeros([6, 10], { dtype: 'bfloat16' }), bias: Tensor.zeros([6], { dtype: 'float16' }) }), 'ERR_DTYPE', /bias must be bfloat16 like x \(or float32\), got float16/],
    ['int32 bias, float16 x', () => lora.forward({ x: Tensor.zeros([3, 10], { dtype: 'float16' }), weight: Tensor.zeros([6, 10], { dtype: 'float16' }), bias: Tensor.zeros([6], { dtype: 'int32' }) }), 'ERR_DTYPE', /bias must be float16 like x \(or float32\), got int32/],
    ['a without b', () => lora.forward({ x, weight, a }), 'ERR_ARGUMENT', /b must be given together with a/],
    ['b without a', () => lora.forward({ x, weight, b }), 'ERR_ARGUMENT', /a must be given together with b/],
    ['a shape', () => lora.forward({ x, weight, a: Tensor.zeros([4, 9]), b }), 'ERR_SHAPE', /a.shape must be \[r, 10\]/],
    ['b shape', () => lora.forward({ x, weight, a, b: Tensor.zeros([6, 5]) }), 'ERR_SHAPE', /b.shape must be \[6, 4\], got \[6, 5\]/],
    ['mask shape', () => lora.forward({ x, weight, a, b, dropoutMask: Tensor.zeros([3, 9]) }), 'ERR_SHAPE', /dropoutMask.shape must be \[3, 10\]/],
    ['scale NaN', () => lora.forward({ x, weight, scale: NaN }), 'ERR_ARGUMENT', /scale must be a finite number, got number NaN/],
    ['scale string', () => lora.forward({ x, weight, scale: '2' as never }), 'ERR_ARGUMENT', /scale must be a finite number, got the string "2"/],
    ['allowTf32 number', () => lora.forward({ x, weight, allowTf32: 1 as never }), 'ERR_ARGUMENT', /allowTf32 must be a boolean/],
    ['out shape', () => lora.forward({ x, weight, out: Tensor.zeros([3, 5]) }), 'ERR_SHAPE', /out.shape must be \[3, 6\], got \[3, 5\]/],
    ['out dtype', () => lora.forward({ x, weight, out: Tensor.zeros([3, 6], { dtype: 'bfloat16' }) }), 'ERR_DTYPE', /out must be float32 like x/],
    ['out aliases x', () => { const s = Tensor.zeros([3, 6]); return lora.forward({ x: s, weight: Tensor.zeros([6, 6]), out: s.reshape([18]).reshape([3, 6]) }); }, 'ERR_ARGUMENT', /out must be memory not shared with x, got an overlapping tensor/],
    ['disposed x', () => { const d = Tensor.randn([3, 10]); d.dispose(); return lora.forward({ x: d, weight }); }, 'ERR_DISPOSED', /x must be a live tensor, got a disposed tensor/],
    ['bad device string', () => Tensor.zeros([2], { device: 'gpu' as never }), 'ERR_DEVICE', /opts.device must be 'cpu', 'cuda' or 'cuda:<index>', got the string "gpu"/],
  ];
  it.each(cases)('%s', (_name, fn, code, pattern) => expectError(fn, code, pattern));

  it('forwardAsync rejects (does not throw synchronously) with the same error', async () => {
    const promise = lora.forwardAsync({ x, weight: Tensor.zeros([6, 11]) });
    await expect(promise).rejects.toBeInstanceOf(LoraKernelsError);
    await expect(promise).rejects.toMatchObject({ code: 'ERR_SHAPE' });
  });

  it('mixing devices is ERR_DEVICE', () => {
    const devices = testDevices();
    if (!devices.some((d) => d.device === 'cuda')) return;
    expectError(() => lora.forward({ x, weight: weight.to('cuda') }), 'ERR_DEVICE', /weight must be on cpu like x, got cuda/);
    expectError(() => lora.forward({ x, weight, bias: Tensor.zeros([6], { device: 'cuda' }) }), 'ERR_DEVICE', /bias must be on cpu like x, got cuda/);
  });

  it('the addon itself rejects descriptors whose buffers are too small (memory safety)', async () => {
    const { native } = await import('../lib/native.js');
    const desc = (data: Float32Array, shape: number[]) => ({ dtype: 0, shape, data });
    let caught: unknown;
    try {
      native().loraForward({ x: desc(new Float32Array(5), [3, 10]), weight: desc(new Float32Array(60), [6, 10]), out: desc(new Float32Array(18), [3, 6]), scale: 1, allowTf32: false });
    } catch (error) {
      caught = error;
    }
    expect((caught as { code?: string }).code).toBe('ERR_SHAPE');
    expect(String((caught as Error).message)).toMatch(/x: shape needs 120 bytes, the buffer holds 20/);
  });
});

describe('forwardAsync and the event loop', () => {
  it('long jobs leave the JS thread and libuv pool free', async () => {
    const x = Tensor.randn([256, 1536], { seed: 1 });
    const weight = Tensor.randn([1536, 1536], { seed: 2 });
    let forwardsDone = 0;
    const forwards = Array.from({ length: 8 }, () => lora.forwardAsync({ x, weight }).then(() => { forwardsDone++; }));
    // libuv pool work (pbkdf2) and timers keep running while the GEMMs are queued on our job thread.
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 1);
    const poolWork = await Promise.all(Array.from({ length: 8 }, () => new Promise<number>((resolve, reject) =>
      pbkdf2('pw', 'salt', 1, 16, 'sha256', (err) => (err ? reject(err) : resolve(forwardsDone))))));
    await Promise.all(forwards);
    clearInterval(timer);
    // Had the GEMMs taken libuv's 4 pool threads, pbkdf2 would wait for at least 4 of them.
    expect(Math.max(...poolWork)).toBeLessThan(4);
    expect(ticks).toBeGreaterThan(0);
  });
});

describe('lora.forward from worker_threads', () => {
  it('runs in two workers at once and matches the main thread', async () => {
    const root = path.resolve(__dirname, '..');
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { Tensor, lora } = require(${JSON.stringify(path.join(root, 'dist/cjs/lib/index.js'))});
      const x = Tensor.randn([37, 45], { seed: workerData });
      const weight = Tensor.randn([19, 45], { seed: 2 });
      const a = Tensor.randn([7, 45], { seed: 3 }), b = Tensor.randn([19, 7], { seed: 4 });
      lora.forwardAsync({ x, weight, a, b, scale: 0.5 }).then((y) => parentPort.postMessage(y.toFloat32()));
    `;
    const run = (seed: number) => new Promise<Float32Array>((resolve, reject) => {
      const worker = new Worker(code, { eval: true, workerData: seed });
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    const [y1, y2] = await Promise.all([run(11), run(12)]);
    for (const [seed, y] of [[11, y1], [12, y2]] as const) {
      const x = Tensor.randn([37, 45], { seed });
      const expected = reference.lora.forward({ x, weight: Tensor.randn([19, 45], { seed: 2 }), a: Tensor.randn([7, 45], { seed: 3 }), b: Tensor.randn([19, 7], { seed: 4 }), scale: 0.5 });
      reference.assertClose(y, expected, { dtype: 'float32' });
    }
  });
});
