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
TensorArg weight_to_quantize(const OpArgs& args) {
  TensorArg w = args.tensor("w");
  args.expect(w.ndim() == 2 && w.dim(0) >= 1 && w.dim(1) >= 1, ErrorCode::Shape, "w must be [N, K] with N, K ≥ 1");
  args.expect(is_float_dtype(w.dtype), ErrorCode::DType, "w must be float32, float16 or bfloat16");
  return w;
}

Napi::Value nf4_quantize_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "quant.nf4.quantize", async);
  const TensorArg w = weight_to_quantize(args);
  Nf4QuantizeParams p;
  p.dtype = w.dtype;
  p.n = w.dim(0);
  p.k = w.dim(1);
  p.w = w.data;
  p.w_stride = p.k;
  p.block_size = args.integer("blockSize", nf4::kMinBlock, nf4::kMaxBlock, 64);
  args.expect((p.block_size & (p.block_size - 1)) == 0, ErrorCode::Argument, "blockSize must be a power of two");
  const int64_t elements = p.n * p.k, blocks = nf4::blocks(elements, p.block_size);
  const TensorArg packed = args.tensor("packed"), absmax = args.tensor("absmax");
  args.expect_part(packed, DType::UInt8, nf4::packed_bytes(elements), w);
  args.expect_part(absmax, DType::Float32, blocks, w);
  p.packed = static_cast<uint8_t*>(packed.data);
  p.absmax = static_cast<float*>(absmax.data);
  p.double_quant = args.boolean("doubleQuant", false);
  if (p.double_quant) {
    const TensorArg code = args.tensor("absmaxCode"), nested = args.tensor("nestedAbsmax"),
                    nested_code = args.tensor("nestedCode"), offset = args.tensor("offset");
    args.expect_part(code, DType::UInt8, blocks, w);
    args.expect_part(nested, DType::Float32, (blocks + nf4::kNestedBlock - 1) / nf4::kNestedBlock, w);
    args.expect_part(nested_code, DType::Float32, 256, w);
    args.expect_part(offset, DType::Float32, 1, w);
    p.absmax_code = static_cast<uint8_t*>(code.data);
    p.nested_absmax = static_cast<float*>(nested.data);
    p.nested_code = static_cast<const float*>(nested_code.data);
    p.offset = static_cast<float*>(offset.data);
  }
  const Device device = w.device;
  return args.run(device, [p, device] { nf4_quantize(p, device); });
}

Napi::Value ternary_quantize_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "quant.ternary.quantize", async);
  const TensorArg w = weight_to_quantize(args);
  TernaryQuantizeParams p;
  p.dtype = w.dtype;
  p.n = w.dim(0);
  p.k = w.dim(1);
  p.w = w.data;
  p.w_stride = p.k;
  p.eps = static_cast<float>(args.number("eps", ternary::kDefaultEps));
  const TensorArg packed = args.tensor("packed"), scale = args.tensor("scale");
  args.expect_part(packed, DType::UInt8, p.n * ternary::row_bytes(p.k), w);
  args.expect_part(scale, DType::Float32, 1, w);
  p.packed = static_cast<uint8_t*>(packed.data);
  p.scale = static_cast<float*>(scale.data);
  const Device device = w.device;
  return args.run(device, [p, device] { ternary_quantize(p, device); });
}

Napi::Value dequantize_entry(const Napi::CallbackInfo& info, bool async) {
  OpArgs args(info, "quant.dequantize", async);
  DequantizeParams p;
  Device device;
  p.weight = quant_weight_arg(args, "weight", &device);
  const TensorArg out = args.tensor("out");
  args.expect(is_float_dtype(out.dtype), ErrorCode::DType, "out must be float32, float16 or bfloat16");
  args.expect(out.numel() == p.weight.n * p.weight.k, ErrorCode::Shape, "out must hold N·K elements");
  args.expect(out.device.index == device.index, ErrorCode::Device, "out must be on the device of the weight");
  p.dtype = out.dtype;
  p.out = out.data;
  p.out_stride = p.weight.k;
  return args.run(device, [p, device] { dequantize(p, device); });
}

}  // namespace

void register_quant(Napi::Env env, Napi::Object exports) {
  export_op(env, exports, "nf4Quantize", nf4_quantize_entry);
  export_op(env, exports, "ternaryQuantize", ternary_quantize_entry);
  export_op(env, exports, "quantDequantize", dequantize_entry);
}

}  // namespace lk::binding
