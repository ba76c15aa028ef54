import { describe, expect, it } from 'vitest';

import { type Device, type DType, LoraKernelsError, lora, reference, Tensor } from '../lib/index.js';
import type { RefTensor } from '../lib/reference/index.js';
import { poisoned, testDevices } from './helpers/devices.js';
import { BIAS_C, cancellingBias, column0, withColumn0 } from './helpers/bias.js';
import { expectError } from './helpers/errors.js';

interface DoraCase {
  name: string;
  dtype: DType;
  lead: number[]; // leading dims of x; M = product
  k: number;
  n: number;
  r: number;
  bias: boolean;
  out: boolean;
  scale: number;
  magnitudeF32: boolean; // magnitude in float32 (else in the dtype of x, as PEFT stores it)
  needInputGrad: boolean;
  large: boolean; // skipped under emulation
}

// Odd sizes: M in {1, 3, 37, 129} (streaming and packed CPU paths), K and N not multiples of 8,
// ranks beyond one 16-wide slice of the CUDA kernels.
const LEADS: Record<number, number[]> = { 1: [1], 3: [3], 37: [37], 129: [3, 43] };
const KS = [45, 203, 19, 130];
const NS = [77, 19, 131, 50];
const RANKS = [1, 7, 16, 33];

function doraCases(): DoraCase[] {
  const cases: DoraCase[] = [];
  let i = 0;
  for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
    for (const m of [1, 3, 37, 129]) {
      cases.push({
        name: '', dtype, lead: LEADS[m]!, k: KS[i % 4]!, n: NS[(i + 1) % 4]!, r: RANKS[(i + 2) % 4]!,
        bias: i % 2 === 0, out: i % 3 !== 0, scale: i % 2 ? 0.5 : 2, magnitudeF32: dtype === 'float32' || i % 2 === 1,
        needInputGrad: i % 4 !== 3, large: false,
      });
      i++;
    }
  }
  // Decode edges on CUDA (the GEMV applies the column scale, cuda/gemv.cu): M = 16 exactly with
  // 16-byte loads and split-K (N ≤ 16, K ≥ 1024: the column scale in the split reduce), M = 17.
  cases.push({ name: '', dtype: 'float32', lead: [16], k: 1024, n: 16, r: 16, bias: true, out: true, scale: 0.5, magnitudeF32: true, needInputGrad: false, large: false });
  cases.push({ name: '', dtype: 'bfloat16', lead: [16], k: 264, n: 77, r: 33, bias: false, out: false, scale: 2, magnitudeF32: false, needInputGrad: true, large: false });
  cases.push({ name: '', dtype: 'float16', lead: [17], k: 45, n: 19, r: 7, bias: true, out: true, scale: 1, magnitudeF32: false, needInputGrad: true, large: false });
  // Past the CPU kernels' cache blocks (several K blocks, column tasks, 4-row norm tiles).
  cases.push({ name: '', dtype: 'float32', lead: [2, 75], k: 1100, n: 703, r: 16, bias: true, out: true, scale: 0.25, magnitudeF32: true, needInputGrad: true, large: true });
  cases.push({ name: '', dtype: 'bfloat16', lead: [301], k: 777, n: 515, r: 64, bias: false, out: false, scale: 1, magnitudeF32: false, needInputGrad: true, large: true });
  for (const c of cases) {
    c.name = `${c.dtype} x[${c.lead.join(',')},${c.k}] N=${c.n} r=${c.r}${c.bias ? ' bias' : ''}${c.out ? ' out=' : ''}` +
      ` magnitude ${c.magnitudeF32 ? 'float32' : c.dtype}${c.needInputGrad ? '' : ' no gradInput'}`;
  }
  return cases;
}

function onDevice(t: Tensor, device: Device): Tensor {
  return device === 'cpu' ? t : t.to(device);
}

/** PEFT-like magnitude: the row norms of W + s·B·A (its initial value) times 1 ± 0.25. */
function makeMagnitude(norm: RefTensor, dtype: DType, seed: number): Tensor {
  const jitter = Tensor.randn([norm.data.length], { seed }).toFloat32();
  return Tensor.from(Array.from(norm.data, (v, j) => v * (1 + 0.25 * Math.tanh(jitter[j]!))), [norm.data.length], { dtype });
}

