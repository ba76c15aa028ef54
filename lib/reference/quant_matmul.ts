/**
 * float64 references of quant.matmul and quant.matmulBackward: dequantize the weight (the float32
 * values reference.quant.dequantize defines), then plain float64 products. Operands are Tensors
 * (read exactly as the kernels see them) or float64 RefTensors (so that gradients can be checked
 * by finite differences in float64).
 *
 *   y = x·Wᵀ + bias + gate ⊙ (scale·T·Bᵀ),  T = x·Aᵀ,  gate a number or one per output column
 *   gradB = scale·(gate ⊙ g)ᵀ·T,  dT = scale·(gate ⊙ g)·B,  gradA = dTᵀ·x,  gradInput = g·W + dT·A,
 *   gradGate_j = Σ_i g[i, j]·scale·(T·Bᵀ)[i, j]   (summed over j too for a scalar gate)
 *
 * activations: 'int8' replaces x by x̂ = int8 dequantize(quantize(x)) (reference.quant.int8)
 * rounded to x's dtype (float32 for a RefTensor x, which is first rounded to float32); the
 * backward has no such option (straight-through: the gradients of the unquantized layer).
 */
import type { QuantizedTensor } from '../ops/quant.js';
import { Tensor } from '../tensor.js';
import { dequantize } from './quant.js';
import { int8Dequantize, int8Quantize } from './quant_activations.js';
import type { RefTensor } from './tolerance.js';

/** A Tensor, or float64 values with a shape. */
type RefInput = Tensor | RefTensor;

function values(t: RefInput): ArrayLike<number> {
  return t instanceof Tensor ? t.toFloat32() : t.data;
}

export interface ReferenceQuantMatmulArgs {
  x: RefInput;
  weight: QuantizedTensor;
  bias?: RefInput;
  a?: RefInput;
  b?: RefInput;
  scale?: number;
  gate?: number | RefInput;
  activations?: 'float' | 'int8';
}

export interface ReferenceQuantMatmulBackwardArgs extends Omit<ReferenceQuantMatmulArgs, 'bias' | 'a' | 'b' | 'activations'> {
  gradOutput: RefInput;
  a: RefInput;
  b: RefInput;
  needInputGrad?: boolean;
}

export interface ReferenceQuantMatmulGradients {
  gradInput?: RefTensor;
  gradA: RefTensor;
  gradB: RefTensor;
  gradGate?: RefTensor;
}

interface Operands {
  m: number;
  k: number;
  n: number;
  r: number;
  x: ArrayLike<number>;
  w: Float64Array;
  a?: ArrayLike<number>;
  b?: ArrayLike<number>;
  scale: number;
  gate: (j: number) => number;
}

function operands(args: ReferenceQuantMatmulArgs): Operands {
  const [n, k] = args.weight.shape;
  const count = args.x.shape.reduce((p, d) => p * d, 1);
  const gate = args.gate;
  const perOutput = gate === undefined || typeof gate === 'number' ? undefined : values(gate);
  const scalar = typeof gate === 'number' ? gate : 1;
  return {
    m: count / k, k, n, r: args.a ? args.a.shape[0]! : 0, x: values(args.x), w: dequantize(args.weight).data,
    a: args.a && values(args.a), b: args.b && values(args.b), scale: args.scale ?? 1,
    gate: perOutput ? (j) => perOutput[j]! : () => scalar,
  };
}

/** T = x·Aᵀ [m, r]. */
function lowRank(o: Operands): Float64Array {
  const t = new Float64Array(o.m * o.r);
  for (let i = 0; i < o.m; i++) {
    for (let j = 0; j < o.r; j++) {
      let acc = 0;
      for (let p = 0; p < o.k; p++) acc += o.x[i * o.k + p]! * o.a![j * o.k + p]!;
      t[i * o.r + j] = acc;
    }
  }
  return t;
}

/** (T·Bᵀ)[i, c]. */
function lowRankOutput(o: Operands, t: Float64Array, i: number, c: number): number {
  let acc = 0;
  for (let j = 0; j < o.r; j++) acc += t[i * o.r + j]! * o.b![c * o.r + j]!;
  return acc;
}

