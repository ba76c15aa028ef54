// quant.nf4.quantize, quant.ternary.quantize and quant.*.dequantize (+ Async): JS descriptors →
// the params structs of ops/quant.h. The TypeScript layer validates for the user; this re-checks
// what memory safety needs (every buffer holds what the kernel writes or reads).
#include <string>

#include "common.h"
#include "formats/nf4.h"
#include "formats/ternary.h"
#include "ops/quant.h"
#include "quant_weight.h"

namespace lk::binding {
namespace {

// w [n, k] in a float dtype: the weight every quantize reads.
TensorArg weight_to_quantize(const Napi::Object& d, const char* op, KeepAlive& keep) {
  TensorArg w = tensor_arg(d, "w", keep);
  expect(w.ndim() == 2 && w.dim(0) >= 1 && w.dim(1) >= 1, ErrorCode::Shape, op, "w must be [N, K] with N, K ≥ 1");
  expect(is_float_dtype(w.dtype), ErrorCode::DType, op, "w must be float32, float16 or bfloat16");
  return w;
}

Napi::Value nf4_quantize_entry(const Napi::CallbackInfo& info, bool async) {
  constexpr const char* op = "quant.nf4.quantize";
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Napi::Object d = descriptor(info, op);
    KeepAlive keep;
    const TensorArg w = weight_to_quantize(d, op, keep);
    Nf4QuantizeParams p;
    p.dtype = w.dtype;
    p.n = w.dim(0);
    p.k = w.dim(1);
    p.w = w.data;
    p.w_stride = p.k;
    const double block_size = number_arg(d, "blockSize", 64);
    expect(block_size >= nf4::kMinBlock && block_size <= nf4::kMaxBlock && block_size == static_cast<double>(static_cast<int64_t>(block_size)) &&
               (static_cast<int64_t>(block_size) & (static_cast<int64_t>(block_size) - 1)) == 0,
           ErrorCode::Argument, op, "blockSize must be a power of two in [32, 4096]");
    p.block_size = static_cast<int64_t>(block_size);
    const int64_t elements = p.n * p.k, blocks = nf4::blocks(elements, p.block_size);
    const TensorArg packed = tensor_arg(d, "packed", keep), absmax = tensor_arg(d, "absmax", keep);
    expect_part(packed, op, "packed", DType::UInt8, nf4::packed_bytes(elements), w.device);
    expect_part(absmax, op, "absmax", DType::Float32, blocks, w.device);
    p.packed = static_cast<uint8_t*>(packed.data);
    p.absmax = static_cast<float*>(absmax.data);
    p.double_quant = bool_arg(d, "doubleQuant", false);
    if (p.double_quant) {
      const TensorArg code = tensor_arg(d, "absmaxCode", keep), nested = tensor_arg(d, "nestedAbsmax", keep),
                      nested_code = tensor_arg(d, "nestedCode", keep), offset = tensor_arg(d, "offset", keep);
      expect_part(code, op, "absmaxCode", DType::UInt8, blocks, w.device);
      expect_part(nested, op, "nestedAbsmax", DType::Float32, (blocks + nf4::kNestedBlock - 1) / nf4::kNestedBlock, w.device);
      expect_part(nested_code, op, "nestedCode", DType::Float32, 256, w.device);
      expect_part(offset, op, "offset", DType::Float32, 1, w.device);
      p.absmax_code = static_cast<uint8_t*>(code.data);
      p.nested_absmax = static_cast<float*>(nested.data);
      p.nested_code = static_cast<const float*>(nested_code.data);
      p.offset = static_cast<float*>(offset.data);
    }
    const Device device = w.device;
    return run(info.Env(), async, device, std::move(keep), [p, device] { nf4_quantize(p, device); });
  });
}

Napi::Value ternary_quantize_entry(const Napi::CallbackInfo& info, bool async) {
  constexpr const char* op = "quant.ternary.quantize";
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Napi::Object d = descriptor(info, op);
    KeepAlive keep;
    const TensorArg w = weight_to_quantize(d, op, keep);
    TernaryQuantizeParams p;
    p.dtype = w.dtype;
    p.n = w.dim(0);
    p.k = w.dim(1);
    p.w = w.data;
    p.w_stride = p.k;
    p.eps = static_cast<float>(number_arg(d, "eps", ternary::kDefaultEps));
    const TensorArg packed = tensor_arg(d, "packed", keep), scale = tensor_arg(d, "scale", keep);
    expect_part(packed, op, "packed", DType::UInt8, p.n * ternary::row_bytes(p.k), w.device);
    expect_part(scale, op, "scale", DType::Float32, 1, w.device);
    p.packed = static_cast<uint8_t*>(packed.data);
    p.scale = static_cast<float*>(scale.data);
    const Device device = w.device;
    return run(info.Env(), async, device, std::move(keep), [p, device] { ternary_quantize(p, device); });
  });
}

Napi::Value dequantize_entry(const Napi::CallbackInfo& info, bool async) {
  constexpr const char* op = "quant.dequantize";
  return guarded(info.Env(), [&]() -> Napi::Value {
    const Napi::Object d = descriptor(info, op);
    KeepAlive keep;
    DequantizeParams p;
    Device device;
    p.weight = quant_weight_arg(d, "weight", op, keep, &device);
    const TensorArg out = tensor_arg(d, "out", keep);
    expect(is_float_dtype(out.dtype), ErrorCode::DType, op, "out must be float32, float16 or bfloat16");
    expect(out.numel() == p.weight.n * p.weight.k, ErrorCode::Shape, op, "out must hold N·K elements");
    expect(out.device.index == device.index, ErrorCode::Device, op, "out must be on the device of the weight");
    p.dtype = out.dtype;
    p.out = out.data;
    p.out_stride = p.weight.k;
    return run(info.Env(), async, device, std::move(keep), [p, device] { dequantize(p, device); });
  });
}

}  // namespace

void register_quant(Napi::Env env, Napi::Object exports) {
  exports.Set("nf4Quantize", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return nf4_quantize_entry(info, false); }));
  exports.Set("nf4QuantizeAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return nf4_quantize_entry(info, true); }));
  exports.Set("ternaryQuantize", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return ternary_quantize_entry(info, false); }));
  exports.Set("ternaryQuantizeAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return ternary_quantize_entry(info, true); }));
  exports.Set("quantDequantize", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return dequantize_entry(info, false); }));
  exports.Set("quantDequantizeAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return dequantize_entry(info, true); }));
}

}  // namespace lk::binding
