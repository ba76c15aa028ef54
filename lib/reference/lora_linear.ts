/**
 * float64 references of lora.forward and lora.backward: slow, obvious, exported. Inputs are read exactly as the
 * kernels see them (half types widened without rounding), then everything is float64.
 */
import type { LoraBackwardArgs, LoraForwardArgs } from '../ops/lora_linear.js';
import type { RefTensor } from './tolerance.js';

/** The arguments of lora.forward that define the result (no `out`, no precision opt-ins). */
export type ReferenceLoraForwardArgs = Omit<LoraForwardArgs, 'out' | 'allowTf32'>;

/** y = x·weightᵀ + bias + scale·((x ⊙ dropoutMask)·aᵀ)·bᵀ in float64. */
export function forward(args: ReferenceLoraForwardArgs): RefTensor {
  const { x, weight, bias, a, b, dropoutMask } = args;
  const scale = args.scale ?? 1;
  const k = x.shape[x.shape.length - 1]!;
  const n = weight.shape[0]!;
  const m = k > 0 ? x.numel / k : 0;
  const r = a ? a.shape[0]! : 0;
  const xv = x.toFloat32();
  const wv = weight.toFloat32();
  const bv = bias?.toFloat32();
  const av = a?.toFloat32();
  const bbv = b?.toFloat32();
  const mv = dropoutMask?.toFloat32();
  const y = new Float64Array(m * n);
  const t = new Float64Array(r);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < r; j++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc += xv[i * k + p]! * (mv ? mv[i * k + p]! : 1) * av![j * k + p]!;
      t[j] = acc;
    }
    for (let c = 0; c < n; c++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc += xv[i * k + p]! * wv[c * k + p]!;
      let low = 0;
      for (let j = 0; j < r; j++) low += t[j]! * bbv![c * r + j]!;
      y[i * n + c] = acc + (bv ? bv[c]! : 0) + scale * low;
    }
  }
  return { data: y, shape: [...x.shape.slice(0, -1), n] };
}

/** The arguments of lora.backward that define the result. */
export type ReferenceLoraBackwardArgs = LoraBackwardArgs;

export interface ReferenceLoraGradients {
  gradInput?: RefTensor;
  gradA: RefTensor;
  gradB: RefTensor;
}

/**
 * Gradients of L with respect to x, a and b for y = forward(…) and dL/dy = gradOutput, in float64,
 * with xm = x ⊙ dropoutMask, T = xm·aᵀ and dT = scale·gradOutput·b:
 *   gradB = scale·gradOutputᵀ·T,  gradA = dTᵀ·xm,  gradInput = gradOutput·weight + dropoutMask ⊙ (dT·a).
 */
export function backward(args: ReferenceLoraBackwardArgs): ReferenceLoraGradients {
  const { gradOutput, x, weight, a, b, dropoutMask } = args;
  const scale = args.scale ?? 1;
  const k = x.shape[x.shape.length - 1]!;
  const n = weight.shape[0]!;
  const r = a.shape[0]!;
  const m = k > 0 ? x.numel / k : 0;
  const g = gradOutput.toFloat32();
  const wv = weight.toFloat32();
  const av = a.toFloat32();
  const bv = b.toFloat32();
  const mv = dropoutMask?.toFloat32();
  const xv = x.toFloat32();
  const xm = Float64Array.from(xv, (v, i) => v * (mv ? mv[i]! : 1));
  const t = new Float64Array(m * r);
  const dt = new Float64Array(m * r);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < r; j++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc += xm[i * k + p]! * av[j * k + p]!;
      t[i * r + j] = acc;
      let d = 0;
      for (let c = 0; c < n; c++) d += g[i * n + c]! * bv[c * r + j]!;
      dt[i * r + j] = scale * d;
    }
  }
  const gradB = new Float64Array(n * r);
  for (let c = 0; c < n; c++) {
    for (let j = 0; j < r; j++) {
      let acc = 0;
      for (let i = 0; i < m; i++) acc += g[i * n + c]! * t[i * r + j]!;
      gradB[c * r + j] = scale * acc;
    }
  }
  const gradA = new Float64Array(r * k);
  for (let j = 0; j < r; j++) {
    for (let p = 0; p < k; p++) {
      let acc = 0;
      for (let i = 0; i < m; i++) acc += dt[i * r + j]! * xm[i * k + p]!;
      gradA[j * k + p] = acc;
    }
  }
  const result: ReferenceLoraGradients = { gradA: { data: gradA, shape: [r, k] }, gradB: { data: gradB, shape: [n, r] } };
  if (args.needInputGrad ?? true) {
    const gradInput = new Float64Array(m * k);
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < k; p++) {
        let base = 0;
        for (let c = 0; c < n; c++) base += g[i * n + c]! * wv[c * k + p]!;
        let low = 0;
        for (let j = 0; j < r; j++) low += dt[i * r + j]! * av[j * k + p]!;
        gradInput[i * k + p] = base + (mv ? mv[i * k + p]! : 1) * low;
      }
    }
    result.gradInput = { data: gradInput, shape: [...x.shape] };
  }
  return result;
}
