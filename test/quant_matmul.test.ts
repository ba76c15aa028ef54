/**
 * quant.matmul / quant.matmulBackward against the float64 reference on the dequantized weight
 * (reference.quant.dequantize's values): the kernels must equal x·deq(W)ᵀ + bias + gate·scale·(x·aᵀ)·bᵀ
 * within the dtype's tolerance although they never dequantize W to memory.
 *
 * The forward list crosses dtype × M × format: M ≤ 16 is the decode GEMV (CPU and CUDA), M ≥ 17
 * the prefill GEMM (CPU: packed panels decoded on the fly; CUDA: the engine's dequantizing
 * operand), M = 16 / 17 the boundary. K is a multiple of 64 in some cases (the CPU's fused GEMV
 * over whole chunks, the CUDA engine's 16-byte staged loads) and odd or ≡ 2 (mod 4) in the others
 * (the element-wise fallbacks; a ternary row ending inside a byte); N·K odd leaves a padded
 * nibble, and K·N not a multiple of the block size a tail block.
 */
import { describe, expect, it } from 'vitest';

import {
  backends, type Device, type DType, LoraKernelsError, quant, type QuantizedTensor, reference, Tensor,
} from '../lib/index.js';
import { native } from '../lib/native.js';
import { type RefTensor, TOLERANCES } from '../lib/reference/tolerance.js';
import { focusedRun, poisoned, testDevices } from './helpers/devices.js';
import { BIAS_C, cancellingBias, column0, withColumn0 } from './helpers/bias.js';
import { expectError } from './helpers/errors.js';

type Format = 'nf4' | 'nf4-double' | 'ternary';
type Gate = 'none' | 'scalar' | 'per-output';
const FLOATS: DType[] = ['float32', 'float16', 'bfloat16'];
const FORMATS: Format[] = ['nf4', 'nf4-double', 'ternary'];
const BLOCK_SIZES = [64, 32, 128, 256];

const onDevice = (t: Tensor, device: Device) => (device === 'cpu' ? t : t.to(device));

/** N(0, std²) samples rounded to `dtype`, on `device`. */
function randn(shape: number[], dtype: DType, device: Device, seed: number, std = 1): Tensor {
  const values = Tensor.randn(shape, { seed }).toFloat32().map((v) => v * std);
  return onDevice(Tensor.from(values, shape, { dtype }), device);
}

/**
 * A weight [N, K] quantized on the host (quant.test.ts checks the bytes on every device), then
 * moved. Its original dtype (what dequantize returns by default) is float32, float16 or bfloat16
 * by seed: matmul computes in x's dtype whatever it was.
 */
function quantized(format: Format, n: number, k: number, blockSize: number, device: Device, seed: number): QuantizedTensor {
  const w = Tensor.randn([n, k], { seed, dtype: FLOATS[seed % FLOATS.length]! });
  const q = format === 'ternary' ? quant.ternary.quantize(w) : quant.nf4.quantize(w, { blockSize, doubleQuant: format === 'nf4-double' });
  return device === 'cpu' ? q : quant.to(q, device);
}

function describeWeight(format: Format, blockSize: number): string {
  return format === 'ternary' ? 'ternary' : `${format} block ${blockSize}`;
}

// ---- forward cases ---------------------------------------------------------------------------------------
interface ForwardCase {
  name: string;
  dtype: DType;
  format: Format;
  blockSize: number;
  lead: number[]; // leading dims of x; M = product
  k: number;
  n: number;
  r: number; // 0: no correction
  bias: boolean;
  gate: Gate;
  scale: number;
}

// M ≤ 16: decode; 17 and up: prefill. Leading dims of x are flattened.
const LEADS: number[][] = [[1], [5], [2, 8], [17], [7, 10], [130]];
// [K, N]: K = 192 / 128 multiples of 64; 71, 101, 197 odd and 130 ≡ 2 (mod 4); N·K odd for 71·77, 101·133, 197·91.
const SHAPES: [number, number][] = [[71, 77], [192, 75], [101, 133], [130, 69], [128, 161], [197, 91]];
const RANKS = [0, 3, 16, 5];
const GATES: Gate[] = ['none', 'scalar', 'per-output'];
const SCALES = [0.5, 2, 1.25];

function forwardCases(): ForwardCase[] {
  const cases: ForwardCase[] = [];
  let i = 0;
  for (const dtype of FLOATS) {
    for (const lead of LEADS) {
      for (const format of FORMATS) {
        // i % 3 is the format and ⌊i / 3⌋ the (dtype, M) pair: the other parameters cycle with
        // periods that share no factor with those, so each format meets each of them.
        const [k, n] = SHAPES[(i + Math.floor(i / 3)) % SHAPES.length]!;
        cases.push({
          name: '', dtype, format, blockSize: BLOCK_SIZES[Math.floor(i / 3) % BLOCK_SIZES.length]!, lead, k, n,
          r: RANKS[(i + Math.floor(i / 5)) % RANKS.length]!, bias: i % 5 < 3, gate: GATES[Math.floor(i / 4) % GATES.length]!,
          scale: SCALES[i % SCALES.length]!,
        });
        i++;
      }
    }
  }
  // Long K: split-K in the decode GEMV (a few output columns over ≥ 1024 inputs) and in the
  // engine behind the dequantizing loader (33 rows, 41 columns); blocks of 4096 (three and a tail).
  const edge = { name: '', bias: true, gate: 'per-output' as Gate, scale: 0.5 };
  cases.push({ ...edge, dtype: 'float32', format: 'nf4-double', blockSize: 32, lead: [16], k: 1024, n: 16, r: 16, gate: 'scalar' });
  cases.push({ ...edge, dtype: 'bfloat16', format: 'ternary', blockSize: 64, lead: [2], k: 2050, n: 7, r: 5 });
  cases.push({ ...edge, dtype: 'float16', format: 'nf4', blockSize: 64, lead: [33], k: 1031, n: 41, r: 4, bias: false });
  cases.push({ ...edge, dtype: 'float16', format: 'nf4', blockSize: 4096, lead: [3], k: 4099, n: 3, r: 3 });
  cases.push({ ...edge, dtype: 'bfloat16', format: 'nf4-double', blockSize: 4096, lead: [20], k: 4099, n: 3, r: 0 });
  // Ranks past one 32-wide slice of T: the decode shrink and the engine's extra k-steps.
  cases.push({ ...edge, dtype: 'float16', format: 'nf4', blockSize: 64, lead: [4], k: 256, n: 33, r: 40 });
  cases.push({ ...edge, dtype: 'bfloat16', format: 'ternary', blockSize: 64, lead: [40], k: 96, n: 50, r: 64, gate: 'scalar' });
  for (const c of cases) {
    c.name = `${c.dtype} ${describeWeight(c.format, c.blockSize)} x[${c.lead.join(',')},${c.k}] N=${c.n} r=${c.r}` +
      `${c.bias ? ' bias' : ''}${c.r && c.gate !== 'none' ? ` gate ${c.gate}` : ''}`;
  }
  return cases;
}

