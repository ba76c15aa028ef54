import { describe, expect, it } from 'vitest';

import { type Device, type DType, LoraKernelsError, lora, reference, Tensor } from '../lib/index.js';
import { poisoned, testDevices } from './helpers/devices.js';
import { expectError } from './helpers/errors.js';

interface BackwardCase {
  name: string;
  dtype: DType;
  lead: number[]; // leading dims of x; M = product
  k: number;
  n: number;
  r: number;
  mask: boolean;
  needInputGrad: boolean;
  scale: number;
  large: boolean; // skipped under emulation
}

// Odd sizes on purpose: M in {1, 3, 37, 129}, K and N not multiples of 8, ranks 1…64.
const LEADS: Record<number, number[]> = { 1: [1], 3: [1, 3], 37: [37], 129: [3, 43] };
const KS = [45, 203, 19, 130];
const NS = [77, 19, 131, 50];

function backwardCases(): BackwardCase[] {
  const cases: BackwardCase[] = [];
  let i = 0;
  for (const dtype of ['float32', 'float16', 'bfloat16'] as DType[]) {
    for (const m of [1, 3, 37, 129]) {
      for (const r of [1, 7, 16, 64]) {
        cases.push({
          name: '', dtype, lead: LEADS[m]!, k: KS[i % 4]!, n: NS[(i + 1) % 4]!, r,
          mask: i % 3 === 0, needInputGrad: i % 5 !== 2, scale: i % 2 ? 0.5 : 2, large: false,
        });
        i++;
      }
    }
  }
  // Enough rows for the CUDA reductions over m (gradA, gradB) to split over grid.z (≥ 512 rows),
  // small enough for the emulator.
  cases.push({ name: '', dtype: 'float32', lead: [2, 300], k: 24, n: 20, r: 3, mask: true, needInputGrad: true, scale: 1, large: false });
  cases.push({ name: '', dtype: 'bfloat16', lead: [777], k: 9, n: 70, r: 2, mask: false, needInputGrad: false, scale: 3, large: false });
  // Past every cache block of the CPU kernel (several K blocks of the reduction over N, several
  // column tasks, more rows than one partial-sum group), and more rows than one packed chunk.
  cases.push({ name: '', dtype: 'float32', lead: [2, 150], k: 1100, n: 700, r: 16, mask: true, needInputGrad: true, scale: 0.25, large: true });
  cases.push({ name: '', dtype: 'bfloat16', lead: [301], k: 777, n: 515, r: 33, mask: false, needInputGrad: true, scale: 1, large: true });
  cases.push({ name: '', dtype: 'float16', lead: [5], k: 1029, n: 4099, r: 8, mask: true, needInputGrad: true, scale: 1, large: true });
  cases.push({ name: '', dtype: 'float32', lead: [1100], k: 70, n: 4100, r: 5, mask: false, needInputGrad: true, scale: 1.5, large: true });
  for (const c of cases) {
    c.name = `${c.dtype} x[${c.lead.join(',')},${c.k}] N=${c.n} r=${c.r}${c.mask ? ' mask' : ''}${c.needInputGrad ? '' : ' no-input-grad'}`;
  }
  return cases;
}

function makeInputs(c: BackwardCase, device: Device, seed: number) {
  const opts = (s: number) => ({ dtype: c.dtype, device, seed: seed * 100 + s });
  const x = Tensor.randn([...c.lead, c.k], opts(1));
  const weight = Tensor.randn([c.n, c.k], opts(2));
  const a = Tensor.randn([c.r, c.k], opts(3));
  const b = Tensor.randn([c.n, c.r], opts(4));
  const gradOutput = Tensor.randn([...c.lead, c.n], opts(5));
  let dropoutMask: Tensor | undefined;
  if (c.mask) {
    // Inverted dropout with p = 0.25: entries 0 or 1/(1-p), exactly representable in every dtype.
    const keep = Tensor.randn([...c.lead, c.k], { dtype: 'float32', seed: seed * 100 + 6 }).toFloat32();
    dropoutMask = Tensor.from(Array.from(keep, (z) => (z > -0.6745 ? 4 / 3 : 0)), [...c.lead, c.k], { dtype: c.dtype });
    if (device !== 'cpu') dropoutMask = dropoutMask.to(device);
  }
  return { gradOutput, x, weight, a, b, dropoutMask };
}

