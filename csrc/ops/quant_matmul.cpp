// The one place that picks a backend for quant.matmul and its backward.
#include "quant_matmul.h"

#include <string>

#include "core/status.h"
#include "cpu/dispatch/kernels.h"
#include "quant_check.h"
#if defined(LK_WITH_CUDA)
#include "cuda/quant_matmul.cuh"
#endif

namespace lk {
namespace {

void check_dtype(const char* op, DType dtype) {
  if (!is_float_dtype(dtype))
    throw Error(ErrorCode::DType, std::string(op) + ": dtype must be float32, float16 or bfloat16, got " + dtype_name(dtype));
}

void check_params(const QuantMatmulParams& p) {
  constexpr const char* op = "quant.matmul";
  check_dtype(op, p.dtype);
  check_quant_weight(op, p.weight);
  const int64_t k = p.weight.k, n = p.weight.n;
  if (p.m < 0 || p.r < 0) fail(op, ErrorCode::Argument, "sizes must be m ≥ 0, r ≥ 0");
  if (p.m > 0 && (!p.x || !p.y)) fail(op, ErrorCode::Argument, "x and y must not be null");
  if (p.r > 0 && (!p.a || !p.b)) fail(op, ErrorCode::Argument, "a and b must not be null when r > 0");
  if (p.x_stride < k || p.y_stride < n) fail(op, ErrorCode::Argument, "row strides must cover a row");
  if (p.r > 0 && (p.a_stride < k || p.b_stride < p.r)) fail(op, ErrorCode::Argument, "a/b row strides must cover a row");
}

void check_params(const QuantMatmulBackwardParams& p) {
  constexpr const char* op = "quant.matmulBackward";
  check_dtype(op, p.dtype);
  check_quant_weight(op, p.weight);
  const int64_t k = p.weight.k, n = p.weight.n;
  if (p.m < 0 || p.r < 1) fail(op, ErrorCode::Argument, "sizes must be m ≥ 0, r ≥ 1");
  if (!p.a || !p.b || !p.grad_a || !p.grad_b) fail(op, ErrorCode::Argument, "a, b, gradA and gradB must not be null");
  if (p.m > 0 && (!p.x || !p.grad_output)) fail(op, ErrorCode::Argument, "x and gradOutput must not be null");
  if (p.x_stride < k || p.grad_output_stride < n) fail(op, ErrorCode::Argument, "row strides must cover a row");
  if (p.a_stride < k || p.b_stride < p.r || p.grad_a_stride < k || p.grad_b_stride < p.r) fail(op, ErrorCode::Argument, "a/b/gradA/gradB row strides must cover a row");
  if (p.grad_input && p.grad_input_stride < k) fail(op, ErrorCode::Argument, "gradInput row stride must cover a row");
}

}  // namespace

void quant_matmul(const QuantMatmulParams& p, Device device) {
  check_params(p);
  if (p.m == 0) return;
  if (device.is_cpu()) return cpu::quant_matmul(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::quant_matmul(p, device.index);
#else
  throw Error(ErrorCode::Device, "quant.matmul: CUDA support was not compiled into this binary");
#endif
}

void quant_matmul_backward(const QuantMatmulBackwardParams& p, Device device) {
  check_params(p);  // m = 0 still runs: gradA, gradB and gradGate are sums over no rows, i.e. zero
  if (device.is_cpu()) return cpu::quant_matmul_backward(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::quant_matmul_backward(p, device.index);
#else
  throw Error(ErrorCode::Device, "quant.matmulBackward: CUDA support was not compiled into this binary");
#endif
}

}  // namespace lk