function forwardInputs(c: ForwardCase, device: Device, seed: number) {
  const s = seed * 100;
  const weight = quantized(c.format, c.n, c.k, c.blockSize, device, s + 1);
  // a ~ 1/√K keeps the low-rank term no larger than the quantized one: the tolerance (relative to
  // the output's RMS) must not hide an error in x·deq(W)ᵀ under a dominant correction.
  const a = c.r ? randn([c.r, c.k], c.dtype, device, s + 3, 1 / Math.sqrt(c.k)) : undefined;
  const b = c.r ? randn([c.n, c.r], c.dtype, device, s + 4) : undefined;
  const gate = c.gate === 'scalar' ? 0.7 : c.gate === 'per-output' ? randn([c.n], 'float32', device, s + 5) : undefined;
  return {
    x: randn([...c.lead, c.k], c.dtype, device, s + 2),
    weight, a, b, gate, scale: c.scale,
    bias: c.bias ? randn([c.n], c.dtype, device, s + 6) : undefined,
  };
}

// On the emulated sm_80 or sm_90 with 2 SMs (what test:emulated pins) the kernels an op ran are
// known: the decode GEMV over packed codes for M ≤ 16 ("gemv nf4 …" / "gemv ternary …"), the GEMM
// engine with a dequantizing operand above ("… dequant nf4"); on sm_90, a 16-bit prefill whose
// operands TMA can read (K and the rank multiples of 8) instead dequantizes W once ("dequantize
// nf4") and runs the plain wgmma mainloop. Elsewhere a case checks its result only.
const pinnedCc = (() => {
  const cuda = backends().cuda;
  return cuda.available && cuda.emulated && process.env['SIMT_EMU_WORKERS'] === '2' ? cuda.devices[0]?.computeCapability : undefined;
})();
const pinnedPaths = pinnedCc === '8.0' || pinnedCc === '9.0';
const onWgmmaCopy = (c: { dtype: DType; lead: number[]; k: number; n: number; r: number }, backward = false) =>
  pinnedCc === '9.0' && c.dtype !== 'float32' && c.lead.reduce((p, d) => p * d, 1) > (backward ? 0 : 16) && c.k % 8 === 0 &&
  (backward ? c.n % 8 === 0 : c.r % 8 === 0);

const isEngine = (kernel: string) => kernel.startsWith('mma.sync ') || kernel.startsWith('fma ') || kernel.startsWith('wgmma ');
const nativeFormat = (format: Format) => (format === 'ternary' ? 'ternary' : 'nf4');

/** The result of `op` and the kernels it ran (takeOpPlans' "op: kernel; kernel | op: …", flattened). */
function withPlans<T>(op: () => T): { result: T; plans: string[] } {
  native().takeOpPlans();
  const result = op();
  const plans = native().takeOpPlans().split(' | ').flatMap((entry) => entry.slice(entry.indexOf(':') + 1).split(';'));
  return { result, plans: plans.map((p) => p.trim()).filter((p) => p !== '') };
}

describe.each(testDevices())('quant.matmul on $device', ({ device }) => {
  it.each(forwardCases().map((c, i) => [c.name, c, i] as const))('%s', (_name, c, seed) => {
    const inputs = forwardInputs(c, device, seed + 1);
    const outShape = [...c.lead, c.n];
    const out = poisoned(outShape, c.dtype, device);
    const { result: y, plans } = withPlans(() => quant.matmul({ ...inputs, out }));
    expect(y).toBe(out);
    expect(y.shape).toEqual(outShape);
    expect(y.dtype).toBe(c.dtype);
    expect(y.device).toBe(device);
    reference.assertClose(y, reference.quant.matmul(inputs), { dtype: c.dtype });
    if (device !== 'cpu' && pinnedPaths) {
      const m = c.lead.reduce((p, d) => p * d, 1);
      const gemv = plans.some((p) => p.startsWith(`gemv ${nativeFormat(c.format)} `));
      const engine = plans.some(isEngine);
      const dequantizingEngine = plans.some((p) => isEngine(p) && p.includes(` dequant ${nativeFormat(c.format)}`));
      const wgmmaOnCopy = plans.includes(`dequantize ${nativeFormat(c.format)}`) && plans.some((p) => p.startsWith('wgmma '));
      expect({ gemv, engine, dequantizingEngine, wgmmaOnCopy }, `M = ${m}: ${plans.join('; ')}`)
        .toEqual({ gemv: m <= 16, engine: m > 16, dequantizingEngine: m > 16 && !onWgmmaCopy(c), wgmmaOnCopy: onWgmmaCopy(c) });
    }
  });

  it('without out: a new tensor of x\'s dtype, equal to the out= result bit for bit', () => {
    const c = forwardCases()[22]!;
    const inputs = forwardInputs(c, device, 5);
    const y = quant.matmul(inputs);
    expect(y.shape).toEqual([...c.lead, c.n]);
    expect(y.toArray()).toEqual(quant.matmul({ ...inputs, out: poisoned([...c.lead, c.n], c.dtype, device) }).toArray());
  });

  it('matmulAsync writes the same values into a poisoned out', async () => {
    for (const c of [forwardCases()[4]!, forwardCases()[41]!]) {
      const inputs = forwardInputs(c, device, 7);
      const out = poisoned([...c.lead, c.n], c.dtype, device);
      const y = await quant.matmulAsync({ ...inputs, out });
      expect(y).toBe(out);
      expect(y.toArray(), c.name).toEqual(quant.matmul(inputs).toArray());
    }
  });

  it('concurrent matmulAsync calls (decode and prefill, both formats) while the JS thread runs matmul: all correct', async () => {
    const weights = [quantized('nf4-double', 37, 130, 64, device, 1), quantized('ternary', 37, 130, 64, device, 2)];
    const a = randn([5, 130], 'float32', device, 3, 0.1), b = randn([37, 5], 'float32', device, 4);
    // Every mix of decode / prefill, weight format and gate within the first 12 calls.
    const xs = Array.from({ length: focusedRun ? 12 : 40 }, (_, i) => randn([i % 2 ? 3 : 33, 130], 'float32', device, 100 + i));
    const args = (i: number) => ({ x: xs[i]!, weight: weights[i % 4 < 2 ? 0 : 1]!, a, b, scale: 1 + i / 40, gate: i % 3 ? 0.5 : undefined });
    const pending = xs.map((_, i) => quant.matmulAsync(args(i)));
    // The same ops on the JS thread meanwhile: per-call scratch must not be shared with the job thread's.
    const sync = xs.map((_, i) => quant.matmul(args(i)));
    const ys = await Promise.all(pending);
    ys.forEach((y, i) => {
      reference.assertClose(y, reference.quant.matmul(args(i)), { dtype: 'float32', label: `async call ${i}` });
      reference.assertClose(sync[i]!, reference.quant.matmul(args(i)), { dtype: 'float32', label: `sync call ${i}` });
    });
  });

  it('a ternary weight of all-zero codes, an all-zero NF4 block and scale 0 of the correction add nothing', () => {
    const x = randn([3, 40], 'float32', device, 1);
    const zero = onDevice(Tensor.zeros([9, 40]), device);
    const a = randn([2, 40], 'float32', device, 2), b = randn([9, 2], 'float32', device, 3);
    for (const weight of [quant.ternary.quantize(zero), quant.nf4.quantize(zero, { blockSize: 32 })]) {
      const y = quant.matmul({ x, weight, a, b, scale: 0, out: poisoned([3, 9], 'float32', device) });
      expect(Array.from(y.toFloat32())).toEqual(new Array(27).fill(0));
    }
  });

  it('NaN in x gives NaN in exactly the rows it touches (decode and prefill)', () => {
    for (const [m, format] of [[5, 'nf4'], [5, 'ternary'], [40, 'nf4-double'], [40, 'ternary']] as const) {
      for (const dtype of FLOATS) {
        const host = Tensor.randn([m, 70], { dtype, seed: m }).toArray();
        host[2 * 70 + 13] = dtype === 'float32' ? NaN : dtype === 'float16' ? 0x7e00 : 0x7fc0;
        const x = onDevice(Tensor.from(host, [m, 70], { dtype }), device);
        const weight = quantized(format, 9, 70, 64, device, 6);
        const a = randn([3, 70], dtype, device, 7), b = randn([9, 3], dtype, device, 8);
        const y = quant.matmul({ x, weight, a, b, out: poisoned([m, 9], dtype, device) }).toFloat32();
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < 9; j++) expect(Number.isNaN(y[i * 9 + j]!), `${format} ${dtype} M=${m} y[${i},${j}]`).toBe(i === 2);
        }
      }
    }
  });

  it('zero rows give an empty result', () => {
    const weight = quantized('nf4', 5, 8, 32, device, 1);
    const y = quant.matmul({ x: onDevice(Tensor.zeros([0, 8]), device), weight });
    expect(y.shape).toEqual([0, 5]);
  });
});

