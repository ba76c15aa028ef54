/**
 * float64 references of lora.doraForward / doraBackward (PEFT DoRA semantics): slow, obvious,
 * exported. Inputs are Tensors (read exactly as the kernels see them) or float64 RefTensors (so
 * that gradients can be checked by finite differences in float64).
 *
 *   norm = ‖W + s·B·A‖₂ per row,  z = x·Wᵀ + s·(x·Aᵀ)·Bᵀ,  y = (m / norm) ⊙ z + bias
 *
 * Backward holds norm constant (PEFT detaches it): with g' = g ⊙ (m / norm) and T = x·Aᵀ,
 *   gradMagnitude = Σ_rows g ⊙ z / norm,  gradB = s·g'ᵀ·T,  dT = s·g'·B,  gradA = dTᵀ·x,
 *   gradInput = g'·W + dT·A.
 */
import { Tensor } from '../tensor.js';
import type { RefTensor } from './tolerance.js';

/** A Tensor, or float64 values with a shape. */
export type RefInput = Tensor | RefTensor;

export interface ReferenceDoraWeightNormArgs {
  weight: RefInput;
  a: RefInput;
  b: RefInput;
  scale?: number;
}

export interface ReferenceDoraForwardArgs extends ReferenceDoraWeightNormArgs {
  x: RefInput;
  bias?: RefInput;
  magnitude: RefInput;
  /** Use this norm [N] instead of computing it (finite-difference checks freeze it). */
  weightNorm?: RefInput;
}

export interface ReferenceDoraBackwardArgs extends Omit<ReferenceDoraForwardArgs, 'bias'> {
  gradOutput: RefInput;
}

export interface ReferenceDoraGradients {
  gradInput: RefTensor;
  gradA: RefTensor;
  gradB: RefTensor;
  gradMagnitude: RefTensor;
}

function values(t: RefInput): ArrayLike<number> {
  return t instanceof Tensor ? t.toFloat32() : t.data;
}

/** C [m, n] = op(A)·op(B) with op(A) [m, kk] and op(B) [kk, n]; `t` marks a stored transpose. */
function gemm(a: ArrayLike<number>, ta: boolean, b: ArrayLike<number>, tb: boolean, m: number, kk: number, n: number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let p = 0; p < kk; p++) acc += a[ta ? p * m + i : i * kk + p]! * b[tb ? j * kk + p : p * n + j]!;
      c[i * n + j] = acc;
    }
  }
  return c;
}

interface Sizes { m: number; k: number; n: number; r: number }

function sizes(x: RefInput, weight: RefInput, a: RefInput): Sizes {
  const k = x.shape[x.shape.length - 1]!;
  const count = x.shape.reduce((p, d) => p * d, 1);
  return { m: k > 0 ? count / k : 0, k, n: weight.shape[0]!, r: a.shape[0]! };
}

/** norm_n = ‖W_n + scale·B_n·A‖₂, [N]. */
export function doraWeightNorm(args: ReferenceDoraWeightNormArgs): RefTensor {
  const scale = args.scale ?? 1;
  const [n, k] = args.weight.shape as [number, number];
  const r = args.a.shape[0]!;
  const w = values(args.weight);
  const ba = gemm(values(args.b), false, values(args.a), false, n, r, k);
  const norm = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let sum = 0;
    for (let p = 0; p < k; p++) sum += (w[j * k + p]! + scale * ba[j * k + p]!) ** 2;
    norm[j] = Math.sqrt(sum);
  }
  return { data: norm, shape: [n] };
}

/** z = x·Wᵀ + s·(x·Aᵀ)·Bᵀ [m, n] and T = x·Aᵀ [m, r]. */
function lowRankLinear(args: ReferenceDoraForwardArgs, s: Sizes): { z: Float64Array; t: Float64Array } {
  const scale = args.scale ?? 1;
  const x = values(args.x);
  const z = gemm(x, false, values(args.weight), true, s.m, s.k, s.n);
  const t = gemm(x, false, values(args.a), true, s.m, s.k, s.r);
  const tb = gemm(t, false, values(args.b), true, s.m, s.r, s.n);
  for (let i = 0; i < z.length; i++) z[i] = z[i]! + scale * tb[i]!;
  return { z, t };
}

function columnScale(args: ReferenceDoraForwardArgs): { norm: ArrayLike<number>; columnScale: Float64Array } {
  const norm = args.weightNorm ? values(args.weightNorm) : doraWeightNorm(args).data;
  const m = values(args.magnitude);
  return { norm, columnScale: Float64Array.from(norm, (v, j) => m[j]! / v) };
}

/** y = (magnitude / norm) ⊙ (x·Wᵀ + scale·(x·aᵀ)·bᵀ) + bias, [..., N]. */
export function doraForward(args: ReferenceDoraForwardArgs): RefTensor {
  const s = sizes(args.x, args.weight, args.a);
  const { z } = lowRankLinear(args, s);
  const { columnScale: cs } = columnScale(args);
  const bias = args.bias ? values(args.bias) : undefined;
  for (let i = 0; i < s.m; i++) {
    for (let j = 0; j < s.n; j++) z[i * s.n + j] = cs[j]! * z[i * s.n + j]! + (bias ? bias[j]! : 0);
  }
  return { data: z, shape: [...args.x.shape.slice(0, -1), s.n] };
}

/** Gradients of doraForward with the norm held constant. */
export function doraBackward(args: ReferenceDoraBackwardArgs): ReferenceDoraGradients {
  const scale = args.scale ?? 1;
  const s = sizes(args.x, args.weight, args.a);
  const { z, t } = lowRankLinear(args, s);
  const { norm, columnScale: cs } = columnScale(args);
  const g = values(args.gradOutput);
  const scaled = new Float64Array(s.m * s.n);
  const gradMagnitude = new Float64Array(s.n);
  for (let i = 0; i < s.m; i++) {
    for (let j = 0; j < s.n; j++) {
      scaled[i * s.n + j] = g[i * s.n + j]! * cs[j]!;
      gradMagnitude[j] = gradMagnitude[j]! + g[i * s.n + j]! * z[i * s.n + j]!;
    }
  }
  for (let j = 0; j < s.n; j++) gradMagnitude[j] = gradMagnitude[j]! / norm[j]!;
  const x = values(args.x);
  const a = values(args.a);
  const gradB = gemm(scaled, true, t, false, s.n, s.m, s.r).map((v) => scale * v);
  const dT = gemm(scaled, false, values(args.b), false, s.m, s.n, s.r).map((v) => scale * v);
  const gradA = gemm(dT, true, x, false, s.r, s.m, s.k);
  const gradInput = gemm(scaled, false, values(args.weight), false, s.m, s.n, s.k);
  const viaA = gemm(dT, false, a, false, s.m, s.r, s.k);
  for (let i = 0; i < gradInput.length; i++) gradInput[i] = gradInput[i]! + viaA[i]!;
  return {
    gradInput: { data: gradInput, shape: [...args.x.shape] },
    gradA: { data: gradA, shape: [s.r, s.k] },
    gradB: { data: gradB, shape: [s.n, s.r] },
    gradMagnitude: { data: gradMagnitude, shape: [s.n] },
  };
}
