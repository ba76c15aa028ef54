// quant.int8.quantize / dequantize (+ Async): JS descriptors → the params structs of
// ops/quant_activations.h. The TypeScript layer validates for the user; this re-checks what memory
// safety needs (every buffer holds what the kernel writes or reads, on one device).
#include <string>

#include "common.h"
#include "ops/quant_activations.h"

namespace lk::binding {
namespace {

// [..., K] with K ≥ 1: M (the rows) and K.
void rows_of(const TensorArg& t, const char* op, const char* name, int64_t& m, int64_t& k) {
  expect(t.ndim() >= 1 && t.dim(-1) >= 1, ErrorCode::Shape, op, std::string(name) + " must be [..., K] with K ≥ 1");
  k = t.dim(-1);
  m = t.numel() / k;
}

Napi::Value quantize_entry(const Napi::CallbackInfo& info, bool async) {
  constexpr const char* op = "quant.int8.quantize";
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Napi::Object d = descriptor(info, op);
    KeepAlive keep;
    const TensorArg x = tensor_arg(d, "x", keep);
    expect(is_float_dtype(x.dtype), ErrorCode::DType, op, "x must be float32, float16 or bfloat16");
    Int8QuantizeParams p;
    rows_of(x, op, "x", p.m, p.k);
    p.dtype = x.dtype;
    p.x = x.data;
    const TensorArg values = tensor_arg(d, "values", keep), scales = tensor_arg(d, "scales", keep);
    expect_part(values, op, "values", DType::Int8, p.m * p.k, x.device);
    expect_part(scales, op, "scales", DType::Float32, p.m, x.device);
    p.values = static_cast<int8_t*>(values.data);
    p.scales = static_cast<float*>(scales.data);
    const Device device = x.device;
    return run(info.Env(), async, device, std::move(keep), [p, device] { int8_quantize(p, device); });
  });
}

Napi::Value dequantize_entry(const Napi::CallbackInfo& info, bool async) {
  constexpr const char* op = "quant.int8.dequantize";
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Napi::Object d = descriptor(info, op);
    KeepAlive keep;
    const TensorArg values = tensor_arg(d, "values", keep);
    expect(values.dtype == DType::Int8, ErrorCode::DType, op, "values must be int8");
    Int8DequantizeParams p;
    rows_of(values, op, "values", p.m, p.k);
    p.values = static_cast<const int8_t*>(values.data);
    const TensorArg scales = tensor_arg(d, "scales", keep), out = tensor_arg(d, "out", keep);
    expect_part(scales, op, "scales", DType::Float32, p.m, values.device);
    expect(is_float_dtype(out.dtype), ErrorCode::DType, op, "out must be float32, float16 or bfloat16");
    expect_part(out, op, "out", out.dtype, p.m * p.k, values.device);
    p.scales = static_cast<const float*>(scales.data);
    p.dtype = out.dtype;
    p.out = out.data;
    const Device device = values.device;
    return run(info.Env(), async, device, std::move(keep), [p, device] { int8_dequantize(p, device); });
  });
}

}  // namespace

void register_quant_activations(Napi::Env env, Napi::Object exports) {
  exports.Set("int8Quantize", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return quantize_entry(info, false); }));
  exports.Set("int8QuantizeAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return quantize_entry(info, true); }));
  exports.Set("int8Dequantize", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return dequantize_entry(info, false); }));
  exports.Set("int8DequantizeAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return dequantize_entry(info, true); }));
}

}  // namespace lk::binding
