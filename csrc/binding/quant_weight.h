// The descriptor of a quantized weight (lib/native.ts NativeQuantWeight) → QuantWeight, shared by
// the quantize / dequantize and quant.matmul bindings.
#pragma once
#include <napi.h>

#include "common.h"
#include "ops/quant.h"

namespace lk::binding {

// Reads obj[name] = { format, n, k, packed, blockSize, absmax | (absmaxCode, nestedAbsmax,
// nestedCode, offset), scale }. Re-checks what memory safety needs: each buffer holds exactly what
// the kernels read for [n, k], the block size is one they handle, every part is on one device
// (returned in *device). The pointers stay valid while `keep` lives. Throws lk::Error naming `op`.
QuantWeight quant_weight_arg(const Napi::Object& obj, const char* name, const char* op, KeepAlive& keep, Device* device);

}  // namespace lk::binding
