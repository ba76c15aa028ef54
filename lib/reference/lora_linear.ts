/**
 * float64 reference of lora.forward: slow, obvious, exported. Inputs are read exactly as the
 * kernels see them (half types widened without rounding), then everything is float64.
 */
import type { LoraForwardArgs } from '../ops/lora_linear.js';
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
