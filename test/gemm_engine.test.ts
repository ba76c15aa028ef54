/**
 * The CUDA GEMM engine's paths, reached through the ops with medium odd shapes (on every device:
 * on the CPU they are more cases of the same ops). Under emulation the device reports
 * SIMT_EMU_WORKERS SMs — scripts/test-emulated.mjs pins 2 — and the shapes are chosen so that,
 * with 2 SMs, each case lands on the path in its name (cuda/gemm.cu picks mainloop, tile and
 * split-K): every tile (128×256, 128×128, 64×64, 128×32), K-major and MN-major operands, split-K,
 * the hi + lo low-rank activations, per-tile segment lists (forwardMulti), the row-norm epilogue
 * (DoRA), TF32 and the exact FMA mainloop, more than one group of 8 row tiles (the rasterization),
 * K edges inside a k-tile and rows that are not 16-byte aligned. With SIMT_EMU_CC=7.5 the same
 * cases run the sm_75 path (FMA for every dtype), and with SIMT_EMU_CC=9.0 the Hopper path where a
 * case names its `hopper` kernels (the wgmma mainloop on both tiles, the MN-major B, and where it
 * gives way to mma.sync: a rank-5 B whose rows are not 16-byte aligned for TMA); test-emulated.mjs
 * runs both.
 */
import { describe, expect, it } from 'vitest';

import { backends, type Device, type DType, lora, reference, Tensor } from '../lib/index.js';
import { native } from '../lib/native.js';
import { poisoned, testDevices } from './helpers/devices.js';

const onDevice = (t: Tensor, device: Device) => (device === 'cpu' ? t : t.to(device));

// The kernels an op chose (native takeOpPlans, taken before and after it) must be the case's path
// where the choice is known: the emulated device with 2 SMs as an sm_80 (`kernels`) or an sm_90
// (`hopper`, where given). Elsewhere (a GPU, SIMT_EMU_CC=7.5) the same case checks its result only.
const pinnedCc = (() => {
  const cuda = backends().cuda;
  return cuda.available && cuda.emulated && process.env['SIMT_EMU_WORKERS'] === '2' ? cuda.devices[0]?.computeCapability : undefined;
})();
function expectPath<T>(device: Device, c: { kernels: readonly string[]; hopper?: readonly string[] }, op: () => T): T {
  native().takeOpPlans();
  const result = op();
  const plan = native().takeOpPlans();
  const kernels = device === 'cpu' ? [] : pinnedCc === '8.0' ? c.kernels : pinnedCc === '9.0' ? c.hopper ?? [] : [];
  for (const k of kernels) expect(plan, `the op's kernels: ${plan}`).toContain(k);
  return result;
}

/** Inverted dropout with p = 0.25: entries 0 or 4/3 (exact in every dtype). */
function dropoutMask(shape: number[], dtype: DType, device: Device, seed: number): Tensor {
  const keep = Tensor.randn(shape, { seed }).toFloat32();
  return onDevice(Tensor.from(Array.from(keep, (z) => (z > -0.6745 ? 4 / 3 : 0)), shape, { dtype }), device);
}

interface Case { path: string; kernels: string[]; hopper?: string[]; dtype: DType; m: number; k: number; n: number; r: number; mask?: boolean; tf32?: boolean }
const FORWARD: Case[] = [
  { path: 'mma / wgmma 128x256 KK, T as hi + lo', kernels: ['mma.sync bfloat16 128x32 KK', 'mma.sync bfloat16 128x256 KK'],
    hopper: ['wgmma bfloat16 128x256 KK tma 4 stages'], dtype: 'bfloat16', m: 300, k: 200, n: 300, r: 16 },
  { path: 'mma 128x128 KK, 9 row tiles (two raster groups), dropout; sm_90: B of rank 5 is no TMA operand', kernels: ['mma.sync float16 128x128 KK'],
    hopper: ['wgmma float16 128x256 KK tma 4 stages', 'mma.sync float16 128x128 KK'], dtype: 'float16', m: 1100, k: 40, n: 120, r: 5, mask: true },
  { path: 'wgmma 128x128 KK (6 stages, 9 k-tiles: every stage refilled)', kernels: ['mma.sync float16 128x32 KK split-k 2', 'mma.sync float16 128x128 KK'],
    hopper: ['wgmma float16 128x128 KK tma 6 stages'], dtype: 'float16', m: 120, k: 520, n: 200, r: 8 },
  { path: 'mma 64x64 KK split-K (K = 3001)', kernels: ['mma.sync float16 128x32 KK split-k 2', 'mma.sync float16 64x64 KK split-k 2'], dtype: 'float16', m: 33, k: 3001, n: 40, r: 4 },
  { path: 'TF32 mma 128x128 KK', kernels: ['mma.sync tf32 float32 128x32 KK', 'mma.sync tf32 float32 128x128 KK'], dtype: 'float32', m: 200, k: 90, n: 140, r: 3, tf32: true },
  { path: 'FMA 128x128 KK, rows not 16-byte aligned', kernels: ['fma float32 64x64 KK', 'fma float32 128x128 KK'], dtype: 'float32', m: 200, k: 51, n: 150, r: 9 },
  { path: 'FMA 64x64 split-K', kernels: ['fma float32 64x64 KK split-k 2'], dtype: 'float32', m: 20, k: 2050, n: 30, r: 2, mask: true },
];