/** x̂ = dequantize(quantize(x)) per token, rounded to x's dtype (see the top). */
function int8RoundTrip(x: RefInput): Float32Array {
  const t = x instanceof Tensor ? x : Tensor.from(x.data, x.shape);
  const xHat = int8Dequantize(int8Quantize(t));
  return Tensor.from(xHat.data, xHat.shape, { dtype: t.dtype }).toFloat32();
}

/** y = x·deq(W)ᵀ + bias + gate ⊙ (scale·(x·Aᵀ)·Bᵀ) in float64 (x̂ for x with activations: 'int8'). */
export function matmul(args: ReferenceQuantMatmulArgs): RefTensor {
  const o = operands(args);
  if (args.activations === 'int8') o.x = int8RoundTrip(args.x);
  const bias = args.bias && values(args.bias);
  const t = lowRank(o);
  const y = new Float64Array(o.m * o.n);
  for (let i = 0; i < o.m; i++) {
    for (let c = 0; c < o.n; c++) {
      let acc = 0;
      for (let p = 0; p < o.k; p++) acc += o.x[i * o.k + p]! * o.w[c * o.k + p]!;
      const low = o.r ? o.gate(c) * o.scale * lowRankOutput(o, t, i, c) : 0;
      y[i * o.n + c] = acc + low + (bias ? bias[c]! : 0);
    }
  }
  return { data: y, shape: [...args.x.shape.slice(0, -1), o.n] };
}

/** The gradients of L for dL/dy = gradOutput (see the top), in float64; gradGate when a gate is given. */
export function matmulBackward(args: ReferenceQuantMatmulBackwardArgs): ReferenceQuantMatmulGradients {
  const o = operands(args);
  const g = values(args.gradOutput);
  const { m, k, n, r } = o;
  const t = lowRank(o);
  // gg = gate ⊙ g, dT = scale·gg·B.
  const gg = Float64Array.from({ length: m * n }, (_, i) => o.gate(i % n) * g[i]!);
  const dt = new Float64Array(m * r);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < r; j++) {
      let acc = 0;
      for (let c = 0; c < n; c++) acc += gg[i * n + c]! * o.b![c * r + j]!;
      dt[i * r + j] = o.scale * acc;
    }
  }
  const gradB = new Float64Array(n * r);
  for (let c = 0; c < n; c++) {
    for (let j = 0; j < r; j++) {
      let acc = 0;
      for (let i = 0; i < m; i++) acc += gg[i * n + c]! * t[i * r + j]!;
      gradB[c * r + j] = o.scale * acc;
    }
  }
  const gradA = new Float64Array(r * k);
  for (let j = 0; j < r; j++) {
    for (let p = 0; p < k; p++) {
      let acc = 0;
      for (let i = 0; i < m; i++) acc += dt[i * r + j]! * o.x[i * k + p]!;
      gradA[j * k + p] = acc;
    }
  }
  const result: ReferenceQuantMatmulGradients = { gradA: { data: gradA, shape: [r, k] }, gradB: { data: gradB, shape: [n, r] } };
  if (args.needInputGrad ?? true) {
    const gradInput = new Float64Array(m * k);
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < k; p++) {
        let acc = 0;
        for (let c = 0; c < n; c++) acc += g[i * n + c]! * o.w[c * k + p]!;
        for (let j = 0; j < r; j++) acc += dt[i * r + j]! * o.a![j * k + p]!;
        gradInput[i * k + p] = acc;
      }
    }
    result.gradInput = { data: gradInput, shape: [...args.x.shape] };
  }
  if (args.gate !== undefined) {
    const perColumn = new Float64Array(n);
    for (let i = 0; i < m; i++) {
      for (let c = 0; c < n; c++) perColumn[c]! += g[i * n + c]! * o.scale * lowRankOutput(o, t, i, c);
    }
    result.gradGate = typeof args.gate === 'number'
      ? { data: Float64Array.of(perColumn.reduce((s, v) => s + v, 0)), shape: [1] }
      : { data: perColumn, shape: [n] };
  }
  return result;
}
