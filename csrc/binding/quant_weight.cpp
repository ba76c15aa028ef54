#include "quant_weight.h"

#include <cmath>
#include <string>

#include "formats/nf4.h"
#include "formats/ternary.h"

namespace lk::binding {
namespace {

struct Reader {
  const char* op;
  std::string name;
  [[noreturn]] void fail(ErrorCode code, const std::string& what) const {
    throw Error(code, std::string(op) + ": " + name + what);
  }
  void expect(bool ok, ErrorCode code, const std::string& what) const {
    if (!ok) fail(code, what);
  }
  int64_t count(const Napi::Object& d, const char* key, int64_t low, int64_t high) const {
    const double v = number_arg(d, key, NAN);
    expect(v >= static_cast<double>(low) && v <= static_cast<double>(high) && v == std::floor(v), ErrorCode::Argument,
           std::string(".") + key + " must be an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]");
    return static_cast<int64_t>(v);
  }
  // A part of dtype `dtype` with exactly `numel` elements on the device of the packed codes.
  const void* part(const TensorArg& t, const char* key, DType dtype, int64_t numel, const Device& device) const {
    expect(t.dtype == dtype, ErrorCode::DType, std::string(".") + key + " must be " + dtype_name(dtype));
    expect(t.numel() == numel, ErrorCode::Shape, std::string(".") + key + " must hold " + std::to_string(numel) + " elements, got " + std::to_string(t.numel()));
    expect(t.device.index == device.index, ErrorCode::Device, std::string(".") + key + " must be on the device of the packed codes");
    return t.data;
  }
};

}  // namespace

QuantWeight quant_weight_arg(const Napi::Object& obj, const char* name, const char* op, KeepAlive& keep, Device* device) {
  const Reader in{op, name};
  Napi::Value v = obj.Get(name);
  in.expect(v.IsObject(), ErrorCode::Argument, " must be a quantized weight descriptor");
  const Napi::Object d = v.As<Napi::Object>();
  constexpr int64_t kMaxDim = int64_t{1} << 40;
  QuantWeight w;
  w.format = static_cast<QuantFormat>(in.count(d, "format", 0, 1));
  w.n = in.count(d, "n", 1, kMaxDim);
  w.k = in.count(d, "k", 1, kMaxDim);
  in.expect(w.n <= kMaxDim / w.k, ErrorCode::Shape, " has more than 2^40 elements");
  const TensorArg packed = tensor_arg(d, "packed", keep);
  *device = packed.device;
  if (w.format == QuantFormat::Nf4) {
    const int64_t elements = w.n * w.k;
    w.packed = static_cast<const uint8_t*>(in.part(packed, "packed", DType::UInt8, nf4::packed_bytes(elements), *device));
    w.block_size = in.count(d, "blockSize", nf4::kMinBlock, nf4::kMaxBlock);
    in.expect((w.block_size & (w.block_size - 1)) == 0, ErrorCode::Argument, ".blockSize must be a power of two");
    const int64_t blocks = nf4::blocks(elements, w.block_size);
    const TensorArg absmax = optional_tensor_arg(d, "absmax", keep);
    if (absmax.data) {
      w.absmax = static_cast<const float*>(in.part(absmax, "absmax", DType::Float32, blocks, *device));
    } else {
      w.absmax_code = static_cast<const uint8_t*>(in.part(tensor_arg(d, "absmaxCode", keep), "absmaxCode", DType::UInt8, blocks, *device));
      w.nested_absmax = static_cast<const float*>(in.part(tensor_arg(d, "nestedAbsmax", keep), "nestedAbsmax", DType::Float32,
                                                          (blocks + nf4::kNestedBlock - 1) / nf4::kNestedBlock, *device));
      w.nested_code = static_cast<const float*>(in.part(tensor_arg(d, "nestedCode", keep), "nestedCode", DType::Float32, 256, *device));
      w.offset = static_cast<float>(number_arg(d, "offset", 0.0));
    }
  } else {
    w.packed = static_cast<const uint8_t*>(in.part(packed, "packed", DType::UInt8, w.n * ternary::row_bytes(w.k), *device));
    w.scale = static_cast<float>(number_arg(d, "scale", 1.0));
  }
  return w;
}

}  // namespace lk::binding