// ---- backward -----------------------------------------------------------------------------------------
interface BackwardCase {
  name: string;
  dtype: DType;
  format: Format;
  blockSize: number;
  lead: number[];
  k: number;
  n: number;
  r: number;
  gate: Gate;
  scale: number;
  needInputGrad: boolean;
}

function backwardCases(): BackwardCase[] {
  const cases: BackwardCase[] = [];
  let i = 0;
  for (const dtype of FLOATS) {
    for (const lead of [[1], [5], [17], [7, 10], [130]]) {
      const format = FORMATS[i % FORMATS.length]!;
      const [k, n] = SHAPES[(i + 1) % SHAPES.length]!;
      cases.push({
        name: '', dtype, format, blockSize: BLOCK_SIZES[(i + 1) % BLOCK_SIZES.length]!, lead, k, n, r: [3, 16, 5, 1][i % 4]!,
        gate: GATES[(i + Math.floor(i / 3)) % GATES.length]!, scale: SCALES[(i + 1) % SCALES.length]!, needInputGrad: i % 5 !== 3,
      });
      i++;
    }
  }
  cases.push({ name: '', dtype: 'bfloat16', format: 'nf4', blockSize: 64, lead: [33], k: 130, n: 70, r: 64, gate: 'per-output', scale: 0.5, needInputGrad: true });
  // K and N multiples of 8: on an sm_90 gradInput runs on wgmma over a dequantized copy of W (MN-major).
  cases.push({ name: '', dtype: 'float16', format: 'nf4-double', blockSize: 64, lead: [70], k: 136, n: 96, r: 16, gate: 'per-output', scale: 0.75, needInputGrad: true });
  cases.push({ name: '', dtype: 'float32', format: 'ternary', blockSize: 64, lead: [3], k: 75, n: 41, r: 40, gate: 'scalar', scale: 2, needInputGrad: true });
  for (const c of cases) {
    c.name = `${c.dtype} ${describeWeight(c.format, c.blockSize)} x[${c.lead.join(',')},${c.k}] N=${c.n} r=${c.r}` +
      `${c.gate !== 'none' ? ` gate ${c.gate}` : ''}${c.needInputGrad ? '' : ' no-input-grad'}`;
  }
  return cases;
}

function backwardInputs(c: BackwardCase, device: Device, seed: number) {
  const s = seed * 100;
  return {
    gradOutput: randn([...c.lead, c.n], c.dtype, device, s + 1),
    x: randn([...c.lead, c.k], c.dtype, device, s + 2),
    weight: quantized(c.format, c.n, c.k, c.blockSize, device, s + 3),
    a: randn([c.r, c.k], c.dtype, device, s + 4, 1 / Math.sqrt(c.k)),
    b: randn([c.n, c.r], c.dtype, device, s + 5),
    gate: c.gate === 'scalar' ? -1.3 : c.gate === 'per-output' ? randn([c.n], 'float32', device, s + 6) : undefined,
    scale: c.scale,
  };
}

