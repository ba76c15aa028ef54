// The one place that picks a backend for the LoRA linear ops.
#include "lora_linear.h"

#include <string>

#include "core/status.h"
#include "cpu/dispatch/kernels.h"
#if defined(LK_WITH_CUDA)
#include "cuda/lora_backward.cuh"
#include "cuda/lora_linear.cuh"
#endif

namespace lk {
namespace {

void check_params(const LoraForwardParams& p) {
  auto fail = [](const std::string& what) { throw Error(ErrorCode::Argument, "lora.forward: " + what); };
  if (!is_float_dtype(p.dtype)) throw Error(ErrorCode::DType, std::string("lora.forward: dtype must be float32, float16 or bfloat16, got ") + dtype_name(p.dtype));
  if (p.m < 0 || p.k < 1 || p.n < 1 || p.r < 0) fail("sizes must be m ≥ 0, k ≥ 1, n ≥ 1, r ≥ 0");
  if (p.m > 0 && (!p.x || !p.y)) fail("x and y must not be null");
  if (!p.weight) fail("weight must not be null");
  if (p.r > 0 && (!p.a || !p.b)) fail("a and b must not be null when r > 0");
  if (p.x_stride < p.k || p.weight_stride < p.k || p.y_stride < p.n) fail("row strides must cover a row");
  if (p.r > 0 && (p.a_stride < p.k || p.b_stride < p.r)) fail("a/b row strides must cover a row");
  if (p.dropout_mask && p.mask_stride < p.k) fail("dropoutMask row stride must cover a row");
}

void check_params(const LoraBackwardParams& p) {
  auto fail = [](const std::string& what) { throw Error(ErrorCode::Argument, "lora.backward: " + what); };
  if (!is_float_dtype(p.dtype)) throw Error(ErrorCode::DType, std::string("lora.backward: dtype must be float32, float16 or bfloat16, got ") + dtype_name(p.dtype));
  if (p.m < 0 || p.k < 1 || p.n < 1 || p.r < 1) fail("sizes must be m ≥ 0, k ≥ 1, n ≥ 1, r ≥ 1");
  if (!p.weight || !p.a || !p.b || !p.grad_a || !p.grad_b) fail("weight, a, b, gradA and gradB must not be null");
  if (p.m > 0 && (!p.x || !p.grad_output)) fail("x and gradOutput must not be null");
  if (p.x_stride < p.k || p.weight_stride < p.k || p.grad_output_stride < p.n) fail("row strides must cover a row");
  if (p.a_stride < p.k || p.b_stride < p.r || p.grad_a_stride < p.k || p.grad_b_stride < p.r) fail("a/b/gradA/gradB row strides must cover a row");
  if (p.grad_input && p.grad_input_stride < p.k) fail("gradInput row stride must cover a row");
  if (p.dropout_mask && p.mask_stride < p.k) fail("dropoutMask row stride must cover a row");
}

}  // namespace

void lora_backward(const LoraBackwardParams& p, Device device) {
  check_params(p);  // m = 0 still runs: gradA and gradB are sums over no rows, i.e. zero
  if (device.is_cpu()) return cpu::lora_backward(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::lora_backward(p, device.index);
#else
  throw Error(ErrorCode::Device, "lora.backward: CUDA support was not compiled into this binary");
#endif
}

void lora_forward(const LoraForwardParams& p, Device device) {
  check_params(p);
  if (p.m == 0) return;
  if (device.is_cpu()) return cpu::lora_forward(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::lora_forward(p, device.index);
#else
  throw Error(ErrorCode::Device, "lora.forward: CUDA support was not compiled into this binary");
#endif
}

}  // namespace lk
