// Quantized weights: NF4 (bitsandbytes-compatible bytes) and 1.58-bit ternary (BitNet b1.58),
// quantize and dequantize. Formats: csrc/formats/nf4.h, ternary.h. Plain params structs, compiled by
// g++ and nvcc alike; every pointer lives on the op's device.
//
// Napkin math (W 4096 × 4096): float32 64 MiB; NF4 8 MiB of codes + 1 MiB of float32 absmax at
// block 64 (4.5 bits per weight), 8.25 MiB with double quantization (4.127 bits); ternary 4 MiB
// (2 bits). A decode step reads the weight once, so its time scales with these bytes.
#pragma once
#include <cstdint>

#include "../core/device.h"
#include "../core/dtype.h"

namespace lk {

enum class QuantFormat : int32_t { Nf4 = 0, Ternary = 1 };

// A quantized [n, k] weight as the kernels read it.
struct QuantWeight {
  QuantFormat format = QuantFormat::Nf4;
  int64_t n = 0, k = 0;
  const uint8_t* packed = nullptr;  // nf4: ⌈n·k/2⌉ bytes (flattened); ternary: [n][⌈k/4⌉]
  // nf4: float32 absmax per block, or (absmax null) the double-quantized form.
  int64_t block_size = 64;
  const float* absmax = nullptr;         // [⌈n·k / block_size⌉]
  const uint8_t* absmax_code = nullptr;  // double quantization: [blocks]
  const float* nested_absmax = nullptr;  // [⌈blocks / 256⌉]
  const float* nested_code = nullptr;    // [256] (bitsandbytes' signed dynamic map)
  float offset = 0;                      // mean of the absmax values, added back
  // ternary: one float32 scale for the tensor.
  float scale = 1;
};

// w [n, k] (float32 / float16 / bfloat16, row stride w_stride) → packed codes + float32 absmax per
// block (bitsandbytes' rules: x·(1/absmax), nearest code, midpoints to the lower code, an all-zero
// block gives codes 7). With double_quant, also the nested form of absmax: offset = mean(absmax)
// (a float32 written to *offset), absmax − offset quantized to 8-bit dynamic-map codes in blocks of
// 256 (nested_absmax per block); absmax itself is still written (float32, the values before nesting).
struct Nf4QuantizeParams {
  DType dtype = DType::Float32;
  int64_t n = 0, k = 0;
  const void* w = nullptr;
  int64_t w_stride = 0;
  int64_t block_size = 64;
  uint8_t* packed = nullptr;
  float* absmax = nullptr;
  bool double_quant = false;
  uint8_t* absmax_code = nullptr;   // [blocks] when double_quant
  float* nested_absmax = nullptr;   // [⌈blocks / 256⌉]
  const float* nested_code = nullptr;  // [256]: the dynamic map (input)
  float* offset = nullptr;          // [1]
};

// Ternary: scale = max(mean |w|, eps) (written to *scale, float32), codes = clamp(round(w / scale), −1, 1).
struct TernaryQuantizeParams {
  DType dtype = DType::Float32;
  int64_t n = 0, k = 0;
  const void* w = nullptr;
  int64_t w_stride = 0;
  float eps = 1e-5f;
  uint8_t* packed = nullptr;  // [n][⌈k/4⌉]
  float* scale = nullptr;     // [1]
};

// out [n, k] (row stride out_stride) = the weight's values, float32, then rounded to `dtype`.
struct DequantizeParams {
  QuantWeight weight;
  DType dtype = DType::Float32;
  void* out = nullptr;
  int64_t out_stride = 0;
};

// Check what memory safety needs and run on `device`. Throw lk::Error.
void nf4_quantize(const Nf4QuantizeParams& params, Device device);
void ternary_quantize(const TernaryQuantizeParams& params, Device device);
void dequantize(const DequantizeParams& params, Device device);

}  // namespace lk