describe.each(testDevices())('quant.matmulBackward on $device', ({ device }) => {
  it.each(backwardCases().map((c, i) => [c.name, c, i] as const))('%s', (_name, c, seed) => {
    const inputs = backwardInputs(c, device, seed + 1);
    const gateShape = c.gate === 'per-output' ? [c.n] : [1];
    // Every output poisoned: an element a kernel forgets stays NaN and fails the check.
    const out = {
      gradA: poisoned([c.r, c.k], c.dtype, device),
      gradB: poisoned([c.n, c.r], c.dtype, device),
      gradInput: c.needInputGrad ? poisoned([...c.lead, c.k], c.dtype, device) : undefined,
      gradGate: c.gate !== 'none' ? poisoned(gateShape, 'float32', device) : undefined,
    };
    const { result: grads, plans } = withPlans(() => quant.matmulBackward({ ...inputs, needInputGrad: c.needInputGrad, out }));
    // W is read only for gradInput: by the engine's dequantizing operand loader, or on sm_90 once into a copy for wgmma.
    if (device !== 'cpu' && pinnedPaths) {
      const dequantizing = plans.some((p) => isEngine(p) && p.includes(` dequant ${nativeFormat(c.format)}`));
      const wgmmaOnCopy = plans.includes(`dequantize ${nativeFormat(c.format)}`) && plans.some((p) => p.startsWith('wgmma '));
      expect({ dequantizing, wgmmaOnCopy }, plans.join('; '))
        .toEqual({ dequantizing: c.needInputGrad && !onWgmmaCopy(c, true), wgmmaOnCopy: c.needInputGrad && onWgmmaCopy(c, true) });
    }
    const expected = reference.quant.matmulBackward({ ...inputs, needInputGrad: c.needInputGrad });
    expect(grads.gradA).toBe(out.gradA);
    expect(grads.gradB).toBe(out.gradB);
    for (const t of [grads.gradA, grads.gradB, grads.gradInput]) {
      if (t) expect([t.dtype, t.device]).toEqual([c.dtype, device]);
    }
    reference.assertClose(grads.gradA, expected.gradA, { dtype: c.dtype, label: 'gradA' });
    reference.assertClose(grads.gradB, expected.gradB, { dtype: c.dtype, label: 'gradB' });
    if (c.needInputGrad) {
      expect(grads.gradInput).toBe(out.gradInput);
      expect(grads.gradInput!.shape).toEqual([...c.lead, c.k]);
      reference.assertClose(grads.gradInput!, expected.gradInput!, { dtype: c.dtype, label: 'gradInput' });
    } else {
      expect(grads.gradInput).toBeUndefined();
    }
    if (c.gate !== 'none') {
      expect(grads.gradGate).toBe(out.gradGate);
      expect([grads.gradGate!.dtype, grads.gradGate!.shape]).toEqual(['float32', gateShape]);
      if (c.gate === 'per-output') {
        // Column sums over M rows, compared like any product's output.
        reference.assertClose(grads.gradGate!, expected.gradGate!, { dtype: c.dtype, label: 'gradGate' });
      } else {
        // One float32 sum of M·N terms g·scale·(T·Bᵀ) that cancel to ~√(MN) of them: its rounding
        // error scales with Σ|terms| (~100× the sum at M·N = 21k), so the bound is relative to that.
        // float32's rtol whatever the dtype: the terms are float32 products of the dtype's exact
        // values (T kept as hi + lo on CUDA, ~2^-16); one column left out would be ~1/N of Σ|terms|.
        const low = reference.quant.matmul({ x: inputs.x, weight: inputs.weight, a: inputs.a, b: inputs.b, scale: inputs.scale }).data;
        const base = reference.quant.matmul({ x: inputs.x, weight: inputs.weight }).data;
        const g = inputs.gradOutput.toFloat32();
        const magnitude = low.reduce((sum, v, i) => sum + Math.abs(g[i]! * (v - base[i]!)), 0);
        const error = Math.abs(grads.gradGate!.toFloat32()[0]! - expected.gradGate!.data[0]!);
        expect(error, `gradGate ${grads.gradGate!.toFloat32()[0]} vs ${expected.gradGate!.data[0]}`).toBeLessThanOrEqual(TOLERANCES.float32.rtol * magnitude);
      }
    } else {
      expect(grads.gradGate).toBeUndefined();
    }
  });

  it('allocates what out does not give, and is deterministic: two runs give identical bits', () => {
    const c = backwardCases()[8]!;
    const inputs = backwardInputs(c, device, 9);
    const first = quant.matmulBackward(inputs);
    const second = quant.matmulBackward(inputs);
    for (const key of ['gradInput', 'gradA', 'gradB', 'gradGate'] as const) {
      expect(first[key], key).toBeInstanceOf(Tensor);
      expect(second[key]!.toArray(), key).toEqual(first[key]!.toArray());
    }
  });

  it('zero rows: gradients of a, b and the gate are zeros (sums over no rows), gradInput is empty', () => {
    const weight = quantized('nf4-double', 5, 40, 32, device, 1);
    const common = { gradOutput: onDevice(Tensor.zeros([0, 5]), device), x: onDevice(Tensor.zeros([0, 40]), device), weight, a: randn([2, 40], 'float32', device, 2), b: randn([5, 2], 'float32', device, 3) };
    for (const gate of [randn([5], 'float32', device, 4), 2]) {
      const gateShape = typeof gate === 'number' ? [1] : [5];
      const out = { gradA: poisoned([2, 40], 'float32', device), gradB: poisoned([5, 2], 'float32', device), gradGate: poisoned(gateShape, 'float32', device) };
      const grads = quant.matmulBackward({ ...common, gate, out });
      expect(grads.gradInput!.shape).toEqual([0, 40]);
      // ±0: a negative gate times an empty sum is −0.
      for (const key of ['gradA', 'gradB', 'gradGate'] as const) expect(Array.from(grads[key]!.toFloat32(), (v) => v === 0), key).toEqual(new Array(out[key].numel).fill(true));
    }
  });

  it('concurrent matmulBackwardAsync calls while the JS thread runs matmulBackward: the bits of one call alone', async () => {
    const cases = [backwardCases()[2]!, backwardCases()[4]!, backwardCases()[13]!];
    // TSan (focused): each case once, three calls in flight beside the JS thread's (65 s with six).
    const inputs = Array.from({ length: focusedRun ? 3 : 12 }, (_, i) => backwardInputs(cases[i % 3]!, device, 200 + i));
    const alone = inputs.map((args) => quant.matmulBackward(args));
    const pending = inputs.map((args) => quant.matmulBackwardAsync(args));
    const sync = inputs.map((args) => quant.matmulBackward(args));
    const concurrent = await Promise.all(pending);
    inputs.forEach((_, i) => {
      for (const key of ['gradInput', 'gradA', 'gradB', 'gradGate'] as const) {
        if (!alone[i]![key]) continue;
        expect(concurrent[i]![key]!.toArray(), `async call ${i} ${key}`).toEqual(alone[i]![key]!.toArray());
        expect(sync[i]![key]!.toArray(), `sync call ${i} ${key}`).toEqual(alone[i]![key]!.toArray());
      }
    });
  });

  it('matmulBackwardAsync gives the bits of matmulBackward', async () => {
    const c = backwardCases()[13]!;
    const inputs = backwardInputs(c, device, 11);
    const grads = await quant.matmulBackwardAsync(inputs);
    const sync = quant.matmulBackward(inputs);
    for (const key of ['gradInput', 'gradA', 'gradB', 'gradGate'] as const) {
      expect(grads[key]!.toArray(), key).toEqual(sync[key]!.toArray());
    }
  });

  // L = Σ y ⊙ g with y from the float64 reference forward; L is linear in each of x, a, b and the
  // gate, so a central difference is exact up to float64 rounding (~1e-16·|L| / h): what it checks
  // is the kernels' gradients (float32 here) and the backward formulas themselves.
  describe.each(['nf4', 'nf4-double', 'ternary'] as const)('finite differences of Σ y ⊙ g (%s)', (format) => {
    it.each(['scalar', 'per-output'] as const)('gradInput, gradA, gradB and the %s gradGate', (gateKind) => {
      const m = 6, k = 67, n = 45, r = 5;
      const seed = 40 + FORMATS.indexOf(format) * 2 + (gateKind === 'scalar' ? 0 : 1);
      const c: BackwardCase = {
        name: '', dtype: 'float32', format, blockSize: 32, lead: [m], k, n, r, gate: gateKind, scale: 0.75, needInputGrad: true,
      };
      const inputs = backwardInputs(c, device, seed);
      const grads = quant.matmulBackward(inputs);
      const g = inputs.gradOutput.toFloat32();
      const ref = (t: Tensor): RefTensor => ({ data: Float64Array.from(t.toFloat32()), shape: [...t.shape] });
      const base = {
        x: ref(inputs.x), a: ref(inputs.a), b: ref(inputs.b),
        gate: typeof inputs.gate === 'number' ? inputs.gate : ref(inputs.gate!),
      };
      const loss = (p: typeof base) => {
        const y = reference.quant.matmul({ ...p, weight: inputs.weight, scale: inputs.scale }).data;
        return y.reduce((sum, v, i) => sum + v * g[i]!, 0);
      };
      const h = 1e-3;
      const difference = (perturb: (p: typeof base, delta: number) => typeof base) => (loss(perturb(base, h)) - loss(perturb(base, -h))) / (2 * h);
      const bumped = (t: RefTensor, i: number, delta: number): RefTensor => {
        const data = t.data.slice();
        data[i]! += delta;
        return { data, shape: t.shape };
      };
      const rng = (count: number, salt: number) => Array.from({ length: 6 }, (_, j) => (salt * 7919 + j * 104729) % count);
      const check = (label: string, kernel: Float32Array, indices: number[], perturb: (i: number) => (p: typeof base, delta: number) => typeof base) => {
        const numeric = indices.map((i) => difference(perturb(i)));
        reference.assertClose(indices.map((i) => kernel[i]!), numeric, { dtype: 'float32', label: `${label} at ${indices.join(', ')}` });
      };
      check('gradInput', grads.gradInput!.toFloat32(), rng(m * k, seed), (i) => (p, d) => ({ ...p, x: bumped(p.x, i, d) }));
      check('gradA', grads.gradA.toFloat32(), rng(r * k, seed + 1), (i) => (p, d) => ({ ...p, a: bumped(p.a, i, d) }));
      check('gradB', grads.gradB.toFloat32(), rng(n * r, seed + 2), (i) => (p, d) => ({ ...p, b: bumped(p.b, i, d) }));
      if (gateKind === 'scalar') {
        check('gradGate', grads.gradGate!.toFloat32(), [0], () => (p, d) => ({ ...p, gate: (p.gate as number) + d }));
      } else {
        check('gradGate', grads.gradGate!.toFloat32(), rng(n, seed + 3), (i) => (p, d) => ({ ...p, gate: bumped(p.gate as RefTensor, i, d) }));
      }
    });
  });
});

