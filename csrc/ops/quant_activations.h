// int8 per-token activation quantization (BitNet b1.58's activation quantizer, ../shared/FORMATS.md
// ternary section), the rule once for host and device code, and the params of its two ops.
//
// Per row (token) of x [m, k]: s = 127 / max(max |x|, 1e-5) (a float32 division), code =
// clamp(round(x·s), −128, 127) with round half to even (torch.round; x·s one float32 product, never
// fused with anything: there is no add after it), stored as int8; s float32 per row. Dequantize:
// x̂ = code / s (a float32 division), then one rounding to the dtype.
// Non-finite rows (what IEEE arithmetic gives, made identical on every backend):
//   * a NaN anywhere in the row: s = NaN (the canonical quiet NaN 0x7fc00000, whatever the input's
//     payload, so scales compare byte for byte) and every code 0, so x̂ is NaN across the row, as a
//     NaN in x makes its row of x·Wᵀ NaN;
//   * ±inf and no NaN: s = 127 / inf = 0, x·0 is 0 (finite x) or NaN (±inf), both code 0; x̂ = 0/0 =
//     NaN across the row.
// A finite row never reaches the clamp: |x·s| ≤ fl(max·fl(127 / max)) ≤ 127·(1 + 2^-23), which
// rounds to 127; −128 is never written.
//
// Napkin math: x is m·k elements, read twice (max, then codes) and written as k bytes + 4 per row.
// At decode (m = 1, k = 4096) 16 KiB in, 4 KiB out: microseconds, against the ~9 MiB of an NF4
// 4096 × 4096 weight the matmul then streams.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "../core/device.h"
#include "../core/dtype.h"
#include "../formats/nf4.h"  // LK_HOST_DEVICE

namespace lk {

namespace int8act {

constexpr float kMaxCode = 127.0f;
constexpr float kMinCode = -128.0f;
constexpr float kEps = 1e-5f;

// The scale of a row that held a NaN: one bit pattern on every backend.
LK_HOST_DEVICE inline float nan_scale() {
  const uint32_t bits = 0x7fc00000u;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

// s from the row's max |x| over its non-NaN elements and whether it held a NaN.
LK_HOST_DEVICE inline float scale_of(float absmax, bool has_nan) {
  return has_nan ? nan_scale() : kMaxCode / (absmax > kEps ? absmax : kEps);
}

// The code of y = x·s: round half to even (rintf in the default rounding mode), clamp; NaN → 0.
// Selects, not branches: GCC vectorizes the CPU kernel's loop over this (vrndscaleps, vpmovdb).
LK_HOST_DEVICE inline int8_t code_of(float y) {
  float r = rintf(y);
  r = r == r ? r : 0.0f;
  r = r < kMinCode ? kMinCode : r > kMaxCode ? kMaxCode : r;
  return static_cast<int8_t>(static_cast<int32_t>(r));
}

}  // namespace int8act

// x [m, k] (float32 / float16 / bfloat16, contiguous) → values int8 [m, k] and scales float32 [m].
struct Int8QuantizeParams {
  DType dtype = DType::Float32;
  int64_t m = 0, k = 0;
  const void* x = nullptr;
  int8_t* values = nullptr;
  float* scales = nullptr;
};

// out [m, k] (dtype, contiguous) = values / scales[row], float32, then rounded to dtype.
struct Int8DequantizeParams {
  DType dtype = DType::Float32;
  int64_t m = 0, k = 0;
  const int8_t* values = nullptr;
  const float* scales = nullptr;
  void* out = nullptr;
};

// Check what memory safety needs and run on `device`. Throw lk::Error.
void int8_quantize(const Int8QuantizeParams& params, Device device);
void int8_dequantize(const Int8DequantizeParams& params, Device device);

}  // namespace lk
