// The one place that picks a backend for int8 per-token activation quantization.
#include "quant_activations.h"

#include <string>

#include "core/status.h"
#include "cpu/dispatch/kernels.h"
#if defined(LK_WITH_CUDA)
#include "cuda/quant_activations.cuh"
#endif

namespace lk {
namespace {

void check_sizes(const char* op, DType dtype, int64_t m, int64_t k) {
  if (!is_float_dtype(dtype)) fail(op, ErrorCode::DType, std::string("dtype must be float32, float16 or bfloat16, got ") + dtype_name(dtype));
  if (m < 0 || k < 1) fail(op, ErrorCode::Shape, "sizes must be m ≥ 0, k ≥ 1");
}

void check_params(const Int8QuantizeParams& p) {
  constexpr const char* op = "quant.int8.quantize";
  check_sizes(op, p.dtype, p.m, p.k);
  if (p.m > 0 && (!p.x || !p.values || !p.scales)) fail(op, ErrorCode::Argument, "x, values and scales must not be null");
}

void check_params(const Int8DequantizeParams& p) {
  constexpr const char* op = "quant.int8.dequantize";
  check_sizes(op, p.dtype, p.m, p.k);
  if (p.m > 0 && (!p.values || !p.scales || !p.out)) fail(op, ErrorCode::Argument, "values, scales and out must not be null");
}

}  // namespace

void int8_quantize(const Int8QuantizeParams& p, Device device) {
  check_params(p);
  if (device.is_cpu()) return cpu::int8_quantize(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::int8_quantize(p, device.index);
#else
  throw Error(ErrorCode::Device, "quant.int8.quantize: CUDA support was not compiled into this binary");
#endif
}

void int8_dequantize(const Int8DequantizeParams& p, Device device) {
  check_params(p);
  if (device.is_cpu()) return cpu::int8_dequantize(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::int8_dequantize(p, device.index);
#else
  throw Error(ErrorCode::Device, "quant.int8.dequantize: CUDA support was not compiled into this binary");
#endif
}

}  // namespace lk
