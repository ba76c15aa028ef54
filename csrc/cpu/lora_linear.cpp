// Fused LoRA forward on the CPU (first, straightforward version: correct, threaded, vectorised by
// the compiler). Compiled once per SIMD level into lk::cpu::LK_SIMD_NS.
#include <algorithm>
#include <vector>

#include "core/half.h"
#include "core/parallel.h"
#include "cpu/dispatch/kernels.h"

namespace lk::cpu::LK_SIMD_NS {
namespace {

inline float load(const void* base, DType t, int64_t i) {
  switch (t) {
    case DType::Float16: return fp16_to_float(static_cast<const uint16_t*>(base)[i]);
    case DType::BFloat16: return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
    default: return static_cast<const float*>(base)[i];
  }
}
inline void store(void* base, DType t, int64_t i, float v) {
  switch (t) {
    case DType::Float16: static_cast<uint16_t*>(base)[i] = float_to_fp16(v); break;
    case DType::BFloat16: static_cast<uint16_t*>(base)[i] = float_to_bf16(v); break;
    default: static_cast<float*>(base)[i] = v;
  }
}

}  // namespace

void lora_forward(const LoraForwardParams& p) {
  parallel_for(p.m, [&](int64_t row, int) {
    std::vector<float> xr(p.k), xm(p.k), t(p.r), wr(p.k);
    for (int64_t kk = 0; kk < p.k; ++kk) {
      xr[kk] = load(p.x, p.dtype, row * p.x_stride + kk);
      xm[kk] = p.dropout_mask ? xr[kk] * load(p.dropout_mask, p.dtype, row * p.mask_stride + kk) : xr[kk];
    }
    for (int64_t j = 0; j < p.r; ++j) {
      float acc = 0;
      for (int64_t kk = 0; kk < p.k; ++kk) acc += xm[kk] * load(p.a, p.dtype, j * p.a_stride + kk);
      t[j] = acc * p.scale;
    }
    for (int64_t col = 0; col < p.n; ++col) {
      float acc = p.bias ? load(p.bias, p.dtype, col) : 0.0f;
      for (int64_t kk = 0; kk < p.k; ++kk) wr[kk] = load(p.weight, p.dtype, col * p.weight_stride + kk);
      float dot = 0;
      for (int64_t kk = 0; kk < p.k; ++kk) dot += xr[kk] * wr[kk];
      acc += dot;
      for (int64_t j = 0; j < p.r; ++j) acc += t[j] * load(p.b, p.dtype, col * p.b_stride + j);
      store(p.y, p.dtype, row * p.y_stride + col, acc);
    }
  });
}

}  // namespace lk::cpu::LK_SIMD_NS
