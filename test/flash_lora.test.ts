import { describe, expect, it } from 'vitest';

import { attention, backends, type Device, type DType, type FlashLoraArgs, reference, Tensor } from '../lib/index.js';
import { native } from '../lib/native.js';
import type { RefTensor } from '../lib/reference/index.js';
import { focusedRun, poisoned, testDevices } from './helpers/devices.js';
import { deviceCopiesDuring } from './helpers/copies.js';
import { expectError } from './helpers/errors.js';

interface AttnCase {
  name: string;
  dtype: DType;
  batch: number;
  sq: number;
  sk: number;
  hq: number;
  hk: number;
  d: number;
  /** Value-path rank (0: none), key-path rank (0: none), adapters L. */
  rv: number;
  rk: number;
  adapters: number;
  causal: boolean;
  /** Per-sequence adapter ids (−1: none); undefined: the default (all 0). */
  ids?: number[];
  large: boolean; // skipped under emulation
}

// Odd lengths (1, 7, 37, 129) against every head dim, GQA ratios 1/2/4/8, ranks 1/8/13/64, both
// masks, mixed adapters (and −1), the optional key path; three dtypes.
const HEAD_DIMS = [32, 64, 80, 96, 128, 256];
const LENGTHS: [number, number][] = [[7, 37], [37, 37], [1, 129], [129, 129], [37, 7], [1, 7], [7, 129], [129, 37]];
const GQA: [number, number][] = [[2, 2], [4, 2], [8, 2], [8, 1]];
const RANKS = [8, 1, 13, 64];

function forwardCases(): AttnCase[] {
  const cases: AttnCase[] = [];
  let i = 0;
  for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
    for (let j = 0; j < 8; j++, i++) {
      const [sq, sk] = LENGTHS[(i + Math.floor(i / 8)) % LENGTHS.length]!;
      const [hq, hk] = GQA[i % GQA.length]!;
      const d = HEAD_DIMS[i % HEAD_DIMS.length]!;
      const batch = 1 + (i % 3 === 0 ? 1 : 0) + (i % 5 === 0 ? 1 : 0);
      const adapters = 1 + (i % 3);
      const ids = i % 4 === 1 ? undefined : Array.from({ length: batch }, (_, b) => ((b + i) % (adapters + 1)) - 1);
      cases.push({
        name: '', dtype, batch, sq, sk, hq, hk, d, rv: i % 7 === 6 ? 0 : RANKS[i % 4]!, rk: i % 3 === 2 ? RANKS[(i + 1) % 4]! : 0,
        adapters, causal: i % 2 === 0, ids, large: sq * sk * hq * d * batch > 600_000,
      });
    }
  }
  // Split-KV decode (Sq = 1 against a long cache), on every dtype; GQA 8 rows per KV head.
  cases.push({ name: '', dtype: 'float32', batch: 2, sq: 1, sk: 1500, hq: 8, hk: 1, d: 64, rv: 16, rk: 0, adapters: 2, causal: true, ids: [1, 0], large: false });
  cases.push({ name: '', dtype: 'bfloat16', batch: 1, sq: 1, sk: 777, hq: 4, hk: 4, d: 128, rv: 13, rk: 4, adapters: 1, causal: false, large: false });
  cases.push({ name: '', dtype: 'float16', batch: 1, sq: 2, sk: 1025, hq: 2, hk: 1, d: 96, rv: 128, rk: 0, adapters: 3, causal: true, ids: [2], large: false });
  // Causal with Sq > Sk: the first Sq − Sk queries see no key (out 0, lse −∞).
  cases.push({ name: '', dtype: 'float32', batch: 1, sq: 9, sk: 5, hq: 2, hk: 1, d: 32, rv: 3, rk: 2, adapters: 1, causal: true, large: false });
  // Past one tile in every direction on the CPU (and the GPU kernels' larger tiles).
  cases.push({ name: '', dtype: 'float32', batch: 2, sq: 300, sk: 517, hq: 4, hk: 2, d: 128, rv: 16, rk: 0, adapters: 2, causal: true, ids: [1, -1], large: true });
  cases.push({ name: '', dtype: 'bfloat16', batch: 1, sq: 257, sk: 257, hq: 2, hk: 1, d: 256, rv: 64, rk: 8, adapters: 1, causal: false, large: true });
  for (const c of cases) {
    c.name = `${c.dtype} B=${c.batch} Sq=${c.sq} Sk=${c.sk} H=${c.hq}/${c.hk} D=${c.d} rv=${c.rv} rk=${c.rk} L=${c.adapters}` +
      `${c.causal ? ' causal' : ''}${c.ids ? ` ids=[${c.ids.join(',')}]` : ''}`;
  }
  return cases;
}