function makeInputs(c: DoraCase, device: Device, seed: number) {
  const opts = (s: number) => ({ dtype: c.dtype, device, seed: seed * 100 + s });
  const x = Tensor.randn([...c.lead, c.k], opts(1));
  const weight = Tensor.randn([c.n, c.k], opts(2));
  const bias = c.bias ? Tensor.randn([c.n], opts(3)) : undefined;
  const a = Tensor.randn([c.r, c.k], opts(4));
  const b = Tensor.randn([c.n, c.r], opts(5));
  const norm = reference.lora.doraWeightNorm({ weight, a, b, scale: c.scale });
  const magnitude = onDevice(makeMagnitude(norm, c.magnitudeF32 ? 'float32' : c.dtype, seed * 100 + 6), device);
  return { x, weight, bias, a, b, magnitude, scale: c.scale };
}

describe.each(testDevices())('lora.doraForward / doraBackward on $device', ({ device, emulated }) => {
  const cases = doraCases().filter((c) => !(emulated && c.large));
  it.each(cases.map((c, i) => [c.name, c, i] as const))('forward %s', (_name, c, seed) => {
    const inputs = makeInputs(c, device, seed + 1);
    const outShape = [...c.lead, c.n];
    const out = c.out ? poisoned(outShape, c.dtype, device) : undefined;
    const y = lora.doraForward({ ...inputs, out });
    if (out) expect(y).toBe(out);
    expect(y.shape).toEqual(outShape);
    expect(y.dtype).toBe(c.dtype);
    expect(y.device).toBe(device);
    reference.assertClose(y, reference.lora.doraForward(inputs), { dtype: c.dtype });
  });

  it.each(cases.map((c, i) => [c.name, c, i] as const))('backward %s', (_name, c, seed) => {
    const { bias: _bias, ...inputs } = makeInputs(c, device, seed + 50);
    const gradOutput = Tensor.randn([...c.lead, c.n], { dtype: c.dtype, device, seed: seed + 5000 });
    const grads = lora.doraBackward({ ...inputs, gradOutput, needInputGrad: c.needInputGrad });
    const expected = reference.lora.doraBackward({ ...inputs, gradOutput });
    expect(grads.gradMagnitude.dtype).toBe(inputs.magnitude.dtype);
    expect(grads.gradMagnitude.shape).toEqual([c.n]);
    expect(grads.gradA.shape).toEqual([c.r, c.k]);
    expect(grads.gradB.shape).toEqual([c.n, c.r]);
    for (const t of [grads.gradA, grads.gradB, grads.gradMagnitude]) expect(t.device).toBe(device);
    reference.assertClose(grads.gradMagnitude, expected.gradMagnitude, { dtype: c.dtype, label: 'gradMagnitude' });
    reference.assertClose(grads.gradA, expected.gradA, { dtype: c.dtype, label: 'gradA' });
    reference.assertClose(grads.gradB, expected.gradB, { dtype: c.dtype, label: 'gradB' });
    if (c.needInputGrad) {
      expect(grads.gradInput!.shape).toEqual([...c.lead, c.k]);
      reference.assertClose(grads.gradInput!, expected.gradInput, { dtype: c.dtype, label: 'gradInput' });
    } else {
      expect(grads.gradInput).toBeUndefined();
    }
  });

  it('PEFT initialisation (b = 0, magnitude = ‖W‖ per row) reproduces the base layer', () => {
    const x = Tensor.randn([5, 33], { device, seed: 1 });
    const weight = Tensor.randn([21, 33], { device, seed: 2 });
    const bias = Tensor.randn([21], { device, seed: 3 });
    const a = Tensor.randn([4, 33], { device, seed: 4 });
    const b = Tensor.zeros([21, 4], { device });
    const norm = reference.lora.doraWeightNorm({ weight, a, b });
    const magnitude = onDevice(Tensor.from(norm.data, [21], { dtype: 'float32' }), device);
    reference.assertClose(lora.doraForward({ x, weight, bias, a, b, magnitude, scale: 3 }), lora.forward({ x, weight, bias }), { dtype: 'float32' });
  });

  it('doraForwardAsync and doraBackwardAsync match the synchronous calls', async () => {
    const c = doraCases()[6]!;
    const inputs = makeInputs(c, device, 77);
    const out = poisoned([...c.lead, c.n], c.dtype, device);
    const y = await lora.doraForwardAsync({ ...inputs, out });
    expect(y).toBe(out);
    reference.assertClose(y, lora.doraForward(inputs), { dtype: c.dtype });
    const { bias: _bias, ...operands } = inputs;
    const gradOutput = Tensor.randn([...c.lead, c.n], { dtype: c.dtype, device, seed: 78 });
    const [async1, async2] = await Promise.all([lora.doraBackwardAsync({ ...operands, gradOutput }), lora.doraBackwardAsync({ ...operands, gradOutput })]);
    const sync = lora.doraBackward({ ...operands, gradOutput });
    for (const got of [async1, async2]) {
      for (const key of ['gradInput', 'gradA', 'gradB', 'gradMagnitude'] as const) {
        reference.assertClose(got[key]!, sync[key]!.toFloat32(), { dtype: c.dtype, label: key });
      }
    }
  });

  it('zero rows: an empty y, and zero gradients', () => {
    const weight = Tensor.randn([5, 8], { device, seed: 1 });
    const a = Tensor.randn([2, 8], { device, seed: 2 });
    const b = Tensor.randn([5, 2], { device, seed: 3 });
    const magnitude = Tensor.randn([5], { device, seed: 4 });
    const x = Tensor.zeros([0, 8], { device });
    expect(lora.doraForward({ x, weight, a, b, magnitude }).shape).toEqual([0, 5]);
    const grads = lora.doraBackward({ x, weight, a, b, magnitude, gradOutput: Tensor.zeros([0, 5], { device }) });
    expect(Array.from(grads.gradMagnitude.toFloat32())).toEqual([0, 0, 0, 0, 0]);
    expect(Array.from(grads.gradA.toFloat32()).every((v) => v === 0)).toBe(true);
    expect(Array.from(grads.gradB.toFloat32()).every((v) => v === 0)).toBe(true);
  });
});

