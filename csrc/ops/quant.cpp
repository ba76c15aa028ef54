// The one place that picks a backend for quantize / dequantize (NF4, ternary).
#include "quant.h"

#include <string>

#include "core/status.h"
#include "cpu/dispatch/kernels.h"
#include "formats/nf4.h"
#include "quant_check.h"
#if defined(LK_WITH_CUDA)
#include "cuda/quant.cuh"
#endif

namespace lk {
namespace {

void check_dtype(const char* op, DType dtype) {
  if (!is_float_dtype(dtype)) fail(op, ErrorCode::DType, std::string("dtype must be float32, float16 or bfloat16, got ") + dtype_name(dtype));
}

bool valid_block_size(int64_t b) { return b >= nf4::kMinBlock && b <= nf4::kMaxBlock && (b & (b - 1)) == 0; }

void check_params(const Nf4QuantizeParams& p) {
  constexpr const char* op = "quant.nf4.quantize";
  check_dtype(op, p.dtype);
  if (p.n < 1 || p.k < 1) fail(op, ErrorCode::Shape, "sizes must be n ≥ 1, k ≥ 1");
  if (!valid_block_size(p.block_size)) fail(op, ErrorCode::Argument, "block size must be a power of two in [32, 4096], got " + std::to_string(p.block_size));
  if (!p.w || !p.packed || !p.absmax) fail(op, ErrorCode::Argument, "w, packed and absmax must not be null");
  if (p.w_stride < p.k) fail(op, ErrorCode::Argument, "the row stride of w must cover a row");
  if (p.double_quant && (!p.absmax_code || !p.nested_absmax || !p.nested_code || !p.offset))
    fail(op, ErrorCode::Argument, "double quantization needs absmax_code, nested_absmax, nested_code and offset");
}

void check_params(const TernaryQuantizeParams& p) {
  constexpr const char* op = "quant.ternary.quantize";
  check_dtype(op, p.dtype);
  if (p.n < 1 || p.k < 1) fail(op, ErrorCode::Shape, "sizes must be n ≥ 1, k ≥ 1");
  if (!p.w || !p.packed || !p.scale) fail(op, ErrorCode::Argument, "w, packed and scale must not be null");
  if (p.w_stride < p.k) fail(op, ErrorCode::Argument, "the row stride of w must cover a row");
}

void check_params(const DequantizeParams& p) {
  constexpr const char* op = "quant.dequantize";
  check_dtype(op, p.dtype);
  check_quant_weight(op, p.weight);
  if (!p.out) fail(op, ErrorCode::Argument, "out must not be null");
  if (p.out_stride < p.weight.k) fail(op, ErrorCode::Argument, "the row stride of out must cover a row");
}

}  // namespace

void check_quant_weight(const char* op, const QuantWeight& w) {
  if (w.n < 1 || w.k < 1) fail(op, ErrorCode::Shape, "the weight's sizes must be n ≥ 1, k ≥ 1");
  if (!w.packed) fail(op, ErrorCode::Argument, "the weight's packed codes must not be null");
  if (w.format == QuantFormat::Nf4) {
    if (!valid_block_size(w.block_size)) fail(op, ErrorCode::Argument, "the weight's block size must be a power of two in [32, 4096], got " + std::to_string(w.block_size));
    if (!w.absmax && !(w.absmax_code && w.nested_absmax && w.nested_code))
      fail(op, ErrorCode::Argument, "an NF4 weight needs absmax, or absmax_code, nested_absmax and nested_code");
  } else if (w.format != QuantFormat::Ternary) {
    fail(op, ErrorCode::Argument, "unknown quantized format " + std::to_string(static_cast<int>(w.format)));
  }
}

void nf4_quantize(const Nf4QuantizeParams& p, Device device) {
  check_params(p);
  if (device.is_cpu()) return cpu::nf4_quantize(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::nf4_quantize(p, device.index);
#else
  throw Error(ErrorCode::Device, "quant.nf4.quantize: CUDA support was not compiled into this binary");
#endif
}

void ternary_quantize(const TernaryQuantizeParams& p, Device device) {
  check_params(p);
  if (device.is_cpu()) return cpu::ternary_quantize(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::ternary_quantize(p, device.index);
#else
  throw Error(ErrorCode::Device, "quant.ternary.quantize: CUDA support was not compiled into this binary");
#endif
}

void dequantize(const DequantizeParams& p, Device device) {
  check_params(p);
  if (device.is_cpu()) return cpu::dequantize(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::dequantize(p, device.index);
#else
  throw Error(ErrorCode::Device, "quant.dequantize: CUDA support was not compiled into this binary");
#endif
}

}  // namespace lk
