// The one place that picks a backend for attention.flashLora / flashLoraBackward, after the checks
// every kernel relies on: sizes, the compiled head dims, ranks, non-null operands and a finite scale.
#include "flash_lora.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/status.h"
#include "cpu/dispatch/kernels.h"
#if defined(LK_WITH_CUDA)
#include "cuda/flash_lora.cuh"
#endif

namespace lk {
namespace {

void check_path(const char* op, const char* name, int64_t rank, const AttnTensor& cache, const void* factor, bool empty_batch) {
  if (rank == 0) return;
  if (rank < 0 || rank > kFlashLoraMaxRank) {
    fail(op, ErrorCode::Shape, std::string(name) + " rank must be in [1, " + std::to_string(kFlashLoraMaxRank) + "], got " + std::to_string(rank));
  }
  if ((!cache.data && !empty_batch) || !factor) fail(op, ErrorCode::Argument, std::string(name) + " cache and factor must not be null");
}

void check_params(const char* op, const FlashLoraParams& p) {
  if (p.batch < 0 || p.seq_q < 0 || p.seq_k < 1 || p.heads_q < 1 || p.heads_k < 1 || p.heads_q % p.heads_k != 0) {
    fail(op, ErrorCode::Shape, "sizes must be B ≥ 0, Sq ≥ 0, Sk ≥ 1, Hq ≥ 1 and Hk ≥ 1 dividing Hq, got B " + std::to_string(p.batch) +
                                   ", Sq " + std::to_string(p.seq_q) + ", Sk " + std::to_string(p.seq_k) + ", Hq " +
                                   std::to_string(p.heads_q) + ", Hk " + std::to_string(p.heads_k));
  }
  if (std::find(std::begin(kFlashLoraHeadDims), std::end(kFlashLoraHeadDims), p.head_dim) == std::end(kFlashLoraHeadDims)) {
    fail(op, ErrorCode::Shape, "head dim must be one of 32, 64, 80, 96, 128, 256, got " + std::to_string(p.head_dim));
  }
  if (p.dtype != DType::Float32 && p.dtype != DType::Float16 && p.dtype != DType::BFloat16) {
    fail(op, ErrorCode::DType, std::string("dtype must be float32, float16 or bfloat16, got ") + dtype_name(p.dtype));
  }
  if (p.adapters < 1) fail(op, ErrorCode::Shape, "adapters must be ≥ 1, got " + std::to_string(p.adapters));
  check_path(op, "value path", p.v_rank, p.v_low_rank, p.v_lora_b, p.batch == 0);
  check_path(op, "key path", p.k_rank, p.k_low_rank, p.k_lora_b, p.batch == 0);
  if (!std::isfinite(p.softmax_scale)) fail(op, ErrorCode::Argument, "softmax_scale must be finite");
  if (p.batch > 0 && (!p.q.data || !p.k_base.data || !p.v_base.data || (p.seq_q > 0 && (!p.out.data || !p.lse)))) {
    fail(op, ErrorCode::Argument, "q, kBase, vBase, out and lse must not be null");
  }
}

}  // namespace

void flash_lora_forward(const FlashLoraParams& p, Device device) {
  constexpr const char* op = "attention.flashLora";
  check_params(op, p);
  if (p.batch == 0 || p.seq_q == 0) return;
  if (device.is_cpu()) return cpu::flash_lora_forward(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::flash_lora_forward(p, device.index);
#else
  throw Error(ErrorCode::Device, std::string(op) + ": CUDA support was not compiled into this binary");
#endif
}

void flash_lora_backward(const FlashLoraBackwardParams& p, Device device) {
  constexpr const char* op = "attention.flashLoraBackward";
  check_params(op, p.fwd);
  if (p.fwd.seq_q < 1) fail(op, ErrorCode::Shape, "Sq must be ≥ 1");
  if (p.fwd.batch > 0 && (!p.grad_out.data || !p.grad_q.data || !p.grad_k_base.data || !p.grad_v_base.data)) {
    fail(op, ErrorCode::Argument, "gradOut, gradQ, gradKBase and gradVBase must not be null");
  }
  if (p.fwd.v_rank > 0 && ((p.fwd.batch > 0 && !p.grad_v_low_rank.data) || !p.grad_v_lora_b)) fail(op, ErrorCode::Argument, "gradVLowRank and gradVLoraB must not be null");
  if (p.fwd.k_rank > 0 && ((p.fwd.batch > 0 && !p.grad_k_low_rank.data) || !p.grad_k_lora_b)) fail(op, ErrorCode::Argument, "gradKLowRank and gradKLoraB must not be null");
  // B = 0 still runs: the B factors' gradients ([L, Hk, r, D]) are zeros to write.
  if (device.is_cpu()) return cpu::flash_lora_backward(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::flash_lora_backward(p, device.index);
#else
  throw Error(ErrorCode::Device, std::string(op) + ": CUDA support was not compiled into this binary");
#endif
}

}  // namespace lk
