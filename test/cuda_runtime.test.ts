/**
 * Stream-ordered CUDA (lib/cuda.ts, cuda/runtime.cu): ops enqueue and return, reads wait, async
 * ops settle when their work is done, in call order with the sync ones; the caching allocator
 * reuses freed blocks (safely, while kernels may still run), flushes on out-of-memory, and reports
 * its numbers. Runs on every CUDA device the addon offers (the SIMT emulator in the emulated
 * build); the typed errors run on every build. Faults: test/cuda_fault.test.ts.
 */
import { describe, expect, it } from 'vitest';

import { backends, emptyCache, type Device, lora, memoryStats, reference, synchronize, Tensor } from '../lib/index.js';
import { callNative, type NativeEvent } from '../lib/native.js';
import { focusedRun, testDevices } from './helpers/devices.js';
import { expectError } from './helpers/errors.js';

const cudaDevices = testDevices().filter((d) => d.device !== 'cpu');

// Small on purpose (the emulator runs kernels ~1000× slower than a GPU), odd sizes.
const M = 5, K = 67, N = 33, R = 4;

/** Host operands of a LoRA layer, and the same on `device`. */
function layer(device: Device, seed: number, n = N, k = K) {
  const host = {
    weight: Tensor.randn([n, k], { seed: seed + 1 }),
    a: Tensor.randn([R, k], { seed: seed + 2 }),
    b: Tensor.randn([n, R], { seed: seed + 3 }),
    bias: Tensor.randn([n], { seed: seed + 4 }),
  };
  const dev = { weight: host.weight.to(device), a: host.a.to(device), b: host.b.to(device), bias: host.bias.to(device) };
  return { host, dev, scale: 0.5 };
}

type Layer = ReturnType<typeof layer>;

/** The float64 reference of `layer` applied to host `x`, as a host float32 tensor (feeds the next layer). */
function referenceOf(l: Layer, x: Tensor): Tensor {
  const y = reference.lora.forward({ x, ...l.host, scale: l.scale });
  return Tensor.from(Float32Array.from(y.data), y.shape);
}

function bits(t: Tensor): Uint32Array {
  const f = t.toFloat32();
  return new Uint32Array(f.buffer, f.byteOffset, f.length);
}

