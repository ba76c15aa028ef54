// Pieces the Flash-LoRA-Attention forward (cuda/flash_lora.cu) and backward
// (cuda/flash_lora_backward.cu) share: the runtime → template switch over head dims, the key tile
// of the mma.sync kernels, and their two tensor-core helpers.
#pragma once
#include <cstdint>
#include <string>
#include <type_traits>

#include "common.cuh"

namespace lk::cuda_ops::flash_lora {

// The one place where a runtime head dim becomes a template argument (ops/flash_lora.h lists the
// same dims for the checks before any kernel).
template <class Fn>
void with_head_dim(int64_t d, const char* op, Fn&& fn) {
  switch (d) {
    case 32: return fn(std::integral_constant<int, 32>{});
    case 64: return fn(std::integral_constant<int, 64>{});
    case 80: return fn(std::integral_constant<int, 80>{});
    case 96: return fn(std::integral_constant<int, 96>{});
    case 128: return fn(std::integral_constant<int, 128>{});
    case 256: return fn(std::integral_constant<int, 256>{});
    default: break;
  }
  throw Error(ErrorCode::Unsupported, std::string(op) + " (cuda): no kernel for head dim " + std::to_string(d));
}

// Keys per tile of the mma.sync kernels: 64, or 32 at D = 256 (the O / dK / dV accumulators of a
// 256-wide head would not fit the registers next to a 64-key S tile).
template <int D>
constexpr int mma_bn() { return D == 256 ? 32 : 64; }

#if defined(SIMT_DEVICE_PATH)
// d += a·b for one m16n8k16 tile in float16 or bfloat16 (E), float32 accumulators.
template <class E>
__device__ __forceinline__ void mma16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const uint32_t b[2] = {b0, b1};
  if constexpr (std::is_same_v<E, BF16>) ptx::mma_m16n8k16_bf16(d, a, b, d);
  else ptx::mma_m16n8k16_f16(d, a, b, d);
}

// Two floats as hi (rounded) and lo (the residual, rounded) 16-bit pairs: hi + lo carries ~2× the
// dtype's mantissa, so a product over both keeps the low-rank terms near float32 accuracy.
template <class E>
__device__ __forceinline__ void split_pack(float x0, float x1, uint32_t& hi, uint32_t& lo) {
  const uint16_t h0 = E::from_float(x0), h1 = E::from_float(x1);
  hi = static_cast<uint32_t>(h0) | static_cast<uint32_t>(h1) << 16;
  lo = E::pack2(x0 - E::to_float(h0), x1 - E::to_float(h1));
}
#endif

}  // namespace lk::cuda_ops::flash_lora