// A float32 bias with float16/bfloat16 x, added after the magnitude scaling and before the single
// rounding (see helpers/bias.ts; the bias cancels magnitude / norm · C·w_j0): M = 1 and 4 take the
// decode paths (CUDA GEMV, CPU streaming), 37 the CUDA GEMM, 129 the CPU's too.
describe.each(testDevices())('lora.doraForward with a float32 bias and 16-bit x on $device', ({ device }) => {
  const cases = (['float16', 'bfloat16'] as DType[]).flatMap((dtype) =>
    [1, 4, 37, 129].map((m, i) => ({ dtype, m, k: KS[i]!, n: NS[(i + 1) % 4]!, r: RANKS[(i + 2) % 4]!, magnitudeF32: i % 2 === 0 })));
  it.each(cases.map((c, i) => [`${c.dtype} x[${c.m},${c.k}] N=${c.n} r=${c.r} magnitude ${c.magnitudeF32 ? 'float32' : c.dtype}`, c, i] as const))('%s', (_name, c, i) => {
    const opts = (s: number) => ({ dtype: c.dtype, device, seed: 9200 + 10 * i + s });
    const x = withColumn0(Tensor.randn([c.m, c.k], opts(1)), c.k, BIAS_C);
    const weight = Tensor.randn([c.n, c.k], opts(2));
    const a = withColumn0(Tensor.randn([c.r, c.k], opts(3)), c.k, 0);
    const b = Tensor.randn([c.n, c.r], opts(4));
    const norm = reference.lora.doraWeightNorm({ weight, a, b, scale: 0.5 });
    const magnitude = onDevice(makeMagnitude(norm, c.magnitudeF32 ? 'float32' : c.dtype, 9200 + 10 * i + 5), device);
    const m = magnitude.toFloat32();
    const bias = cancellingBias(column0(weight, c.n, c.k), device, 9200 + 10 * i + 6, Array.from(norm.data, (v, j) => m[j]! / v));
    const inputs = { x, weight, bias, a, b, magnitude, scale: 0.5 };
    const out = poisoned([c.m, c.n], c.dtype, device);
    expect(lora.doraForward({ ...inputs, out })).toBe(out);
    reference.assertClose(out, reference.lora.doraForward(inputs), { dtype: c.dtype });
  });
});

