/**
 * Reference of int8 per-token activation quantization (lib/ops/quant_activations.ts): element by
 * element, the float32 operations written out (Math.fround after each). The quantizer is the
 * byte-level oracle of the kernels' codes and scales; dequantize returns the float32 values that
 * define it (code / s), as float64 numbers: a kernel's output in another dtype is those values
 * rounded once more.
 */
import type { Int8Activations } from '../ops/quant_activations.js';
import { Tensor } from '../tensor.js';
import type { RefTensor } from './tolerance.js';

const MAX_CODE = 127;
const MIN_CODE = -128;
const EPS = Math.fround(1e-5);

/** Round half to even (torch.round) of a float32 value; NaN stays NaN. */
function roundHalfEven(v: number): number {
  const floor = Math.floor(v), frac = v - floor;
  if (frac < 0.5) return floor;
  if (frac > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** The scale of one row: NaN if the row holds a NaN, else fp32(127 / max(max |x|, 1e-5)). */
function rowScale(values: ArrayLike<number>, from: number, to: number): number {
  let m = 0;
  for (let i = from; i < to; i++) {
    const a = Math.abs(values[i]!);
    if (Number.isNaN(a)) return NaN;
    if (a > m) m = a;
  }
  return Math.fround(MAX_CODE / Math.max(m, EPS));
}

/** The int8 code of x·s (see lib/ops/quant_activations.ts): NaN → 0. */
function codeOf(x: number, s: number): number {
  const r = roundHalfEven(Math.fround(x * s));
  if (Number.isNaN(r)) return 0;
  return Math.min(MAX_CODE, Math.max(MIN_CODE, r));
}

/** quant.int8.quantize: host tensors values int8 [..., K] and scales float32 [M]. */
export function int8Quantize(x: Tensor): Int8Activations {
  const k = x.shape[x.shape.length - 1]!;
  const values = x.toFloat32();
  const m = values.length / k;
  const codes = new Int8Array(values.length);
  const scales = new Float32Array(m);
  for (let row = 0; row < m; row++) {
    const s = rowScale(values, row * k, (row + 1) * k);
    scales[row] = s;
    for (let i = row * k; i < (row + 1) * k; i++) codes[i] = codeOf(values[i]!, s);
  }
  return { values: Tensor.from(codes, x.shape, { dtype: 'int8' }), scales: Tensor.from(scales, [m]) };
}

/** quant.int8.dequantize: the float32 values fp32(code / s), as float64. */
export function int8Dequantize(q: Int8Activations): RefTensor {
  const codes = q.values.toArray() as Int8Array;
  const scales = q.scales.toFloat32();
  const k = q.values.shape[q.values.shape.length - 1]!;
  const out = Float64Array.from(codes, (c, i) => Math.fround(c / scales[Math.floor(i / k)]!));
  return { data: out, shape: [...q.values.shape] };
}