// ---- bad input ----------------------------------------------------------------------------------------
// A float32 bias with float16/bfloat16 x, added before the single rounding (see helpers/bias.ts).
// Here C reaches y through the low-rank term alone (weight column 0 = 0, exact in both formats;
// a[0][0] = 1, the rest of a's column 0 zero; the bias cancels C·scale·gate_j·b[j][0]): the CUDA
// engine feeds deq(W) to the tensor cores rounded to the 16-bit dtype, an error C would amplify,
// while T = x·aᵀ goes in as a hi + lo pair. M = 1 and 4 take the decode GEMVs, 37 the CUDA engine,
// 129 the CPU's packed GEMM too.
describe.each(testDevices())('quant.matmul with a float32 bias and 16-bit x on $device', ({ device }) => {
  const cases = (['float16', 'bfloat16'] as DType[]).flatMap((dtype, d) => [1, 4, 37, 129].map((m, i) => ({
    dtype, m, format: FORMATS[(i + d) % FORMATS.length]!, k: [192, 71, 130, 101][i]!, n: [75, 77, 69, 133][i]!,
    r: [3, 1, 16, 5][i]!, gate: GATES[(i + d) % GATES.length]!,
  })));
  it.each(cases.map((c, i) => [`${c.dtype} ${c.format} x[${c.m},${c.k}] N=${c.n} r=${c.r} gate ${c.gate}`, c, i] as const))('%s', (_name, c, i) => {
    const s = 9300 + 10 * i;
    const w = withColumn0(Tensor.randn([c.n, c.k], { seed: s + 1 }), c.k, 0);
    const q = c.format === 'ternary' ? quant.ternary.quantize(w) : quant.nf4.quantize(w, { blockSize: 64, doubleQuant: c.format === 'nf4-double' });
    const weight = device === 'cpu' ? q : quant.to(q, device);
    expect(column0(reference.quant.dequantize(weight), c.n, c.k).every((v) => v === 0)).toBe(true);
    const x = withColumn0(randn([c.m, c.k], c.dtype, device, s + 2), c.k, BIAS_C);
    const aValues = Tensor.randn([c.r, c.k], { seed: s + 3 }).toFloat32().map((v, e) => (e % c.k ? v / Math.sqrt(c.k) : e === 0 ? 1 : 0));
    const a = onDevice(Tensor.from(aValues, [c.r, c.k], { dtype: c.dtype }), device);
    const b = randn([c.n, c.r], c.dtype, device, s + 4);
    const gate = c.gate === 'scalar' ? 0.7 : c.gate === 'per-output' ? randn([c.n], 'float32', device, s + 5) : undefined;
    const gates = gate instanceof Tensor ? gate.toFloat32() : new Float32Array(c.n).fill(gate ?? 1);
    const bias = cancellingBias(column0(b, c.n, c.r), device, s + 6, Array.from(gates, (g) => 0.5 * g));
    const inputs = { x, weight, bias, a, b, gate, scale: 0.5 };
    const out = poisoned([c.m, c.n], c.dtype, device);
    expect(quant.matmul({ ...inputs, out })).toBe(out);
    reference.assertClose(out, reference.quant.matmul(inputs), { dtype: c.dtype });
  });
});

