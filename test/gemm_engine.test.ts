/**
 * The CUDA GEMM engine's paths, reached through the ops with medium odd shapes (on every device:
 * on the CPU they are more cases of the same ops). Under emulation the device reports
 * SIMT_EMU_WORKERS SMs — scripts/test-emulated.mjs pins 2 — and the shapes are chosen so that,
 * with 2 SMs, each case lands on the path in its name (cuda/gemm.cu picks mainloop, tile and
 * split-K): every tile (128×256, 128×128, 64×64, 128×32), K-major and MN-major operands, split-K,
 * the hi + lo low-rank activations, per-tile segment lists (forwardMulti), the row-norm epilogue
 * (DoRA), TF32 and the exact FMA mainloop, more than one group of 8 row tiles (the rasterization),
 * K edges inside a k-tile and rows that are not 16-byte aligned. With SIMT_EMU_CC=7.5 the same
 * cases run the sm_75 path (FMA for every dtype); test-emulated.mjs runs that too.
 */
import { describe, it } from 'vitest';

import { type Device, type DType, lora, reference, Tensor } from '../lib/index.js';
import { poisoned, testDevices } from './helpers/devices.js';

const onDevice = (t: Tensor, device: Device) => (device === 'cpu' ? t : t.to(device));

/** Inverted dropout with p = 0.25: entries 0 or 4/3 (exact in every dtype). */
function dropoutMask(shape: number[], dtype: DType, device: Device, seed: number): Tensor {
  const keep = Tensor.randn(shape, { seed }).toFloat32();
  return onDevice(Tensor.from(Array.from(keep, (z) => (z > -0.6745 ? 4 / 3 : 0)), shape, { dtype }), device);
}

interface ForwardCase { path: string; dtype: DType; m: number; k: number; n: number; r: number; mask?: boolean; tf32?: boolean }
const FORWARD: ForwardCase[] = [
  { path: 'mma 128x256 KK, T as hi + lo', dtype: 'bfloat16', m: 300, k: 200, n: 300, r: 16 },
  { path: 'mma 128x128 KK, 9 row tiles (two raster groups), dropout', dtype: 'float16', m: 1100, k: 40, n: 140, r: 5, mask: true },
  { path: 'mma 64x64 KK split-K (K = 3001)', dtype: 'float16', m: 33, k: 3001, n: 40, r: 4 },
  { path: 'TF32 mma 128x128 KK', dtype: 'float32', m: 200, k: 90, n: 140, r: 3, tf32: true },
  { path: 'FMA 128x128 KK, rows not 16-byte aligned', dtype: 'float32', m: 200, k: 51, n: 150, r: 9 },
  { path: 'FMA 64x64 split-K', dtype: 'float32', m: 20, k: 2050, n: 30, r: 2, mask: true },
];

interface BackwardCase { path: string; dtype: DType; m: number; k: number; n: number; r: number; mask: boolean }
const BACKWARD: BackwardCase[] = [
  { path: 'gradInput mma 128x128 KN with the mask between segments, dT 128x32 KN, gradA/gradB NN', dtype: 'bfloat16', m: 150, k: 170, n: 90, r: 20, mask: true },
  { path: 'gradA / gradB NN split-K over 700 rows', dtype: 'float16', m: 700, k: 60, n: 50, r: 8, mask: false },
  { path: 'FMA KN and NN', dtype: 'float32', m: 130, k: 70, n: 90, r: 6, mask: true },
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
    const y = lora.forward({ ...inputs, allowTf32: c.tf32, out: poisoned([c.m, c.n], c.dtype, device) });
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
    const grads = lora.backward({ ...inputs, out });
    const expected = reference.lora.backward(inputs);
    reference.assertClose(grads.gradInput!, expected.gradInput!, { dtype: c.dtype, label: 'gradInput' });
    reference.assertClose(grads.gradA, expected.gradA, { dtype: c.dtype, label: 'gradA' });
    reference.assertClose(grads.gradB, expected.gradB, { dtype: c.dtype, label: 'gradB' });
  });

  // 300 rows over 3 row tiles of 128, 10 adapters with mixed ranks (A and B poisoned past each
  // rank), a share of base-only rows: per-tile segment lists, the gather of x and scatter of y.
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
    const y = lora.forwardMulti({ ...inputs, out: poisoned([m, n], dtype, device) });
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
    const y = lora.doraForward({ ...inputs, out: poisoned([40, 300], dtype, device) });
    reference.assertClose(y, reference.lora.doraForward(inputs), { dtype });
  });
});