describe('lora.doraForward / doraBackward reject bad input with a code and a message naming the argument', () => {
  const x = Tensor.randn([3, 10], { seed: 1 });
  const weight = Tensor.randn([6, 10], { seed: 2 });
  const a = Tensor.randn([4, 10], { seed: 3 });
  const b = Tensor.randn([6, 4], { seed: 4 });
  const magnitude = Tensor.randn([6], { seed: 5 });
  const gradOutput = Tensor.randn([3, 6], { seed: 6 });
  const half = (t: Tensor) => Tensor.from(t.toFloat32(), t.shape, { dtype: 'float16' });
  const cases: [string, () => unknown, string, RegExp][] = [
    ['no argument object', () => lora.doraForward(null as never), 'ERR_ARGUMENT', /lora.doraForward: the argument must be an object/],
    ['magnitude missing', () => lora.doraForward({ x, weight, a, b } as never), 'ERR_ARGUMENT', /magnitude must be a Tensor, got undefined/],
    ['a missing', () => lora.doraForward({ x, weight, b, magnitude } as never), 'ERR_ARGUMENT', /a must be a Tensor, got undefined/],
    ['b missing', () => lora.doraBackward({ x, weight, a, magnitude, gradOutput } as never), 'ERR_ARGUMENT', /lora.doraBackward: b must be a Tensor, got undefined/],
    ['magnitude shape', () => lora.doraForward({ x, weight, a, b, magnitude: Tensor.zeros([5]) }), 'ERR_SHAPE', /magnitude.shape must be \[6\], got \[5\]/],
    ['magnitude 2-D', () => lora.doraBackward({ x, weight, a, b, magnitude: Tensor.zeros([6, 1]), gradOutput }), 'ERR_SHAPE', /magnitude.shape must be \[6\], got \[6, 1\]/],
    ['magnitude int32', () => lora.doraForward({ x, weight, a, b, magnitude: Tensor.zeros([6], { dtype: 'int32' }) }), 'ERR_DTYPE', /magnitude must be float32, got int32/],
    ['magnitude float16 for float32 x', () => lora.doraForward({ x, weight, a, b, magnitude: half(magnitude) }), 'ERR_DTYPE', /magnitude must be float32, got float16/],
    ['magnitude bfloat16 for float16 x', () => lora.doraForward({ x: half(x), weight: half(weight), a: half(a), b: half(b), magnitude: Tensor.zeros([6], { dtype: 'bfloat16' }) }), 'ERR_DTYPE', /magnitude must be float32 or float16 like x, got bfloat16/],
    ['a shape', () => lora.doraForward({ x, weight, a: Tensor.zeros([4, 9]), b, magnitude }), 'ERR_SHAPE', /a.shape must be \[r, 10\]/],
    ['b shape', () => lora.doraForward({ x, weight, a, b: Tensor.zeros([6, 5]), magnitude }), 'ERR_SHAPE', /b.shape must be \[6, 4\], got \[6, 5\]/],
    ['a dtype', () => lora.doraForward({ x, weight, a: half(a), b, magnitude }), 'ERR_DTYPE', /a must be float32 like x, got float16/],
    ['bias shape', () => lora.doraForward({ x, weight, bias: Tensor.zeros([7]), a, b, magnitude }), 'ERR_SHAPE', /bias.shape must be \[6\], got \[7\]/],
    ['float16 bias, float32 x', () => lora.doraForward({ x, weight, bias: Tensor.zeros([6], { dtype: 'float16' }), a, b, magnitude }), 'ERR_DTYPE', /bias must be float32 like x, got float16/],
    ['bfloat16 bias, float16 x', () => lora.doraForward({ x: half(x), weight: half(weight), bias: Tensor.zeros([6], { dtype: 'bfloat16' }), a: half(a), b: half(b), magnitude }), 'ERR_DTYPE', /bias must be float16 like x \(or float32\), got bfloat16/],
    ['int32 bias, float16 x', () => lora.doraForward({ x: half(x), weight: half(weight), bias: Tensor.zeros([6], { dtype: 'int32' }), a: half(a), b: half(b), magnitude }), 'ERR_DTYPE', /bias must be float16 like x \(or float32\), got int32/],
    ['out shape', () => lora.doraForward({ x, weight, a, b, magnitude, out: Tensor.zeros([3, 5]) }), 'ERR_SHAPE', /out.shape must be \[3, 6\], got \[3, 5\]/],
    ['out aliases magnitude', () => { const m = Tensor.zeros([6]); return lora.doraForward({ x: Tensor.zeros([1, 10]), weight, a, b, magnitude: m, out: m.reshape([1, 6]) }); }, 'ERR_ARGUMENT', /out must be memory not shared with magnitude/],
    ['scale NaN', () => lora.doraForward({ x, weight, a, b, magnitude, scale: NaN }), 'ERR_ARGUMENT', /scale must be a finite number, got number NaN/],
    ['gradOutput missing', () => lora.doraBackward({ x, weight, a, b, magnitude } as never), 'ERR_ARGUMENT', /gradOutput must be a Tensor, got undefined/],
    ['gradOutput shape', () => lora.doraBackward({ x, weight, a, b, magnitude, gradOutput: Tensor.zeros([3, 7]) }), 'ERR_SHAPE', /gradOutput.shape must be \[3, 6\], got \[3, 7\]/],
    ['gradOutput dtype', () => lora.doraBackward({ x, weight, a, b, magnitude, gradOutput: half(gradOutput) }), 'ERR_DTYPE', /gradOutput must be float32 like x, got float16/],
    ['needInputGrad number', () => lora.doraBackward({ x, weight, a, b, magnitude, gradOutput, needInputGrad: 1 as never }), 'ERR_ARGUMENT', /needInputGrad must be a boolean/],
    ['disposed magnitude', () => { const m = Tensor.zeros([6]); m.dispose(); return lora.doraForward({ x, weight, a, b, magnitude: m }); }, 'ERR_DISPOSED', /magnitude must be a live tensor/],
  ];
  it.each(cases)('%s', (_name, fn, code, pattern) => expectError(fn, code, pattern));

  it('the Async forms reject (do not throw synchronously) with the same error', async () => {
    const forward = lora.doraForwardAsync({ x, weight, a, b, magnitude: Tensor.zeros([5]) });
    await expect(forward).rejects.toMatchObject({ code: 'ERR_SHAPE', name: 'LoraKernelsError' });
    const backward = lora.doraBackwardAsync({ x, weight, a, b, magnitude, gradOutput: Tensor.zeros([3, 7]) });
    await expect(backward).rejects.toMatchObject({ code: 'ERR_SHAPE' });
  });

  it('mixing devices is ERR_DEVICE', () => {
    if (!testDevices().some((d) => d.device === 'cuda')) return;
    expectError(() => lora.doraForward({ x, weight, a, b, magnitude: magnitude.to('cuda') }), 'ERR_DEVICE', /magnitude must be on cpu like x, got cuda/);
  });

  it('the addon itself rejects a magnitude buffer that is too small or of another dtype (memory safety)', async () => {
    const { native } = await import('../lib/native.js');
    const desc = (data: Float32Array | Uint16Array, shape: number[], dtype = 0) => ({ dtype, shape, data });
    const base = { x: desc(new Float32Array(30), [3, 10]), weight: desc(new Float32Array(60), [6, 10]), a: desc(new Float32Array(40), [4, 10]), b: desc(new Float32Array(24), [6, 4]), out: desc(new Float32Array(18), [3, 6]), scale: 1 };
    const call = (magnitude: ReturnType<typeof desc>) => {
      try {
        native().doraForward({ ...base, magnitude });
      } catch (error) {
        return error as { code?: string; message: string };
      }
      return undefined;
    };
    expect(call(desc(new Float32Array(2), [6]))).toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/magnitude: shape needs 24 bytes, the buffer holds 8/) });
    expect(call(desc(new Float32Array(5), [5]))).toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/magnitude must be \[N\]/) });
    expect(call(desc(new Uint16Array(6), [6], 1))).toMatchObject({ code: 'ERR_DTYPE', message: expect.stringMatching(/magnitude must be float32 or the dtype of x/) });
  });
});

