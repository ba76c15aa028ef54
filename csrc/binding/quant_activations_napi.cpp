// quant.int8.quantize / dequantize (+ Async): JS descriptors → the params structs of
// ops/quant_activations.h. The TypeScript layer validates for the user; this re-checks what memory
// safety needs (every buffer holds what the kernel writes or reads, on one device).
#include <string>

#include "common.h"
#include "ops/quant_activations.h"

namespace lk::binding {
namespace {

// [..., K] with K ≥ 1: M (the rows) and K.
void rows_of(const OpArgs& args, const TensorArg& t, int64_t& m, int64_t& k) {
  args.expect(t.ndim() >= 1 && t.dim(-1) >= 1, ErrorCode::Shape, t.name + " must be [..., K] with K ≥ 1");
  k = t.dim(-1);
  m = t.numel() / k;
}

Napi::Value quantize_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "quant.int8.quantize", async);
  const TensorArg x = args.tensor("x");
  args.expect(is_float_dtype(x.dtype), ErrorCode::DType, "x must be float32, float16 or bfloat16");
  Int8QuantizeParams p;
  rows_of(args, x, p.m, p.k);
  p.dtype = x.dtype;
  p.x = x.data;
  const TensorArg values = args.tensor("values"), scales = args.tensor("scales");
  args.expect_part(values, DType::Int8, p.m * p.k, x);
  args.expect_part(scales, DType::Float32, p.m, x);
  p.values = static_cast<int8_t*>(values.data);
  p.scales = static_cast<float*>(scales.data);
  const Device device = x.device;
  return args.run(device, [p, device] { int8_quantize(p, device); });
}

Napi::Value dequantize_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "quant.int8.dequantize", async);
  const TensorArg values = args.tensor("values");
  args.expect(values.dtype == DType::Int8, ErrorCode::DType, "values must be int8");
  Int8DequantizeParams p;
  rows_of(args, values, p.m, p.k);
  p.values = static_cast<const int8_t*>(values.data);
  const TensorArg scales = args.tensor("scales"), out = args.tensor("out");
  args.expect_part(scales, DType::Float32, p.m, values);
  args.expect(is_float_dtype(out.dtype), ErrorCode::DType, "out must be float32, float16 or bfloat16");
  args.expect_part(out, out.dtype, p.m * p.k, values);
  p.scales = static_cast<const float*>(scales.data);
  p.dtype = out.dtype;
  p.out = out.data;
  const Device device = values.device;
  return args.run(device, [p, device] { int8_dequantize(p, device); });
}

}  // namespace

void register_quant_activations(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "int8Quantize", quantize_entry);
  export_op(env, exports, "int8Dequantize", dequantize_entry);
}

}  // namespace lk::binding