describe.each(cudaDevices)('stream-ordered execution on $device', ({ device }) => {
  it('an op enqueues and returns; reading the result waits for it', () => {
    const l = layer(device, 10);
    const xHost = Tensor.randn([M, K], { seed: 11 });
    const y = lora.forward({ x: xHost.to(device), ...l.dev, scale: l.scale });
    expect(y.device).toBe(device);
    reference.assertClose(y.toFloat32(), referenceOf(l, xHost).toFloat32(), { dtype: 'float32' });
    reference.assertClose(y.to('cpu'), referenceOf(l, xHost), { dtype: 'float32' });
  });

  it('sync and async ops interleave in call order: each sees what the calls before it wrote', async () => {
    // Three layers chained through explicit outputs, alternating sync and async calls, nothing
    // awaited until the end: y1 = f1(x) async → y2 = f2(y1) sync → y3 = f3(y2) async.
    const [l1, l2, l3] = [layer(device, 20, K), layer(device, 30, K), layer(device, 40)];
    const xHost = Tensor.randn([M, K], { seed: 21 });
    const x = xHost.to(device);
    const y1 = Tensor.empty([M, K], { device });
    const y3 = Tensor.empty([M, N], { device });
    const first = lora.forwardAsync({ x, ...l1.dev, scale: l1.scale, out: y1 });
    const y2 = lora.forward({ x: y1, ...l2.dev, scale: l2.scale });
    const third = lora.forwardAsync({ x: y2, ...l3.dev, scale: l3.scale, out: y3 });
    // Overwrite y1 right away: the async op that read it, and the sync op, came first.
    lora.forward({ x: Tensor.zeros([M, K], { device }), ...l1.dev, scale: l1.scale, out: y1 });
    const [r1, r3] = await Promise.all([first, third]);
    expect(r1).toBe(y1);
    expect(r3).toBe(y3);
    const want1 = referenceOf(l1, xHost);
    const want2 = referenceOf(l2, want1);
    reference.assertClose(y2, want2, { dtype: 'float32', label: 'y2 = f2(f1(x))' });
    reference.assertClose(y3, referenceOf(l3, want2), { dtype: 'float32', label: 'y3' });
    reference.assertClose(y1, referenceOf(l1, Tensor.zeros([M, K])), { dtype: 'float32', label: 'y1 overwritten last' });
  });

  it('an async op resolves after its work: the values are there without another wait', async () => {
    const l = layer(device, 50);
    const xHost = Tensor.randn([M, K], { seed: 51 });
    const grads = await lora.backwardAsync({ gradOutput: Tensor.randn([M, N], { seed: 52, device }), x: xHost.to(device), ...l.dev, scale: l.scale });
    const y = await lora.forwardAsync({ x: xHost.to(device), ...l.dev, scale: l.scale });
    expect(memoryStats(device).allocatedBytes).toBeGreaterThan(0);
    reference.assertClose(y, referenceOf(l, xHost), { dtype: 'float32' });
    expect(grads.gradA.shape).toEqual([R, K]);
    expect(Array.from(grads.gradA.toFloat32()).every(Number.isFinite)).toBe(true);
  });

  it('dispose() right after an op: the next op reuses the freed block without corrupting either result', async () => {
    const l = layer(device, 60);
    const results: { y: Tensor; want: Tensor }[] = [];
    let allocations = 0;
    for (let i = 0; i < 6; i++) {
      const xHost = Tensor.randn([M, K], { seed: 61 + i });
      const x = xHost.to(device);
      // Freed while the kernel may still run; the next iteration's upload takes the same block.
      if (i % 2) {
        const pending = lora.forwardAsync({ x, ...l.dev, scale: l.scale });
        x.dispose();  // the pending op keeps its block until it settles
        results.push({ y: await pending, want: referenceOf(l, xHost) });
      } else {
        results.push({ y: lora.forward({ x, ...l.dev, scale: l.scale }), want: referenceOf(l, xHost) });
        x.dispose();
      }
      if (i === 1) allocations = memoryStats(device).deviceAllocations;
    }
    expect(memoryStats(device).deviceAllocations - allocations).toBeLessThanOrEqual(4);  // the 4 later outputs at most
    for (const [i, { y, want }] of results.entries()) reference.assertClose(y, want, { dtype: 'float32', label: `iteration ${i}` });
  });

  it('results are bitwise identical when repeated on reused memory', () => {
    const l = layer(device, 80);
    const x = Tensor.randn([M, K], { seed: 81, device });
    const first = bits(lora.forward({ x, ...l.dev, scale: l.scale }));
    for (let i = 0; i < 3; i++) {
      const y = lora.forward({ x, ...l.dev, scale: l.scale });
      expect(bits(y)).toEqual(first);
      y.dispose();
    }
  });

  const iterations = focusedRun ? 10 : 50;
  it(`memoryStats: freed blocks are cached and reused (no growth over ${iterations} iterations), emptyCache drops them`, () => {
    const l = layer(device, 90);
    const x = Tensor.randn([M, K], { seed: 91, device });
    const step = () => {
      const y = lora.forward({ x, ...l.dev, scale: l.scale });
      const g = lora.backward({ gradOutput: y, x, ...l.dev, scale: l.scale });
      for (const t of [y, g.gradA, g.gradB, g.gradInput]) t?.dispose();
    };
    step();
    synchronize(device);
    const warm = memoryStats(device);
    for (let i = 0; i < iterations; i++) step();
    synchronize(device);
    const after = memoryStats(device);
    expect(after.deviceAllocations).toBe(warm.deviceAllocations);
    expect(after.reservedBytes).toBe(warm.reservedBytes);
    expect(after.allocatedBytes).toBe(warm.allocatedBytes);
    expect(after.cacheHits).toBeGreaterThanOrEqual(warm.cacheHits + iterations * 4);
    expect(after.peakAllocatedBytes).toBeGreaterThanOrEqual(after.allocatedBytes);
    expect(after.reservedBytes).toBe(after.allocatedBytes + after.cachedBytes);

    emptyCache(device);
    const empty = memoryStats(device);
    expect(empty.cachedBytes).toBe(0);
    expect(empty.allocatedBytes).toBe(after.allocatedBytes);
    expect(empty.reservedBytes).toBe(empty.allocatedBytes);

    const t = Tensor.empty([1000], { device });  // 4000 bytes → a 4096-byte block from cudaMalloc
    const held = memoryStats(device);
    expect(held.allocatedBytes).toBe(empty.allocatedBytes + 4096);
    expect(held.deviceAllocations).toBe(empty.deviceAllocations + 1);
    t.dispose();
    const freed = memoryStats(device);
    expect(freed.allocatedBytes).toBe(empty.allocatedBytes);
    expect(freed.cachedBytes).toBe(4096);
    Tensor.empty([1020], { device }).dispose();  // 4080 bytes: the same block again
    expect(memoryStats(device).cacheHits).toBe(freed.cacheHits + 1);
    step();  // the allocator works after emptying
    reference.assertClose(lora.forward({ x, ...l.dev, scale: l.scale }), reference.lora.forward({ x, ...l.dev, scale: l.scale }), { dtype: 'float32' });
  });

  it('a huge allocation is ERR_OUT_OF_MEMORY naming the size and the usage, after flushing the cache; the cache works afterwards', () => {
    Tensor.empty([100_000], { device }).dispose();  // something cached
    expect(memoryStats(device).cachedBytes).toBeGreaterThan(0);
    expectError(() => Tensor.empty([2 ** 46], { device }), 'ERR_OUT_OF_MEMORY',
      /^deviceAlloc: out of memory on CUDA device \d+ allocating 256\.0 TiB \(281474976710656 bytes\): .* in use by tensors and ops, 0 bytes cached \(\d.* of cached blocks were freed and the allocation retried\)$/);
    expect(memoryStats(device).cachedBytes).toBe(0);
    const l = layer(device, 100);
    const xHost = Tensor.randn([M, K], { seed: 101 });
    reference.assertClose(lora.forward({ x: xHost.to(device), ...l.dev, scale: l.scale }), referenceOf(l, xHost), { dtype: 'float32' });
  });

  it('events time the work between them (the benchmarks\' internal natives)', () => {
    const index = device === 'cuda' ? 0 : Number(device.slice(5));
    const l = layer(device, 110);
    const x = Tensor.randn([M, K], { seed: 111, device });
    const start = callNative((m) => m.eventRecord(index), { cuda: true });
    lora.forward({ x, ...l.dev, scale: l.scale });
    const stop = callNative((m) => m.eventRecord(index));
    const ms = callNative((m) => m.eventElapsedMs(start, stop));
    expect(ms).toBeGreaterThanOrEqual(0);
    expect(ms).toBeLessThan(60_000);
    callNative((m) => m.eventDestroy(start));
    callNative((m) => m.eventDestroy(start));  // idempotent
    expectError(() => callNative((m) => m.eventElapsedMs(start, stop)), 'ERR_DISPOSED', /^start: the event was destroyed$/);
    const buffer = Tensor.native(x, 'test', 'x').data as unknown as NativeEvent;
    expectError(() => callNative((m) => m.eventElapsedMs(buffer, stop)), 'ERR_ARGUMENT', /^start: expected an event from eventRecord$/);
  });
});

describe('synchronize / memoryStats / emptyCache arguments', () => {
  const cudaAvailable = backends().cuda.available;
  it.each([['synchronize', synchronize], ['memoryStats', memoryStats], ['emptyCache', emptyCache]] as const)('%s on cpu, on a missing device and on a bad name → ERR_DEVICE', (name, fn) => {
    expectError(() => fn('cpu'), 'ERR_DEVICE', new RegExp(`^${name}: device must be a CUDA device \\('cuda' or 'cuda:<index>'\\), got the string "cpu"$`));
    expectError(() => fn('gpu' as Device), 'ERR_DEVICE', new RegExp(`^${name}: device must be 'cpu', 'cuda' or 'cuda:<index>'`));
    if (cudaAvailable) {
      expectError(() => fn('cuda:99'), 'ERR_DEVICE', new RegExp(`^${name}: device must be one of the \\d+ CUDA device\\(s\\) .*got the string "cuda:99"$`));
    } else {
      expectError(() => fn(), 'ERR_DEVICE', new RegExp(`^${name}: device must be a CUDA device of this process, got the string "cuda" \\(CUDA is not available: .+\\)$`));
    }
  });
});
