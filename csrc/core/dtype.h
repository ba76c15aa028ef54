// Element types shared by the TypeScript layer, the C++ core and the CUDA kernels.
// The numeric values are part of the native contract (lib/dtype.ts mirrors them). Kernels compute
// in the float dtypes only; the others are storage the addon copies as bytes.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lk {

enum class DType : int32_t {
  Float32 = 0, Float16 = 1, BFloat16 = 2, Int8 = 3, UInt8 = 4, Int32 = 5,
  Float64 = 6, Int16 = 7, UInt16 = 8, UInt32 = 9, Int64 = 10, UInt64 = 11, Bool = 12, Float8E4M3FN = 13, Float8E5M2 = 14,
};

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::Float64: case DType::Int64: case DType::UInt64: return 8;
    case DType::Float32: case DType::Int32: case DType::UInt32: return 4;
    case DType::Float16: case DType::BFloat16: case DType::Int16: case DType::UInt16: return 2;
    case DType::Int8: case DType::UInt8: case DType::Bool: case DType::Float8E4M3FN: case DType::Float8E5M2: return 1;
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
    case DType::Float64: return "float64";
    case DType::Int16: return "int16";
    case DType::UInt16: return "uint16";
    case DType::UInt32: return "uint32";
    case DType::Int64: return "int64";
    case DType::UInt64: return "uint64";
    case DType::Bool: return "bool";
    case DType::Float8E4M3FN: return "float8_e4m3fn";
    case DType::Float8E5M2: return "float8_e5m2";
  }
  return "?";
}

constexpr bool is_float_dtype(DType t) {
  return t == DType::Float32 || t == DType::Float16 || t == DType::BFloat16;
}

}  // namespace lk