const BACKWARD: Case[] = [
  { path: 'gradInput KN without a mask: on sm_90 wgmma with the MN-major W through the descriptor\'s transpose bit',
    kernels: ['mma.sync bfloat16 128x32 KN', 'mma.sync bfloat16 128x128 KN'], hopper: ['wgmma bfloat16 128x256 KN tma 4 stages', 'mma.sync bfloat16 64x64 NN'],
    dtype: 'bfloat16', m: 150, k: 168, n: 96, r: 16 },
  { path: 'gradInput KN with the dropout mask between segments: on sm_90 wgmma 128x128 (the mask applied after dT·A retires)',
    kernels: ['mma.sync float16 128x32 KN', 'mma.sync float16 128x128 KN'], hopper: ['wgmma float16 128x128 KN tma 6 stages'],
    dtype: 'float16', m: 150, k: 168, n: 96, r: 16, mask: true },
  { path: 'gradInput mma 128x128 KN with the mask between segments, dT 128x32 KN, gradA/gradB NN',
    kernels: ['mma.sync bfloat16 128x32 KN', 'mma.sync bfloat16 128x32 NN split-k 2', 'mma.sync bfloat16 64x64 NN', 'mma.sync bfloat16 128x128 KN'],
    dtype: 'bfloat16', m: 150, k: 170, n: 90, r: 20, mask: true },
  { path: 'gradA / gradB NN split-K over 700 rows', kernels: ['mma.sync float16 128x32 NN split-k 2', 'mma.sync float16 64x64 NN split-k 2'],
    dtype: 'float16', m: 700, k: 60, n: 50, r: 8 },
  { path: 'FMA KN and NN', kernels: ['fma float32 64x64 KN', 'fma float32 64x64 NN', 'fma float32 128x128 KN'], dtype: 'float32', m: 130, k: 70, n: 90, r: 6, mask: true },
];

