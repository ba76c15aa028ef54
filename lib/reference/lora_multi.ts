/**
 * float64 reference of lora.forwardMulti: slow, obvious, exported. Inputs are read exactly as the
 * kernels see them (half types widened without rounding), then everything is float64.
 */
import type { LoraForwardMultiArgs } from '../ops/lora_multi.js';
import { Tensor } from '../tensor.js';
import type { RefTensor } from './tolerance.js';

/** The arguments of lora.forwardMulti that define the result (no `out`). */
export type ReferenceLoraForwardMultiArgs = Omit<LoraForwardMultiArgs, 'out'>;

function int32Values(v: Tensor | ArrayLike<number>, name: string): Int32Array {
  if (!(v instanceof Tensor)) return Int32Array.from(v);
  if (v.dtype !== 'int32') throw new TypeError(`reference.lora.forwardMulti: ${name} must be int32, got ${v.dtype}`);
  return v.toArray() as Int32Array;
}

/** y_t = x_t·weightᵀ + bias + scales[id]·(x_t·a[id][:r]ᵀ)·b[id][:, :r]ᵀ in float64. */
export function forwardMulti(args: ReferenceLoraForwardMultiArgs): RefTensor {
  const { x, weight, bias, a, b } = args;
  const k = x.shape[x.shape.length - 1]!;
  const n = weight.shape[0]!;
  const m = k > 0 ? x.numel / k : 0;
  const [numAdapters, rMax] = [a.shape[0]!, a.shape[1]!];
  const xv = x.toFloat32();
  const wv = weight.toFloat32();
  const bv = bias?.toFloat32();
  const av = a.toFloat32();
  const bbv = b.toFloat32();
  const ranks = args.ranks ? int32Values(args.ranks, 'ranks') : new Int32Array(numAdapters).fill(rMax);
  const scales = args.scales instanceof Tensor ? args.scales.toFloat32() : Float32Array.from(args.scales);
  const ids = int32Values(args.adapterIds, 'adapterIds');
  const y = new Float64Array(m * n);
  const t = new Float64Array(rMax);
  for (let i = 0; i < m; i++) {
    const id = ids[i]!;
    if (id < -1 || id >= numAdapters) throw new RangeError(`reference.lora.forwardMulti: adapterIds[${i}] = ${id} is out of range`);
    const r = id < 0 ? 0 : ranks[id]!;
    for (let j = 0; j < r; j++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc += xv[i * k + p]! * av[(id * rMax + j) * k + p]!;
      t[j] = acc;
    }
    for (let c = 0; c < n; c++) {
      let acc = 0;
      for (let p = 0; p < k; p++) acc += xv[i * k + p]! * wv[c * k + p]!;
      let low = 0;
      for (let j = 0; j < r; j++) low += t[j]! * bbv[(id * n + c) * rMax + j]!;
      y[i * n + c] = acc + (bv ? bv[c]! : 0) + (r > 0 ? scales[id]! * low : 0);
    }
  }
  return { data: y, shape: [...x.shape.slice(0, -1), n] };
}