describe('quant.matmul and quant.matmulBackward reject bad input with a code and a message naming the argument', () => {
  const x = Tensor.randn([3, 10], { seed: 1 });
  const nf4 = quant.nf4.quantize(Tensor.randn([6, 10], { seed: 2 }), { blockSize: 32 });
  const nested = quant.nf4.quantize(Tensor.randn([6, 10], { seed: 2 }), { blockSize: 32, doubleQuant: true });
  const ternary = quant.ternary.quantize(Tensor.randn([6, 10], { seed: 2 }));
  const a = Tensor.randn([4, 10], { seed: 3 });
  const b = Tensor.randn([6, 4], { seed: 4 });
  const g = Tensor.randn([3, 6], { seed: 5 });
  const weight = nf4;
  const nestedAbsmax = nested.absmax as Exclude<typeof nested.absmax, Tensor>;
  const forward: [string, () => unknown, string, RegExp][] = [
    ['no argument object', () => quant.matmul(undefined as never), 'ERR_ARGUMENT', /the argument must be an object/],
    ['x not a tensor', () => quant.matmul({ x: new Float32Array(30) as never, weight }), 'ERR_ARGUMENT', /x must be a Tensor, got a Float32Array/],
    ['x int32', () => quant.matmul({ x: Tensor.zeros([3, 10], { dtype: 'int32' }), weight }), 'ERR_DTYPE', /x must be of dtype float32 or float16 or bfloat16, got int32/],
    ['scalar x', () => quant.matmul({ x: Tensor.zeros([]), weight }), 'ERR_SHAPE', /x.shape must be \[..., K\]/],
    ['K mismatch', () => quant.matmul({ x: Tensor.zeros([3, 11]), weight }), 'ERR_SHAPE', /weight.shape must be \[N, 11\] \(K = x.shape\[-1\]\), got \[6, 10\]/],
    ['weight a plain tensor', () => quant.matmul({ x, weight: Tensor.zeros([6, 10]) as never }), 'ERR_ARGUMENT', /weight must be an Nf4Tensor or a TernaryTensor .*got an object with format undefined/],
    ['weight missing', () => quant.matmul({ x } as never), 'ERR_ARGUMENT', /weight must be an Nf4Tensor or a TernaryTensor/],
    ['weight format', () => quant.matmul({ x, weight: { ...nf4, format: 'int4' } as never }), 'ERR_ARGUMENT', /weight must be .*got an object with format the string "int4"/],
    ['weight shape', () => quant.matmul({ x, weight: { ...nf4, shape: [6] } as never }), 'ERR_SHAPE', /weight.shape must be \[N, K\] with N, K ≥ 1/],
    ['packed of another weight', () => quant.matmul({ x, weight: { ...nf4, shape: [7, 10] } }), 'ERR_SHAPE', /weight.packed.shape must be \[35\], got \[30\]/],
    ['packed not uint8', () => quant.matmul({ x, weight: { ...nf4, packed: Tensor.zeros([30]) } }), 'ERR_DTYPE', /weight.packed must be uint8, got float32/],
    ['absmax of another block size', () => quant.matmul({ x, weight: { ...nf4, blockSize: 64 } }), 'ERR_SHAPE', /weight.absmax.shape must be \[1\], got \[2\]/],
    ['block size 48', () => quant.matmul({ x, weight: { ...nf4, blockSize: 48 } }), 'ERR_ARGUMENT', /weight.blockSize must be a power of two from 32 to 4096, got number 48/],
    ['absmax missing', () => quant.matmul({ x, weight: { ...nf4, absmax: undefined } as never }), 'ERR_ARGUMENT', /weight.absmax must be a float32 Tensor or \{ code, nestedAbsmax, nestedCode, offset \}/],
    ['absmax float16', () => quant.matmul({ x, weight: { ...nf4, absmax: Tensor.zeros([2], { dtype: 'float16' }) } }), 'ERR_DTYPE', /weight.absmax must be float32, got float16/],
    ['nested code float32', () => quant.matmul({ x, weight: { ...nested, absmax: { ...nestedAbsmax, code: Tensor.zeros([2]) } } }), 'ERR_DTYPE', /weight.absmax.code must be uint8, got float32/],
    ['nested map short', () => quant.matmul({ x, weight: { ...nested, absmax: { ...nestedAbsmax, nestedCode: Tensor.zeros([255]) } } }), 'ERR_SHAPE', /weight.absmax.nestedCode.shape must be \[256\], got \[255\]/],
    ['nested offset NaN', () => quant.matmul({ x, weight: { ...nested, absmax: { ...nestedAbsmax, offset: NaN } } }), 'ERR_ARGUMENT', /weight.absmax.offset must be a finite number, got number NaN/],
    ['disposed packed', () => { const q = quant.nf4.quantize(Tensor.randn([6, 10]), { blockSize: 32 }); q.packed.dispose(); return quant.matmul({ x, weight: q }); }, 'ERR_DISPOSED', /weight.packed must be a live tensor/],
    ['ternary rows of another K', () => quant.matmul({ x: Tensor.zeros([3, 13]), weight: { ...ternary, shape: [6, 13] } }), 'ERR_SHAPE', /weight.packed.shape must be \[6, 4\], got \[6, 3\]/],
    ['ternary scale', () => quant.matmul({ x, weight: { ...ternary, scale: Infinity } }), 'ERR_ARGUMENT', /weight.scale must be a finite number, got number Infinity/],
    ['weight dtype', () => quant.matmul({ x, weight: { ...ternary, dtype: 'int8' } as never }), 'ERR_DTYPE', /weight.dtype must be float32 or float16 or bfloat16/],
    ['weight.device not its parts\'', () => quant.matmul({ x, weight: { ...ternary, device: 'cuda' } as never }), 'ERR_DEVICE', /weight.device must be cpu, where its packed codes are, got the string "cuda"/],
    ['bias length', () => quant.matmul({ x, weight, bias: Tensor.zeros([5]) }), 'ERR_SHAPE', /bias.shape must be \[6\], got \[5\]/],
    ['bias dtype', () => quant.matmul({ x, weight, bias: Tensor.zeros([6], { dtype: 'bfloat16' }) }), 'ERR_DTYPE', /bias must be float32 like x, got bfloat16/],
    ['float16 bias, bfloat16 x', () => quant.matmul({ x: Tensor.zeros([3, 10], { dtype: 'bfloat16' }), weight, bias: Tensor.zeros([6], { dtype: 'float16' }) }), 'ERR_DTYPE', /bias must be bfloat16 like x \(or float32\), got float16/],
    ['int32 bias, float16 x', () => quant.matmul({ x: Tensor.zeros([3, 10], { dtype: 'float16' }), weight, bias: Tensor.zeros([6], { dtype: 'int32' }) }), 'ERR_DTYPE', /bias must be float16 like x \(or float32\), got int32/],
    ['a without b', () => quant.matmul({ x, weight, a }), 'ERR_ARGUMENT', /b must be given together with a/],
    ['b without a', () => quant.matmul({ x, weight, b }), 'ERR_ARGUMENT', /a must be given together with b/],
    ['a of another K', () => quant.matmul({ x, weight, a: Tensor.zeros([4, 9]), b }), 'ERR_SHAPE', /a.shape must be \[r, 10\] \(r ≥ 1\), got \[4, 9\]/],
    ['a of rank 0', () => quant.matmul({ x, weight, a: Tensor.zeros([0, 10]), b: Tensor.zeros([6, 0]) }), 'ERR_SHAPE', /a.shape must be \[r, 10\] \(r ≥ 1\), got \[0, 10\]/],
    ['b of another rank', () => quant.matmul({ x, weight, a, b: Tensor.zeros([6, 5]) }), 'ERR_SHAPE', /b.shape must be \[6, 4\], got \[6, 5\]/],
    ['b of another N', () => quant.matmul({ x, weight, a, b: Tensor.zeros([7, 4]) }), 'ERR_SHAPE', /b.shape must be \[6, 4\], got \[7, 4\]/],
    ['a float16', () => quant.matmul({ x, weight, a: Tensor.zeros([4, 10], { dtype: 'float16' }), b }), 'ERR_DTYPE', /a must be float32 like x, got float16/],
    ['b bfloat16', () => quant.matmul({ x, weight, a, b: Tensor.zeros([6, 4], { dtype: 'bfloat16' }) }), 'ERR_DTYPE', /b must be float32 like x, got bfloat16/],
    ['gate length', () => quant.matmul({ x, weight, a, b, gate: Tensor.zeros([5]) }), 'ERR_SHAPE', /gate.shape must be \[6\], got \[5\]/],
    ['gate float16', () => quant.matmul({ x: Tensor.zeros([3, 10], { dtype: 'float16' }), weight, gate: Tensor.zeros([6], { dtype: 'float16' }) }), 'ERR_DTYPE', /gate must be of dtype float32, got float16/],
    ['gate NaN', () => quant.matmul({ x, weight, a, b, gate: NaN }), 'ERR_ARGUMENT', /gate must be a finite number or a float32 Tensor \[N\], got number NaN/],
    ['gate string', () => quant.matmul({ x, weight, gate: '1' as never }), 'ERR_ARGUMENT', /gate must be a finite number or a float32 Tensor \[N\], got the string "1"/],
    ['scale NaN', () => quant.matmul({ x, weight, scale: NaN }), 'ERR_ARGUMENT', /scale must be a finite number, got number NaN/],
    ['out shape', () => quant.matmul({ x, weight, out: Tensor.zeros([3, 5]) }), 'ERR_SHAPE', /out.shape must be \[3, 6\], got \[3, 5\]/],
    ['out dtype', () => quant.matmul({ x, weight, out: Tensor.zeros([3, 6], { dtype: 'float16' }) }), 'ERR_DTYPE', /out must be float32 like x, got float16/],
    ['out aliases x', () => { const s = Tensor.zeros([6, 6]); return quant.matmul({ x: s, weight: quant.ternary.quantize(Tensor.randn([6, 6])), out: s }); }, 'ERR_ARGUMENT', /out must be memory not shared with x/],
    ['disposed x', () => { const d = Tensor.randn([3, 10]); d.dispose(); return quant.matmul({ x: d, weight }); }, 'ERR_DISPOSED', /x must be a live tensor, got a disposed tensor/],
  ];
  it.each(forward)('matmul: %s', (_name, fn, code, pattern) => expectError(fn, code, pattern));

  const backward: [string, () => unknown, string, RegExp][] = [
    ['a missing', () => quant.matmulBackward({ gradOutput: g, x, weight, b } as never), 'ERR_ARGUMENT', /a must be a Tensor, got undefined/],
    ['x int32', () => quant.matmulBackward({ gradOutput: g, x: Tensor.zeros([3, 10], { dtype: 'int32' }), weight, a, b }), 'ERR_DTYPE', /x must be of dtype float32 or float16 or bfloat16, got int32/],
    ['K mismatch', () => quant.matmulBackward({ gradOutput: g, x: Tensor.zeros([3, 12]), weight, a, b }), 'ERR_SHAPE', /weight.shape must be \[N, 12\]/],
    ['a of another K', () => quant.matmulBackward({ gradOutput: g, x, weight, a: Tensor.zeros([4, 11]), b }), 'ERR_SHAPE', /a.shape must be \[r, 10\] \(r ≥ 1\), got \[4, 11\]/],
    ['b of another rank', () => quant.matmulBackward({ gradOutput: g, x, weight, a, b: Tensor.zeros([6, 3]) }), 'ERR_SHAPE', /b.shape must be \[6, 4\], got \[6, 3\]/],
    ['a float16', () => quant.matmulBackward({ gradOutput: g, x, weight, a: Tensor.zeros([4, 10], { dtype: 'float16' }), b }), 'ERR_DTYPE', /a must be float32 like x, got float16/],
    ['gradOutput shape', () => quant.matmulBackward({ gradOutput: Tensor.zeros([3, 7]), x, weight, a, b }), 'ERR_SHAPE', /gradOutput.shape must be \[3, 6\], got \[3, 7\]/],
    ['gradOutput dtype', () => quant.matmulBackward({ gradOutput: Tensor.zeros([3, 6], { dtype: 'float16' }), x, weight, a, b }), 'ERR_DTYPE', /gradOutput must be float32 like x, got float16/],
    ['gate length', () => quant.matmulBackward({ gradOutput: g, x, weight, a, b, gate: Tensor.zeros([7]) }), 'ERR_SHAPE', /gate.shape must be \[6\], got \[7\]/],
    ['gate bfloat16', () => quant.matmulBackward({ gradOutput: g, x, weight, a, b, gate: Tensor.zeros([6], { dtype: 'bfloat16' }) }), 'ERR_DTYPE', /gate must be of dtype float32, got bfloat16/],
    ['needInputGrad number', () => quant.matmulBackward({ gradOutput: g, x, weight, a, b, needInputGrad: 1 as never }), 'ERR_ARGUMENT', /needInputGrad must be a boolean/],
    ['weight inconsistent', () => quant.matmulBackward({ gradOutput: g, x, weight: { ...nf4, packed: Tensor.zeros([29], { dtype: 'uint8' }) }, a, b }), 'ERR_SHAPE', /weight.packed.shape must be \[30\], got \[29\]/],
    ['out not an object', () => quant.matmulBackward({ gradOutput: g, x, weight, a, b, out: 3 as never }), 'ERR_ARGUMENT', /out must be an object of gradient tensors/],
    ['out.gradA shape', () => quant.matmulBackward({ gradOutput: g, x, weight, a, b, out: { gradA: Tensor.zeros([4, 9]) } }), 'ERR_SHAPE', /out.gradA.shape must be \[4, 10\], got \[4, 9\]/],
    ['out.gradB dtype', () => quant.matmulBackward({ gradOutput: g, x, weight, a, b, out: { gradB: Tensor.zeros([6, 4], { dtype: 'float16' }) } }), 'ERR_DTYPE', /out.gradB must be float32, got float16/],
    ['out.gradGate shape', () => quant.matmulBackward({ gradOutput: g, x, weight, a, b, gate: 2, out: { gradGate: Tensor.zeros([6]) } }), 'ERR_SHAPE', /out.gradGate.shape must be \[1\], got \[6\]/],
    ['out.gradGate dtype', () => quant.matmulBackward({ gradOutput: g, x, weight, a, b, gate: 2, out: { gradGate: Tensor.zeros([1], { dtype: 'float16' }) } }), 'ERR_DTYPE', /out.gradGate must be float32, got float16/],
    ['out.gradInput aliases x', () => quant.matmulBackward({ gradOutput: g, x, weight, a, b, out: { gradInput: x } }), 'ERR_ARGUMENT', /out.gradInput must be memory not shared with x/],
  ];
  it.each(backward)('matmulBackward: %s', (_name, fn, code, pattern) => expectError(fn, code, pattern));

  it('two gradient outs on the same memory are rejected', () => {
    const shared = Tensor.zeros([24]);
    const gradB = shared.reshape([6, 4]);
    const gradGate = Tensor.zeros([1]);
    // gradA [4, 6] with K = 6 takes the same 24 floats as gradB [6, 4].
    const x6 = Tensor.zeros([3, 6]);
    const w6 = quant.ternary.quantize(Tensor.randn([6, 6]));
    expectError(() => quant.matmulBackward({
      gradOutput: g, x: x6, weight: w6, a: Tensor.zeros([4, 6]), b: Tensor.zeros([6, 4]), gate: 1,
      out: { gradA: shared.reshape([4, 6]), gradB, gradGate },
    }), 'ERR_ARGUMENT', /out must be separate gradient tensors, got overlapping tensors/);
  });

  it('the Async forms reject (do not throw synchronously) with the same errors', async () => {
    const forwardPromise = quant.matmulAsync({ x: Tensor.zeros([3, 11]), weight });
    await expect(forwardPromise).rejects.toBeInstanceOf(LoraKernelsError);
    await expect(forwardPromise).rejects.toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/quant.matmulAsync: weight.shape/) });
    const backwardPromise = quant.matmulBackwardAsync({ gradOutput: g, x, weight, a, b, gate: Tensor.zeros([6], { dtype: 'float16' }) });
    await expect(backwardPromise).rejects.toBeInstanceOf(LoraKernelsError);
    await expect(backwardPromise).rejects.toMatchObject({ code: 'ERR_DTYPE', message: expect.stringMatching(/quant.matmulBackwardAsync: gate/) });
  });

  it('the addon itself rejects weight descriptors whose parts are too small (memory safety)', () => {
    const f32 = (data: Float32Array, shape: number[]) => ({ dtype: 0, shape, data });
    const u8 = (bytes: number) => ({ dtype: 4, shape: [bytes], data: new Uint8Array(bytes) });
    const call = (weight: object) => {
      try {
        native().quantMatmul({ x: f32(new Float32Array(30), [3, 10]), weight, scale: 1, gate: 1, out: f32(new Float32Array(18), [3, 6]) } as never);
      } catch (error) {
        return error as { code?: string; message?: string };
      }
      return undefined;
    };
    // 6 × 10 NF4 in blocks of 32: 30 bytes of codes, 2 absmax; ternary: 6 rows of 3 bytes.
    const nf4Desc = { format: 0, n: 6, k: 10, blockSize: 32, packed: u8(30), absmax: f32(new Float32Array(2), [2]) };
    expect(call({ ...nf4Desc, packed: u8(29) })).toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/weight.packed must hold 30 elements, got 29/) });
    expect(call({ ...nf4Desc, absmax: f32(new Float32Array(1), [1]) })).toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/weight.absmax must hold 2 elements, got 1/) });
    expect(call({ ...nf4Desc, absmax: undefined, absmaxCode: u8(2), nestedAbsmax: f32(new Float32Array(1), [1]), nestedCode: f32(new Float32Array(255), [255]), offset: 0 }))
      .toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/weight.nestedCode must hold 256 elements, got 255/) });
    expect(call({ format: 1, n: 6, k: 10, packed: u8(17), scale: 1 })).toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/weight.packed must hold 18 elements, got 17/) });
    expect(call({ ...nf4Desc, k: 11 })).toMatchObject({ code: 'ERR_SHAPE' });
  });

  it('mixing devices is ERR_DEVICE', () => {
    if (!testDevices().some((d) => d.device === 'cuda')) return;
    const onCuda = quant.to(nf4, 'cuda');
    expectError(() => quant.matmul({ x, weight: onCuda }), 'ERR_DEVICE', /weight must be on cpu like x, got cuda/);
    expectError(() => quant.matmul({ x: x.to('cuda'), weight: onCuda, a, b: b.to('cuda') }), 'ERR_DEVICE', /a must be on cuda like x, got cpu/);
    expectError(() => quant.matmul({ x: x.to('cuda'), weight: onCuda, bias: Tensor.zeros([6]) }), 'ERR_DEVICE', /bias must be on cuda like x, got cpu/);
    expectError(() => quant.matmul({ x: x.to('cuda'), weight: onCuda, gate: Tensor.zeros([6]) }), 'ERR_DEVICE', /gate must be on cuda like x, got cpu/);
    expectError(() => quant.matmul({ x, weight: { ...nf4, absmax: (nf4.absmax as Tensor).to('cuda') } }), 'ERR_DEVICE', /weight.absmax must be on cpu like the weight's packed codes, got cuda/);
    expectError(() => quant.matmulBackward({ gradOutput: g.to('cuda'), x: x.to('cuda'), weight: onCuda, a: a.to('cuda'), b: b.to('cuda'), out: { gradA: Tensor.zeros([4, 10]) } }),
      'ERR_DEVICE', /out.gradA must be on cuda like x, got cpu/);
  });
});
