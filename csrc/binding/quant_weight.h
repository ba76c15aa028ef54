// The descriptor of a quantized weight (lib/native.ts NativeQuantWeight) → QuantWeight, shared by
// the quantize / dequantize and quant.matmul bindings.
#pragma once
#include <napi.h>

#include "common.h"
#include "ops/quant.h"

namespace lk::binding {

// Reads args[field] = { format, n, k, packed, blockSize, absmax | (absmaxCode, nestedAbsmax,
// nestedCode, offset), scale }. Re-checks what memory safety needs: each buffer holds exactly what
// the kernels read for [n, k], the block size is one they handle, every part is on one device
// (returned in *device). The pointers stay valid while the op's KeepAlive lives.
QuantWeight quant_weight_arg(const Descriptor& args, const char* field, Device* device);

}  // namespace lk::binding