// The Hopper kernel's cases (cuda/flash_lora_wgmma.cu: 16-bit, D 64 / 128, ranks multiples of 8
// up to 64, more than 16 rows per KV head): two consumers' rows (160 = 2 row tiles of 128 with
// GQA 8), partial key tiles, a batch mixing an adapter and none, each path alone, no adapter path
// (no low-rank products), RB 16 and 64, causal with Sq > Sk. On the emulated sm_90 (2 SMs) each
// must run there; elsewhere they check results like every case.
function hopperCases(): AttnCase[] {
  const base = { name: '', adapters: 2, large: false };
  const cases: AttnCase[] = [
    { ...base, dtype: 'bfloat16', batch: 2, sq: 20, sk: 70, hq: 8, hk: 1, d: 64, rv: 16, rk: 8, causal: true, ids: [1, -1] },
    { ...base, dtype: 'float16', batch: 1, sq: 9, sk: 65, hq: 4, hk: 2, d: 128, rv: 64, rk: 0, causal: false },
    { ...base, dtype: 'bfloat16', batch: 1, sq: 24, sk: 24, hq: 2, hk: 2, d: 128, rv: 0, rk: 0, causal: true },
    { ...base, dtype: 'float16', batch: 2, sq: 12, sk: 40, hq: 4, hk: 1, d: 64, rv: 24, rk: 40, causal: true, ids: [0, 1], adapters: 3 },
    { ...base, dtype: 'bfloat16', batch: 1, sq: 40, sk: 17, hq: 2, hk: 1, d: 64, rv: 0, rk: 16, causal: true },
  ];
  for (const c of cases) {
    c.name = `${c.dtype} B=${c.batch} Sq=${c.sq} Sk=${c.sk} H=${c.hq}/${c.hk} D=${c.d} rv=${c.rv} rk=${c.rk} L=${c.adapters}` +
      `${c.causal ? ' causal' : ''}${c.ids ? ` ids=[${c.ids.join(',')}]` : ''}`;
  }
  return cases;
}
const pinnedHopper = (() => {
  const cuda = backends().cuda;
  return cuda.available && cuda.emulated && process.env['SIMT_EMU_WORKERS'] === '2' && cuda.devices[0]?.computeCapability === '9.0';
})();

// Fewer and smaller for the backward (the float64 reference is O(B·H·Sq·Sk·D) in JavaScript); both masks.
function backwardCases(): AttnCase[] {
  return forwardCases().filter((c, i) => i % 3 !== 2 || c.sq === 9).map((c) => ({ ...c, sk: Math.min(c.sk, 129), sq: Math.min(c.sq, 129) }))
    .map((c) => ({ ...c, name: `${c.name.replace(/Sq=\d+ Sk=\d+/, `Sq=${c.sq} Sk=${c.sk}`)}`, large: c.large || c.sq * c.sk * c.hq * c.d * c.batch > 300_000 }));
}

/** The op's inputs with the ids as numbers (what the float64 reference reads too). */
type Inputs = Omit<FlashLoraArgs, 'out' | 'lse' | 'adapterIds'> & { adapterIds?: number[]; causal: boolean };

