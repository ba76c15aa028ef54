// Element types shared by the TypeScript layer, the C++ core and the CUDA kernels.
// The numeric values are part of the native contract (lib/native.ts mirrors them).
#pragma once
#include <cstddef>
#include <cstdint>

namespace lk {

enum class DType : int32_t { Float32 = 0, Float16 = 1, BFloat16 = 2, Int8 = 3, UInt8 = 4, Int32 = 5 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::Float32: case DType::Int32: return 4;
    case DType::Float16: case DType::BFloat16: return 2;
    case DType::Int8: case DType::UInt8: return 1;
  }
  return 0;
}

constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Int8: return "int8";
    case DType::UInt8: return "uint8";
    case DType::Int32: return "int32";
  }
  return "?";
}

constexpr bool is_float_dtype(DType t) {
  return t == DType::Float32 || t == DType::Float16 || t == DType::BFloat16;
}

}  // namespace lk