describe.each(testDevices())('lora.backward on $device', ({ device, emulated }) => {
  const cases = backwardCases().filter((c) => !(emulated && c.large));
  it.each(cases.map((c, i) => [c.name, c, i] as const))('%s', (_name, c, seed) => {
    const inputs = makeInputs(c, device, seed + 1);
    // Every output poisoned with NaN: an element a kernel forgets stays NaN and fails the check.
    const out = {
      gradA: poisoned([c.r, c.k], c.dtype, device),
      gradB: poisoned([c.n, c.r], c.dtype, device),
      gradInput: c.needInputGrad ? poisoned([...c.lead, c.k], c.dtype, device) : undefined,
    };
    const grads = lora.backward({ ...inputs, scale: c.scale, needInputGrad: c.needInputGrad, out });
    expect(grads.gradA).toBe(out.gradA);
    expect(grads.gradB).toBe(out.gradB);
    const expected = reference.lora.backward({ ...inputs, scale: c.scale, needInputGrad: c.needInputGrad });
    expect(grads.gradA.shape).toEqual([c.r, c.k]);
    expect(grads.gradB.shape).toEqual([c.n, c.r]);
    for (const t of [grads.gradA, grads.gradB, grads.gradInput]) {
      if (!t) continue;
      expect(t.dtype).toBe(c.dtype);
      expect(t.device).toBe(device);
    }
    reference.assertClose(grads.gradA, expected.gradA, { dtype: c.dtype, label: 'gradA' });
    reference.assertClose(grads.gradB, expected.gradB, { dtype: c.dtype, label: 'gradB' });
    if (c.needInputGrad) {
      expect(grads.gradInput!.shape).toEqual([...c.lead, c.k]);
      reference.assertClose(grads.gradInput!, expected.gradInput!, { dtype: c.dtype, label: 'gradInput' });
    } else {
      expect(grads.gradInput).toBeUndefined();
    }
  });

  it('is deterministic: two runs give identical bits', () => {
    const c = backwardCases()[emulated ? 30 : 12]!;
    const inputs = makeInputs(c, device, 5);
    const first = lora.backward({ ...inputs, scale: c.scale });
    const second = lora.backward({ ...inputs, scale: c.scale });
    for (const key of ['gradInput', 'gradA', 'gradB'] as const) {
      expect(second[key]!.toArray(), key).toEqual(first[key]!.toArray());
    }
  });

  it('backwardAsync matches backward', async () => {
    const c = backwardCases()[9]!;
    const inputs = makeInputs(c, device, 77);
    const grads = await lora.backwardAsync({ ...inputs, scale: c.scale });
    const sync = lora.backward({ ...inputs, scale: c.scale });
    reference.assertClose(grads.gradA, sync.gradA, { dtype: c.dtype });
    reference.assertClose(grads.gradB, sync.gradB, { dtype: c.dtype });
    reference.assertClose(grads.gradInput!, sync.gradInput!, { dtype: c.dtype });
  });

  it('zero rows give zero gradA and gradB and an empty gradInput', () => {
    const weight = Tensor.randn([5, 8], { device });
    const a = Tensor.randn([3, 8], { device });
    const b = Tensor.randn([5, 3], { device });
    const grads = lora.backward({ gradOutput: Tensor.zeros([0, 5], { device }), x: Tensor.zeros([0, 8], { device }), weight, a, b });
    expect(grads.gradInput!.shape).toEqual([0, 8]);
    expect(Array.from(grads.gradA.toFloat32())).toEqual(new Array(24).fill(0));
    expect(Array.from(grads.gradB.toFloat32())).toEqual(new Array(15).fill(0));
  });

  it('NaN in gradOutput reaches exactly the gradients it touches', () => {
    const host = Tensor.randn([4, 9], { seed: 5 }).toFloat32();
    host[2 * 9 + 4] = NaN;
    let gradOutput = Tensor.from(host, [4, 9]);
    if (device !== 'cpu') gradOutput = gradOutput.to(device);
    const args = { gradOutput, x: Tensor.randn([4, 21], { device, seed: 6 }), weight: Tensor.randn([9, 21], { device, seed: 7 }), a: Tensor.randn([3, 21], { device, seed: 8 }), b: Tensor.randn([9, 3], { device, seed: 9 }) };
    const grads = lora.backward(args);
    const gi = grads.gradInput!.toFloat32();
    for (let i = 0; i < 4; i++) for (let p = 0; p < 21; p++) expect(Number.isNaN(gi[i * 21 + p]!), `gradInput[${i},${p}]`).toBe(i === 2);
    const gb = grads.gradB.toFloat32();
    for (let c = 0; c < 9; c++) for (let t = 0; t < 3; t++) expect(Number.isNaN(gb[c * 3 + t]!), `gradB[${c},${t}]`).toBe(c === 4);
    expect(grads.gradA.toFloat32().every((v) => Number.isNaN(v))).toBe(true);  // dT row 2 is NaN
  });
});

