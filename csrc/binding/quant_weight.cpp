#include "quant_weight.h"

#include "formats/nf4.h"
#include "formats/ternary.h"

namespace lk::binding {

QuantWeight quant_weight_arg(const Descriptor& args, const char* field, Device* device) {
  const Descriptor d = args.nested(field);
  constexpr int64_t kMaxDim = int64_t{1} << 40;
  QuantWeight w;
  w.format = static_cast<QuantFormat>(d.integer("format", 0, 1));
  w.n = d.integer("n", 1, kMaxDim);
  w.k = d.integer("k", 1, kMaxDim);
  d.expect(w.n <= kMaxDim / w.k, ErrorCode::Shape, std::string(field) + " has more than 2^40 elements");
  const TensorArg packed = d.tensor("packed");
  *device = packed.device;
  if (w.format == QuantFormat::Nf4) {
    const int64_t elements = w.n * w.k;
    d.expect_part(packed, DType::UInt8, nf4::packed_bytes(elements), packed);
    w.packed = static_cast<const uint8_t*>(packed.data);
    w.block_size = d.integer("blockSize", nf4::kMinBlock, nf4::kMaxBlock);
    d.expect((w.block_size & (w.block_size - 1)) == 0, ErrorCode::Argument, std::string(field) + ".blockSize must be a power of two");
    const int64_t blocks = nf4::blocks(elements, w.block_size);
    const TensorArg absmax = d.optional_tensor("absmax");
    if (absmax.data) {
      d.expect_part(absmax, DType::Float32, blocks, packed);
      w.absmax = static_cast<const float*>(absmax.data);
    } else {
      const TensorArg code = d.tensor("absmaxCode"), nested = d.tensor("nestedAbsmax"), nested_code = d.tensor("nestedCode");
      d.expect_part(code, DType::UInt8, blocks, packed);
      d.expect_part(nested, DType::Float32, (blocks + nf4::kNestedBlock - 1) / nf4::kNestedBlock, packed);
      d.expect_part(nested_code, DType::Float32, 256, packed);
      w.absmax_code = static_cast<const uint8_t*>(code.data);
      w.nested_absmax = static_cast<const float*>(nested.data);
      w.nested_code = static_cast<const float*>(nested_code.data);
      w.offset = static_cast<float>(d.number("offset", 0.0));
    }
  } else {
    d.expect_part(packed, DType::UInt8, w.n * ternary::row_bytes(w.k), packed);
    w.packed = static_cast<const uint8_t*>(packed.data);
    w.scale = static_cast<float>(d.number("scale", 1.0));
  }
  return w;
}

}  // namespace lk::binding