describe('reference.lora.doraForward / doraBackward', () => {
  it('computes a small case worked by hand with PEFT semantics', () => {
    // W + s·B·A = [[3, 0], [0, 0]] + 2·[[0, 0], [0, 2]] = [[3, 0], [0, 4]] → norm = [3, 4];
    // m = [6, 2] → m / norm = [2, 0.5]; x = [1, 1]: z = [3, 0] + 2·1·[0, 2] = [3, 4];
    // y = [2·3, 0.5·4] + bias = [7, 1] (PEFT: (m / ‖W + sBA‖) ⊙ ((W + sBA)·x) + bias).
    const args = {
      x: Tensor.from([1, 1], [1, 2]), weight: Tensor.from([3, 0, 0, 0], [2, 2]), bias: Tensor.from([1, -1], [2]),
      a: Tensor.from([0, 1], [1, 2]), b: Tensor.from([0, 2], [2, 1]), magnitude: Tensor.from([6, 2], [2]), scale: 2,
    };
    expect(Array.from(reference.lora.doraWeightNorm(args).data)).toEqual([3, 4]);
    const y = reference.lora.doraForward(args);
    expect(Array.from(y.data)).toEqual([7, 1]);
    expect(y.shape).toEqual([1, 2]);
    // g = [1, 1]: gradMagnitude = g ⊙ z / norm = [1, 1]; g' = [2, 0.5]; dT = s·g'·B = 2·(0·2 + 2·0.5) = 2;
    // gradA = dTᵀ·x = [2, 2]; gradB = s·g'ᵀ·T = 2·[2, 0.5]·1 = [4, 1]; gradInput = g'·W + dT·A = [6, 0] + [0, 2].
    const grads = reference.lora.doraBackward({ ...args, gradOutput: Tensor.from([1, 1], [1, 2]) });
    expect(Array.from(grads.gradMagnitude.data)).toEqual([1, 1]);
    expect(Array.from(grads.gradA.data)).toEqual([2, 2]);
    expect(Array.from(grads.gradB.data)).toEqual([4, 1]);
    expect(Array.from(grads.gradInput.data)).toEqual([6, 2]);
  });

  it('backward matches central finite differences of the forward with the norm frozen (float64)', () => {
    // L = Σ G ⊙ y. y is linear in each of x, a, b and magnitude once the norm is frozen, so central
    // differences are exact up to rounding: 1e-7 relative leaves room only for float64 rounding.
    const m = 2, k = 3, n = 4, r = 2, scale = 1.5;
    const ref = (shape: number[], seed: number): RefTensor => ({
      data: Float64Array.from(Tensor.randn(shape, { seed }).toFloat32(), (v) => v + 1e-3 * Math.sin(seed + v)), shape,
    });
    const inputs = { x: ref([m, k], 1), weight: ref([n, k], 2), bias: ref([n], 3), a: ref([r, k], 4), b: ref([n, r], 5), magnitude: ref([n], 6), scale };
    const weightNorm = reference.lora.doraWeightNorm(inputs);
    const gradOutput = ref([m, n], 7);
    const loss = () => reference.lora.doraForward({ ...inputs, weightNorm }).data.reduce((s, v, i) => s + v * gradOutput.data[i]!, 0);
    const grads = reference.lora.doraBackward({ ...inputs, gradOutput });
    const h = 1e-6;
    for (const [name, grad] of [['x', grads.gradInput], ['a', grads.gradA], ['b', grads.gradB], ['magnitude', grads.gradMagnitude]] as const) {
      const values = inputs[name].data;
      const worst = Math.max(...Array.from(grad.data, Math.abs));
      for (let i = 0; i < values.length; i++) {
        const saved = values[i]!;
        values[i] = saved + h;
        const up = loss();
        values[i] = saved - h;
        const down = loss();
        values[i] = saved;
        expect(Math.abs((up - down) / (2 * h) - grad.data[i]!), `d L / d ${name}[${i}]`).toBeLessThan(1e-7 * worst);
      }
    }
  });
});