describe('reference.lora.backward against numerical derivatives of reference.lora.forward', () => {
  // L = Σ gradOutput ⊙ forward(x, a, b). y is linear in each of x, a and b separately, so a central
  // difference is exact up to float64 rounding for any step; the step actually taken is the
  // float32-rounded one, read back from the perturbed tensor.
  const m = 3, k = 5, n = 4, r = 2, scale = 0.75;
  const base = {
    x: Tensor.randn([m, k], { seed: 1 }),
    weight: Tensor.randn([n, k], { seed: 2 }),
    a: Tensor.randn([r, k], { seed: 3 }),
    b: Tensor.randn([n, r], { seed: 4 }),
    dropoutMask: Tensor.from(Array.from({ length: m * k }, (_, i) => (i % 4 === 1 ? 0 : 2)), [m, k]),
  };
  const gradOutput = Tensor.randn([m, n], { seed: 5 });
  const g = gradOutput.toFloat32();
  const loss = (args: typeof base) => reference.lora.forward({ ...args, scale }).data.reduce((s, y, i) => s + y * g[i]!, 0);

  for (const withMask of [false, true]) {
    it(`gradInput, gradA and gradB${withMask ? ' with a dropout mask' : ''}`, () => {
      const inputs = withMask ? base : { ...base, dropoutMask: undefined as never };
      const analytic = reference.lora.backward({ ...inputs, gradOutput, scale });
      const checks = [['x', analytic.gradInput!], ['a', analytic.gradA], ['b', analytic.gradB]] as const;
      for (const [name, grad] of checks) {
        const values = inputs[name].toFloat32();
        const numeric = new Float64Array(values.length);
        for (let i = 0; i < values.length; i++) {
          const plus = Float32Array.from(values);
          const minus = Float32Array.from(values);
          plus[i] = values[i]! + 0.5;
          minus[i] = values[i]! - 0.5;
          const lp = loss({ ...inputs, [name]: Tensor.from(plus, inputs[name].shape) });
          const lm = loss({ ...inputs, [name]: Tensor.from(minus, inputs[name].shape) });
          numeric[i] = (lp - lm) / (plus[i]! - minus[i]!);
        }
        reference.assertClose(grad, numeric, { dtype: 'float64', tolerance: { atol: 1e-9, rtol: 1e-9, frobenius: 1e-10 }, label: `d/d${name}` });
      }
    });
  }
});