describe.each(testDevices())('GEMM engine paths on $device', ({ device }) => {
  it.each(FORWARD.map((c) => [`forward ${c.dtype} ${c.m}x${c.k}x${c.n} r=${c.r}: ${c.path}`, c] as const))('%s', (_name, c) => {
    const opts = (seed: number) => ({ dtype: c.dtype, device, seed });
    const inputs = {
      x: Tensor.randn([c.m, c.k], opts(1)),
      weight: Tensor.randn([c.n, c.k], opts(2)),
      bias: Tensor.randn([c.n], opts(3)),
      a: Tensor.randn([c.r, c.k], opts(4)),
      b: Tensor.randn([c.n, c.r], opts(5)),
      dropoutMask: c.mask ? dropoutMask([c.m, c.k], c.dtype, device, 6) : undefined,
      scale: 0.75,
    };
    const out = poisoned([c.m, c.n], c.dtype, device);
    const y = expectPath(device, c, () => lora.forward({ ...inputs, allowTf32: c.tf32, out }));
    reference.assertClose(y, reference.lora.forward(inputs), { dtype: c.tf32 && device !== 'cpu' ? 'tf32' : c.dtype });
  });

  it.each(BACKWARD.map((c) => [`backward ${c.dtype} ${c.m}x${c.k}x${c.n} r=${c.r}: ${c.path}`, c] as const))('%s', (_name, c) => {
    const opts = (seed: number) => ({ dtype: c.dtype, device, seed });
    const inputs = {
      gradOutput: Tensor.randn([c.m, c.n], opts(11)),
      x: Tensor.randn([c.m, c.k], opts(12)),
      weight: Tensor.randn([c.n, c.k], opts(13)),
      a: Tensor.randn([c.r, c.k], opts(14)),
      b: Tensor.randn([c.n, c.r], opts(15)),
      dropoutMask: c.mask ? dropoutMask([c.m, c.k], c.dtype, device, 16) : undefined,
      scale: 1.5,
    };
    const out = {
      gradInput: poisoned([c.m, c.k], c.dtype, device),
      gradA: poisoned([c.r, c.k], c.dtype, device),
      gradB: poisoned([c.n, c.r], c.dtype, device),
    };
    const grads = expectPath(device, c, () => lora.backward({ ...inputs, out }));
    const expected = reference.lora.backward(inputs);
    reference.assertClose(grads.gradInput!, expected.gradInput!, { dtype: c.dtype, label: 'gradInput' });
    reference.assertClose(grads.gradA, expected.gradA, { dtype: c.dtype, label: 'gradA' });
    reference.assertClose(grads.gradB, expected.gradB, { dtype: c.dtype, label: 'gradB' });
  });

  // 300 rows over 3 row tiles of 128, 10 adapters with mixed ranks (A and B poisoned past each
  // rank), a share of base-only rows: per-tile segment lists, the gather of x and scatter of y.
  // On an sm_90 the low-rank segments go alone into a float32 scratch and x·Wᵀ runs on wgmma with
  // it as the epilogue's addend.
  it.each(['bfloat16', 'float32'] as DType[])('forwardMulti %s 300x64x150, 10 adapters: per-tile segment lists', (dtype) => {
    const m = 300, k = 64, n = 150, rMax = 16, adapters = 10;
    const ranks = Int32Array.from({ length: adapters }, (_, l) => [16, 3, 9, 1, 12][l % 5]!);
    const nan = dtype === 'float32' ? NaN : 0x7fc0;
    const padded = (shape: number[], seed: number, past: (l: number, i: number) => boolean) => {
      const host = Tensor.randn(shape, { dtype, seed }).toArray();
      const per = shape[1]! * shape[2]!;
      for (let e = 0; e < host.length; e++) if (past(Math.floor(e / per), e % per)) host[e] = nan;
      return onDevice(Tensor.from(host, shape, { dtype }), device);
    };
    const inputs = {
      x: Tensor.randn([m, k], { dtype, device, seed: 21 }),
      weight: Tensor.randn([n, k], { dtype, device, seed: 22 }),
      bias: Tensor.randn([n], { dtype, device, seed: 23 }),
      a: padded([adapters, rMax, k], 24, (l, i) => Math.floor(i / k) >= ranks[l]!),
      b: padded([adapters, n, rMax], 25, (l, i) => i % rMax >= ranks[l]!),
      ranks: onDevice(Tensor.from(ranks, [adapters]), device),
      scales: onDevice(Tensor.from(Float32Array.from({ length: adapters }, (_, l) => 0.5 + l / 8), [adapters]), device),
      adapterIds: onDevice(Tensor.from(Int32Array.from({ length: m }, (_, i) => (i % 11 === 3 ? -1 : (i * 7) % adapters)), [m]), device),
    };
    const out = poisoned([m, n], dtype, device);
    const kernels = dtype === 'float32' ? ['fma float32 128x128 KK'] : ['mma.sync bfloat16 128x32 KK', 'mma.sync bfloat16 128x128 KK'];
    const hopper = dtype === 'float32' ? kernels : [...kernels, 'wgmma bfloat16 128x256 KK tma 4 stages'];
    const y = expectPath(device, { kernels, hopper }, () => lora.forwardMulti({ ...inputs, out }));
    reference.assertClose(y, reference.lora.forwardMulti(inputs), { dtype });
  });

  // W has 300 rows × 260 columns: the row-norm epilogue over 3 × 3 tiles of 128.
  it.each(['float16', 'float32'] as DType[])('doraForward %s 40x260x300 r=8: the row-norm epilogue', (dtype) => {
    const opts = (seed: number) => ({ dtype, device, seed });
    const inputs = {
      x: Tensor.randn([40, 260], opts(31)),
      weight: Tensor.randn([300, 260], opts(32)),
      a: Tensor.randn([8, 260], opts(33)),
      b: Tensor.randn([300, 8], opts(34)),
      magnitude: Tensor.randn([300], { dtype: 'float32', device, seed: 35 }),
      scale: 0.5,
    };
    const out = poisoned([40, 300], dtype, device);
    const kernels = [dtype === 'float32' ? 'fma float32 128x128 KN row-norm' : 'mma.sync float16 128x128 KN row-norm'];
    const y = expectPath(device, { kernels }, () => lora.doraForward({ ...inputs, out }));
    reference.assertClose(y, reference.lora.doraForward(inputs), { dtype });
  });
});
