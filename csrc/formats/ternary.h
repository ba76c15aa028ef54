// 1.58-bit ternary weights (BitNet b1.58): our packing, once, for host and device code.
// Facts from ../shared/FORMATS.md (BitNet's public sources); the layout is ours.
//
// W ≈ scale · Wq with Wq ∈ {−1, 0, +1}, scale = max(mean |W|, eps) (one float32 per tensor),
// Wq = clamp(round(W · (1 / scale)), −1, 1) with round half to even (encode() below). Packed row by row: row n of [N, K] takes row_bytes(K) =
// ⌈K / 4⌉ bytes; element k is the 2-bit code at bits 2·(k % 4) of byte k / 4 (lowest bits first),
// code 0 = −1, 1 = 0, 2 = +1 (3 is never written; it decodes as 0). Padding codes past K are 1 (0).
#pragma once
#include <cstdint>

#include "nf4.h"  // LK_HOST_DEVICE

namespace lk::ternary {

constexpr float kDefaultEps = 1e-5f;

LK_HOST_DEVICE inline int64_t row_bytes(int64_t k) { return (k + 3) / 4; }

// −1, 0 or +1 for a 2-bit code.
LK_HOST_DEVICE inline int code_value(int code) { return code == 0 ? -1 : code == 2 ? 1 : 0; }

LK_HOST_DEVICE inline int code_at(const uint8_t* row, int64_t k) { return (row[k >> 2] >> (2 * (k & 3))) & 3; }

// ---- quantizing: the rules both backends follow (same bytes on the CPU and CUDA)
//   * mean |W| summed in a fixed order, in double: S_n = Σ_k |w[n, k]| (ascending k, from 0.0),
//     mean = float(Σ_n S_n (ascending n, from 0.0) / (n·k)) (one rounding); scale = max(mean, eps)
//     (scale_of()).
//   * the code of w is encode(w, 1.0f / scale): BitNet b1.58's rule, as its reference code does it
//     (s = 1 / mean|W|.clamp(min=eps); (W·s).round().clamp(−1, 1)): the product with the
//     reciprocal, and torch.round, which rounds half to EVEN: w·(1/scale) = ±0.5 gives 0, not ±1.
//     So +1 above 0.5, −1 below −0.5, else 0 (NaN → 0).
LK_HOST_DEVICE inline float scale_of(double abs_sum, int64_t count, float eps) {
  const float mean = static_cast<float>(abs_sum / static_cast<double>(count));
  return mean > eps ? mean : eps;  // a NaN mean (NaN weights) gives eps
}
LK_HOST_DEVICE inline int encode(float w, float inverse_scale) {
  const float v = w * inverse_scale;
  return v > 0.5f ? 2 : v < -0.5f ? 0 : 1;
}

}  // namespace lk::ternary
