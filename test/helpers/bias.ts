/**
 * Inputs for a float32 bias with float16/bfloat16 x (lora.forward, forwardMulti, doraForward,
 * quant.matmul): a bias the kernels must add to the float32 sum unrounded.
 *
 * x's column 0 becomes C = 1024 (exact in every dtype) and bias_j = u_j − C·c_j·w_j, with u random
 * and C·c_j·w_j what that column adds to y_j: the weight's column 0 w_j times what multiplies x·Wᵀ
 * before the bias (DoRA's magnitude / norm, else 1), or for quant.matmul b[j][0] times scale·gate_j
 * (its test routes C through the low-rank term). The large part cancels, so y stays O(√K)
 * (RMS ≈ 7–15 here) while |bias| ≈ C·|w_j| ≈ 1000. Napkin math: rounding the bias to the 16-bit
 * dtype first moves y by up to half an ulp at ~1000, 0.25 (float16) or 2 (bfloat16), against the
 * table's per-element atol·rms ≈ 2e-3·10 = 0.02 (float16) and 1.6e-2·10 = 0.16 (bfloat16): such a
 * bug fails every case (relative Frobenius error 6.6e-3–2e-1, bounds 1e-3 and 8e-3), and reading
 * the float32 bytes as 16-bit values gives garbage. The kernels' own float32 error on the cancelled
 * sum is ~√K·ulp(1000)/2 ≈ 1e-3, well inside.
 * Other paths must not see C: the callers zero column 0 of a where it is not the route
 * (withColumn0(a, k, 0)), and use no dropout mask.
 */
import { type Device, Tensor } from '../../lib/index.js';

export const BIAS_C = 1024;

/** `t` (any shape, rows of k values) with element 0 of every row set to `value`, on t's device. */
export function withColumn0(t: Tensor, k: number, value: number): Tensor {
  const values = t.toFloat32();
  for (let i = 0; i < values.length; i += k) values[i] = value;
  const result = Tensor.from(values, t.shape, { dtype: t.dtype });
  return t.device === 'cpu' ? result : result.to(t.device);
}

/** float32 bias [n] with bias_j = u_j − BIAS_C·columnScale_j·w0_j (u_j ~ N(0, 1), seeded). */
export function cancellingBias(w0: ArrayLike<number>, device: Device, seed: number, columnScale?: ArrayLike<number>): Tensor {
  const u = Tensor.randn([w0.length], { seed }).toFloat32();
  const values = Float32Array.from(u, (v, j) => v - BIAS_C * (columnScale ? columnScale[j]! : 1) * w0[j]!);
  const bias = Tensor.from(values, [w0.length]);
  return device === 'cpu' ? bias : bias.to(device);
}

/** Column 0 of a row-major [n, k] matrix (its stored values, read as float). */
export function column0(weight: Tensor | { data: ArrayLike<number> }, n: number, k: number): Float64Array {
  const values = weight instanceof Tensor ? weight.toFloat32() : weight.data;
  return Float64Array.from({ length: n }, (_, j) => values[j * k]!);
}