function makeInputs(c: AttnCase, device: Device, seed: number): Inputs {
  const opts = (s: number) => ({ dtype: c.dtype, device, seed: seed * 100 + s });
  const inputs: Inputs = {
    q: Tensor.randn([c.batch, c.sq, c.hq, c.d], opts(1)),
    kBase: Tensor.randn([c.batch, c.sk, c.hk, c.d], opts(2)),
    vBase: Tensor.randn([c.batch, c.sk, c.hk, c.d], opts(3)),
    causal: c.causal,
  };
  if (c.rv) {
    inputs.vLowRank = Tensor.randn([c.batch, c.sk, c.rv], opts(4));
    inputs.vLoraB = Tensor.randn([c.adapters, c.hk, c.rv, c.d], opts(5));
  }
  if (c.rk) {
    inputs.kLowRank = Tensor.randn([c.batch, c.sk, c.rk], opts(6));
    inputs.kLoraB = Tensor.randn([c.adapters, c.hk, c.rk, c.d], opts(7));
  }
  if (c.ids) inputs.adapterIds = c.ids;
  return inputs;
}

// focusedRun (the ThreadSanitizer run): a few small cases that still cross tiles, masks, GQA and
// the split-KV path.
const FOCUSED_WORK = 200_000;
const work = (c: AttnCase) => c.batch * c.sq * c.sk * c.hq * c.d;