describe('lora.backward rejects bad input with a code and a message naming the argument', () => {
  const x = Tensor.randn([2, 3, 10], { seed: 1 });
  const weight = Tensor.randn([6, 10], { seed: 2 });
  const a = Tensor.randn([4, 10], { seed: 3 });
  const b = Tensor.randn([6, 4], { seed: 4 });
  const gradOutput = Tensor.randn([2, 3, 6], { seed: 5 });
  const ok = { gradOutput, x, weight, a, b };
  const cases: [string, () => unknown, string, RegExp][] = [
    ['no argument object', () => lora.backward(null as never), 'ERR_ARGUMENT', /lora.backward: the argument must be an object/],
    ['gradOutput missing', () => lora.backward({ ...ok, gradOutput: undefined as never }), 'ERR_ARGUMENT', /lora.backward: gradOutput must be a Tensor, got undefined/],
    ['a missing', () => lora.backward({ ...ok, a: undefined as never }), 'ERR_ARGUMENT', /a must be a Tensor, got undefined/],
    ['b missing', () => lora.backward({ ...ok, b: undefined as never }), 'ERR_ARGUMENT', /b must be a Tensor, got undefined/],
    ['int x', () => lora.backward({ ...ok, x: Tensor.zeros([2, 3, 10], { dtype: 'int8' }) }), 'ERR_DTYPE', /x must be of dtype float32 or float16 or bfloat16, got int8/],
    ['gradOutput dtype', () => lora.backward({ ...ok, gradOutput: Tensor.zeros([2, 3, 6], { dtype: 'bfloat16' }) }), 'ERR_DTYPE', /gradOutput must be float32 like x, got bfloat16/],
    ['gradOutput shape', () => lora.backward({ ...ok, gradOutput: Tensor.zeros([6, 6]) }), 'ERR_SHAPE', /gradOutput.shape must be \[2, 3, 6\], got \[6, 6\]/],
    ['weight K', () => lora.backward({ ...ok, weight: Tensor.zeros([6, 9]) }), 'ERR_SHAPE', /weight.shape must be \[N, 10\]/],
    ['a shape', () => lora.backward({ ...ok, a: Tensor.zeros([4, 9]) }), 'ERR_SHAPE', /a.shape must be \[r, 10\] \(r ≥ 1\), got \[4, 9\]/],
    ['b shape', () => lora.backward({ ...ok, b: Tensor.zeros([6, 5]) }), 'ERR_SHAPE', /b.shape must be \[6, 4\], got \[6, 5\]/],
    ['b dtype', () => lora.backward({ ...ok, b: Tensor.zeros([6, 4], { dtype: 'float16' }) }), 'ERR_DTYPE', /b must be float32 like x, got float16/],
    ['mask shape', () => lora.backward({ ...ok, dropoutMask: Tensor.zeros([6, 10]) }), 'ERR_SHAPE', /dropoutMask.shape must be \[2, 3, 10\], got \[6, 10\]/],
    ['scale Infinity', () => lora.backward({ ...ok, scale: Infinity }), 'ERR_ARGUMENT', /scale must be a finite number, got number Infinity/],
    ['needInputGrad string', () => lora.backward({ ...ok, needInputGrad: 'no' as never }), 'ERR_ARGUMENT', /needInputGrad must be a boolean, got the string "no"/],
    ['out.gradB shape', () => lora.backward({ ...ok, out: { gradB: Tensor.zeros([4, 6]) } }), 'ERR_SHAPE', /out.gradB.shape must be \[6, 4\], got \[4, 6\]/],
    ['out.gradA aliases a', () => lora.backward({ ...ok, out: { gradA: a } }), 'ERR_ARGUMENT', /out.gradA must be memory not shared with a/],
    ['out.gradA is out.gradB', () => {
      const sq = Tensor.randn([4, 4]);
      const t = Tensor.zeros([4, 4]);
      return lora.backward({ gradOutput: Tensor.randn([2, 4]), x: Tensor.randn([2, 4]), weight: sq, a: sq, b: sq, out: { gradA: t, gradB: t } });
    }, 'ERR_ARGUMENT', /out must be three separate gradient tensors, got overlapping tensors/],
    ['disposed a', () => { const d = Tensor.randn([4, 10]); d.dispose(); return lora.backward({ ...ok, a: d }); }, 'ERR_DISPOSED', /a must be a live tensor, got a disposed tensor/],
  ];
  it.each(cases)('%s', (_name, fn, code, pattern) => expectError(fn, code, pattern));

  it('backwardAsync rejects (does not throw synchronously) with the same error', async () => {
    const promise = lora.backwardAsync({ ...ok, b: Tensor.zeros([6, 5]) });
    await expect(promise).rejects.toBeInstanceOf(LoraKernelsError);
    await expect(promise).rejects.toMatchObject({ code: 'ERR_SHAPE' });
  });

  it('mixing devices is ERR_DEVICE', () => {
    if (!testDevices().some((d) => d.device === 'cuda')) return;
    expectError(() => lora.backward({ ...ok, a: a.to('cuda') }), 'ERR_DEVICE', /a must be on cpu like x, got cuda/);
  });

  it('the addon itself rejects descriptors whose buffers are too small (memory safety)', async () => {
    const { native } = await import('../lib/native.js');
    const desc = (data: Float32Array, shape: number[]) => ({ dtype: 0, shape, data });
    const call = (gradA: Float32Array, gradInput?: Float32Array) => {
      try {
        native().loraBackward({
          gradOutput: desc(new Float32Array(36), [6, 6]), x: desc(new Float32Array(60), [6, 10]), weight: desc(new Float32Array(60), [6, 10]),
          a: desc(new Float32Array(40), [4, 10]), b: desc(new Float32Array(24), [6, 4]), scale: 1,
          gradA: desc(gradA, [4, 10]), gradB: desc(new Float32Array(24), [6, 4]),
          ...(gradInput ? { gradInput: desc(gradInput, [6, 10]) } : {}),
        });
      } catch (error) {
        return error as { code?: string; message: string };
      }
      return undefined;
    };
    expect(call(new Float32Array(40))).toBeUndefined();
    expect(call(new Float32Array(39))).toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/gradA: shape needs 160 bytes, the buffer holds 156/) });
    const err = call(new Float32Array(40), new Float32Array(59));
    expect(err).toMatchObject({ code: 'ERR_SHAPE', message: expect.stringMatching(/gradInput: shape needs 240 bytes/) });
  });
});