describe.each(testDevices())('attention.flashLora / flashLoraBackward on $device', ({ device, emulated }) => {
  const keep = (c: AttnCase) => !(emulated && c.large) && !(focusedRun && work(c) > FOCUSED_WORK);
  const fwd = forwardCases().filter(keep);
  it.each(fwd.map((c, i) => [c.name, c, i] as const))('forward %s', (_name, c, seed) => {
    const inputs = makeInputs(c, device, seed + 1);
    const out = poisoned([c.batch, c.sq, c.hq, c.d], c.dtype, device);
    const lse = poisoned([c.batch, c.hq, c.sq], 'float32', device);
    const result = attention.flashLora({ ...inputs, out, lse });
    expect(result.out).toBe(out);
    expect(result.lse).toBe(lse);
    const expected = reference.attention.flashLora(inputs);
    reference.assertClose(out, expected.out, { dtype: c.dtype, label: 'out' });
    reference.assertClose(lse, expected.lse, { dtype: c.dtype, label: 'lse' });
  });

  it.each(hopperCases().filter(keep).map((c, i) => [c.name, c, i] as const))('forward (sm_90: TMA + wgmma) %s', (_name, c, seed) => {
    const inputs = makeInputs(c, device, seed + 41);
    const out = poisoned([c.batch, c.sq, c.hq, c.d], c.dtype, device);
    const lse = poisoned([c.batch, c.hq, c.sq], 'float32', device);
    native().takeOpPlans();
    attention.flashLora({ ...inputs, out, lse });
    const plan = native().takeOpPlans();
    if (device !== 'cpu' && pinnedHopper) expect(plan).toContain(`flash_lora wgmma ${c.dtype} D=${c.d}`);
    const expected = reference.attention.flashLora(inputs);
    reference.assertClose(out, expected.out, { dtype: c.dtype, label: 'out' });
    reference.assertClose(lse, expected.lse, { dtype: c.dtype, label: 'lse' });
  });

  const bwd = backwardCases().filter(keep);
  it.each(bwd.map((c, i) => [c.name, c, i] as const))('backward %s', (_name, c, seed) => {
    const inputs = makeInputs(c, device, seed + 50);
    const { out, lse } = attention.flashLora(inputs);
    const gradOut = Tensor.randn(out.shape, { dtype: c.dtype, device, seed: seed + 5000 });
    // Every gradient poisoned: a kernel that skips an element (an unused adapter's B factor, a
    // masked key, a KV head's group) leaves NaN behind.
    const gradients = {
      gradQ: poisoned(inputs.q.shape, c.dtype, device), gradKBase: poisoned(inputs.kBase.shape, c.dtype, device),
      gradVBase: poisoned(inputs.vBase.shape, c.dtype, device),
      gradVLowRank: inputs.vLowRank && poisoned(inputs.vLowRank.shape, c.dtype, device),
      gradVLoraB: inputs.vLoraB && poisoned(inputs.vLoraB.shape, c.dtype, device),
      gradKLowRank: inputs.kLowRank && poisoned(inputs.kLowRank.shape, c.dtype, device),
      gradKLoraB: inputs.kLoraB && poisoned(inputs.kLoraB.shape, c.dtype, device),
    };
    const grads = attention.flashLoraBackward({ ...inputs, out, lse, gradOut, gradients });
    expect(grads.gradQ).toBe(gradients.gradQ);
    expect(grads.gradVLoraB).toBe(gradients.gradVLoraB);
    const expected = reference.attention.flashLoraBackward({ ...inputs, gradOut, out });
    const pairs: [string, Tensor | undefined, RefTensor | undefined][] = [
      ['gradQ', grads.gradQ, expected.gradQ], ['gradKBase', grads.gradKBase, expected.gradKBase],
      ['gradVBase', grads.gradVBase, expected.gradVBase], ['gradVLowRank', grads.gradVLowRank, expected.gradVLowRank],
      ['gradVLoraB', grads.gradVLoraB, expected.gradVLoraB], ['gradKLowRank', grads.gradKLowRank, expected.gradKLowRank],
      ['gradKLoraB', grads.gradKLoraB, expected.gradKLoraB],
    ];
    for (const [label, actual, want] of pairs) {
      expect(actual === undefined, label).toBe(want === undefined);
      if (!actual || !want) continue;
      expect(actual.shape, label).toEqual(want.shape);
      expect(actual.device, label).toBe(device);
      expect(actual.dtype, label).toBe(c.dtype);
      reference.assertClose(actual, want, { dtype: c.dtype, label });
    }
  });

  it('async forms match the sync ones; adapterIds as a Tensor, an Int32Array or numbers', async () => {
    const c: AttnCase = { name: '', dtype: 'float32', batch: 3, sq: 5, sk: 11, hq: 4, hk: 2, d: 64, rv: 5, rk: 3, adapters: 2, causal: true, large: false };
    const inputs = makeInputs(c, device, 7);
    const ids = [1, -1, 0];
    const sync = attention.flashLora({ ...inputs, adapterIds: ids });
    const fromTensor = await attention.flashLoraAsync({ ...inputs, adapterIds: Tensor.from(Int32Array.from(ids), [3], { dtype: 'int32' }).to(device) });
    const fromTyped = attention.flashLora({ ...inputs, adapterIds: Int32Array.from(ids) });
    for (const r of [fromTensor, fromTyped]) {
      expect(Array.from(r.out.toFloat32())).toEqual(Array.from(sync.out.toFloat32()));
      expect(Array.from(r.lse.toFloat32())).toEqual(Array.from(sync.lse.toFloat32()));
    }
    const gradOut = Tensor.randn(sync.out.shape, { device, seed: 9 });
    const g1 = attention.flashLoraBackward({ ...inputs, adapterIds: ids, ...sync, gradOut });
    const g2 = await attention.flashLoraBackwardAsync({ ...inputs, adapterIds: ids, ...sync, gradOut });
    for (const key of ['gradQ', 'gradKBase', 'gradVBase', 'gradVLowRank', 'gradVLoraB', 'gradKLowRank', 'gradKLoraB'] as const) {
      expect(Array.from(g2[key]!.toFloat32()), key).toEqual(Array.from(g1[key]!.toFloat32()));
    }
    // Sequence 1 has no adapter: the same as running it on the base caches alone.
    const base = attention.flashLora({ q: inputs.q, kBase: inputs.kBase, vBase: inputs.vBase, causal: true });
    const row = 5 * 4 * 64;
    expect(Array.from(sync.out.toFloat32().subarray(row, 2 * row))).toEqual(Array.from(base.out.toFloat32().subarray(row, 2 * row)));
  });

  it('adapterIds given as numbers are copied to a CUDA device for the call and freed after it', async () => {
    const c: AttnCase = { name: '', dtype: 'float32', batch: 2, sq: 3, sk: 6, hq: 2, hk: 1, d: 32, rv: 4, rk: 2, adapters: 2, causal: true, large: false };
    const inputs = makeInputs(c, device, 17);
    const ids = [1, 0];
    const gradOut = Tensor.randn([2, 3, 2, 32], { device, seed: 3 });
    const copies = await deviceCopiesDuring(async () => {
      const result = attention.flashLora({ ...inputs, adapterIds: ids });
      await attention.flashLoraAsync({ ...inputs, adapterIds: Int32Array.from(ids) });
      attention.flashLoraBackward({ ...inputs, adapterIds: ids, ...result, gradOut });
      await attention.flashLoraBackwardAsync({ ...inputs, adapterIds: ids, ...result, gradOut });
    });
    expect(copies.length).toBe(device === 'cpu' ? 0 : 4);
    expect(copies.filter((t) => !t.disposed)).toEqual([]);
  });

  it('ids in a tensor: checked on the CPU; a CUDA tensor is not read back and an id ≥ L runs base only', () => {
    const c: AttnCase = { name: '', dtype: 'float32', batch: 2, sq: 3, sk: 6, hq: 2, hk: 1, d: 32, rv: 4, rk: 2, adapters: 2, causal: true, large: false };
    const inputs = makeInputs(c, device, 13);
    const ids = Tensor.from(Int32Array.from([1, 2]), [2], { dtype: 'int32' }).to(device);
    if (device === 'cpu') {
      expectError(() => attention.flashLora({ ...inputs, adapterIds: ids }), 'ERR_ARGUMENT', /adapterIds\[1\] must be an integer in −1…1 \(L = 2\), got 2/);
      return;
    }
    const withIds = attention.flashLora({ ...inputs, adapterIds: ids });
    const expected = attention.flashLora({ ...inputs, adapterIds: [1, -1] });
    expect(Array.from(withIds.out.toFloat32())).toEqual(Array.from(expected.out.toFloat32()));
  });

  it('an empty batch: nothing to attend, and the B factors\' gradients are zeros', () => {
    const c: AttnCase = { name: '', dtype: 'float32', batch: 0, sq: 3, sk: 4, hq: 2, hk: 1, d: 32, rv: 2, rk: 1, adapters: 2, causal: false, large: false };
    const inputs = makeInputs(c, device, 5);
    const { out, lse } = attention.flashLora(inputs);
    expect(out.shape).toEqual([0, 3, 2, 32]);
    expect(lse.shape).toEqual([0, 2, 3]);
    const gradVLoraB = poisoned([2, 1, 2, 32], 'float32', device);
    const gradKLoraB = poisoned([2, 1, 1, 32], 'float32', device);
    const grads = attention.flashLoraBackward({ ...inputs, out, lse, gradOut: out, gradients: { gradVLoraB, gradKLoraB } });
    expect(Array.from(grads.gradVLoraB!.toFloat32())).toEqual(new Array(128).fill(0));
    expect(Array.from(grads.gradKLoraB!.toFloat32())).toEqual(new Array(64).fill(0));
  });

  it('an explicit softmaxScale, and the low-rank path equals attention over the expanded caches', () => {
    const c: AttnCase = { name: '', dtype: 'float32', batch: 1, sq: 6, sk: 13, hq: 2, hk: 1, d: 32, rv: 4, rk: 0, adapters: 1, causal: false, large: false };
    const inputs = makeInputs(c, device, 11);
    const lowRank = attention.flashLora({ ...inputs, softmaxScale: 0.3 });
    const v = reference.attention.expandCache(inputs.vBase, inputs.vLowRank!, inputs.vLoraB!, [0]);
    const expanded = attention.flashLora({ q: inputs.q, kBase: inputs.kBase, vBase: Tensor.from(Float32Array.from(v.data), v.shape).to(device), softmaxScale: 0.3 });
    reference.assertClose(lowRank.out, expanded.out.toFloat32(), { dtype: 'float32' });
    reference.assertClose(lowRank.out, reference.attention.flashLora({ ...inputs, softmaxScale: 0.3 }).out, { dtype: 'float32' });
  });

  it('bad arguments are typed errors naming the argument', () => {
    const c: AttnCase = { name: '', dtype: 'float32', batch: 2, sq: 3, sk: 5, hq: 4, hk: 2, d: 32, rv: 4, rk: 0, adapters: 2, causal: false, large: false };
    const x = makeInputs(c, device, 3);
    const t = (shape: number[], dtype: DType = 'float32') => Tensor.zeros(shape, { dtype, device });
    expectError(() => attention.flashLora({ ...x, q: t([2, 3, 4, 48]), kBase: t([2, 5, 2, 48]), vBase: t([2, 5, 2, 48]) }), 'ERR_SHAPE', /q\.shape must be \[B, Sq, Hq, D\].*D in \{32, 64, 80, 96, 128, 256\}, got \[2, 3, 4, 48\]/);
    expectError(() => attention.flashLora({ ...x, kBase: t([2, 5, 3, 32]), vBase: t([2, 5, 3, 32]) }), 'ERR_SHAPE', /kBase\.shape must be .*Hk dividing Hq = 4.*got \[2, 5, 3, 32\]/);
    expectError(() => attention.flashLora({ ...x, vBase: t([2, 6, 2, 32]) }), 'ERR_SHAPE', /vBase\.shape must be \[2, 5, 2, 32\], got \[2, 6, 2, 32\]/);
    expectError(() => attention.flashLora({ ...x, vLoraB: undefined }), 'ERR_ARGUMENT', /vLoraB must be given with vLowRank, got undefined/);
    expectError(() => attention.flashLora({ ...x, vLowRank: t([2, 5, 129]), vLoraB: t([2, 2, 129, 32]) }), 'ERR_SHAPE', /vLowRank\.shape must be \[2, 5, r\].*1 ≤ r ≤ 128.*got \[2, 5, 129\]/);
    expectError(() => attention.flashLora({ ...x, vLoraB: t([2, 2, 3, 32]) }), 'ERR_SHAPE', /vLoraB\.shape must be \[L, 2, 4, 32\].*got \[2, 2, 3, 32\]/);
    expectError(() => attention.flashLora({ ...x, kLowRank: t([2, 5, 2]), kLoraB: t([3, 2, 2, 32]) }), 'ERR_SHAPE', /kLoraB\.shape\[0\] must be 2 adapters like vLoraB, got 3/);
    expectError(() => attention.flashLora({ ...x, adapterIds: [0, 2] }), 'ERR_ARGUMENT', /adapterIds\[1\] must be an integer in −1…1 \(L = 2\), got 2/);
    expectError(() => attention.flashLora({ ...x, adapterIds: [0, 0.5] }), 'ERR_ARGUMENT', /adapterIds\[1\] must be an integer/);
    expectError(() => attention.flashLora({ ...x, adapterIds: [0] }), 'ERR_SHAPE', /adapterIds\.length must be 2 \(B of q\), got 1/);
    expectError(() => attention.flashLora({ ...x, adapterIds: t([2]) }), 'ERR_DTYPE', /adapterIds must be of dtype int32, got float32/);
    expectError(() => attention.flashLora({ ...x, kBase: t([2, 5, 2, 32], 'float16') }), 'ERR_DTYPE', /kBase must be float32 like q, got float16/);
    expectError(() => attention.flashLora({ ...x, softmaxScale: Number.NaN }), 'ERR_ARGUMENT', /softmaxScale must be a finite number, got number NaN/);
    expectError(() => attention.flashLora({ ...x, causal: 1 as unknown as boolean }), 'ERR_ARGUMENT', /causal must be a boolean/);
    expectError(() => attention.flashLora({ ...x, out: x.q }), 'ERR_ARGUMENT', /out must be memory not shared with q/);
    expectError(() => attention.flashLora({ ...x, lse: t([2, 4, 4]) }), 'ERR_SHAPE', /lse\.shape must be \[2, 4, 3\], got \[2, 4, 4\]/);
    const { out, lse } = attention.flashLora(x);
    expectError(() => attention.flashLoraBackward({ ...x, out, lse, gradOut: t([2, 3, 4, 64]) }), 'ERR_SHAPE', /gradOut\.shape must be \[2, 3, 4, 32\]/);
    expectError(() => attention.flashLoraBackward({ ...x, out, lse: t([2, 4, 3], 'float16'), gradOut: out }), 'ERR_DTYPE', /lse must be of dtype float32, got float16/);
    expectError(() => attention.flashLoraBackward({ ...x, out, lse, gradOut: out, gradients: { gradKBase: t([2, 5, 2, 32], 'float16') } }), 'ERR_DTYPE', /gradients\.gradKBase must be float32 like kBase, got float16/);
    expectError(() => attention.flashLoraBackward({ ...x, out, lse, gradOut: out, gradients: { gradVLoraB: t([2, 2, 4, 31]) } }), 'ERR_SHAPE', /gradients\.gradVLoraB\.shape must be \[2, 2, 4, 32\], got \[2, 2, 4, 31\]/);
    expectError(() => attention.flashLoraBackward({ ...x, out, lse, gradOut: out, gradients: { gradQ: out } }), 'ERR_ARGUMENT', /gradients\.gradQ must be memory not shared with out/);
    const shared = t([2, 5, 2, 32]);
    expectError(() => attention.flashLoraBackward({ ...x, out, lse, gradOut: out, gradients: { gradKBase: shared, gradVBase: shared } }), 'ERR_ARGUMENT', /gradients\.gradVBase must be memory not shared with another gradient/);
    if (device !== 'cpu') {
      expectError(() => attention.flashLora({ ...x, kBase: Tensor.zeros([2, 5, 2, 32]) }), 'ERR_DEVICE', /kBase must be on cuda like q, got cpu/);
    }
  });
});

describe('reference.attention', () => {
  it('the backward matches central finite differences of the forward (float64)', () => {
    const shapes = { batch: 2, sq: 3, sk: 5, hq: 4, hk: 2, d: 3, rv: 2, rk: 2, adapters: 2 };
    const rand = (shape: number[], seed: number): RefTensor => {
      const t = Tensor.randn(shape, { seed, dtype: 'float64' });
      return { data: Float64Array.from(t.toArray() as Float64Array), shape };
    };
    const { batch, sq, sk, hq, hk, d, rv, rk, adapters } = shapes;
    const inputs = {
      q: rand([batch, sq, hq, d], 1), kBase: rand([batch, sk, hk, d], 2), vBase: rand([batch, sk, hk, d], 3),
      vLowRank: rand([batch, sk, rv], 4), vLoraB: rand([adapters, hk, rv, d], 5),
      kLowRank: rand([batch, sk, rk], 6), kLoraB: rand([adapters, hk, rk, d], 7),
    };
    const gradOut = rand([batch, sq, hq, d], 8);
    for (const causal of [false, true]) {
      const args = { ...inputs, adapterIds: [1, -1], causal, softmaxScale: 0.7 };
      const grads = reference.attention.flashLoraBackward({ ...args, gradOut });
      const loss = () => reference.attention.flashLora(args).out.data.reduce((s, v, i) => s + v * gradOut.data[i]!, 0);
      const names = { q: 'gradQ', kBase: 'gradKBase', vBase: 'gradVBase', vLowRank: 'gradVLowRank', vLoraB: 'gradVLoraB', kLowRank: 'gradKLowRank', kLoraB: 'gradKLoraB' } as const;
      for (const [input, gradName] of Object.entries(names) as [keyof typeof inputs, keyof typeof grads][]) {
        const x = inputs[input].data;
        const fd = new Float64Array(x.length);
        const h = 1e-6;
        for (let i = 0; i < x.length; i++) {
          const keep = x[i]!;
          x[i] = keep + h;
          const up = loss();
          x[i] = keep - h;
          const down = loss();
          x[i] = keep;
          fd[i] = (up - down) / (2 * h);
        }
        reference.assertClose(grads[gradName]!, { data: fd, shape: inputs[input].shape }, { dtype: 'float32', label: `${gradName} causal=${causal}` });
      }
    }
  });
});
