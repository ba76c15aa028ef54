// NF4 (bitsandbytes / QLoRA 4-bit NormalFloat): the code table, once, for host and device code.
// Facts from ../shared/FORMATS.md (bitsandbytes' public sources); the code is ours.
//
// A weight [N, K] is flattened row-major and cut into blocks of `block_size` elements (32 … 4096,
// powers of two); element e of the flattened weight is the nibble of byte e / 2 — the HIGH nibble
// for even e — and its value is code[nibble] · absmax[e / block_size] (float32, then the dtype).
// absmax is float32 per block, or double-quantized: absmax[i] = fp32(nested_code[q[i]] ·
// nested_absmax[i / 256]) + offset, two separate float32 roundings (no fused multiply-add).
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define LK_HOST_DEVICE __host__ __device__
#else
#define LK_HOST_DEVICE
#endif

namespace lk::nf4 {

constexpr int kCodes = 16;
constexpr int kNestedBlock = 256;  // double quantization: absmax values per nested block
constexpr int kMinBlock = 32, kMaxBlock = 4096;

// The 16 code values, ascending; exact float32 values (the decimals are their shortest forms).
LK_HOST_DEVICE inline float code_value(int code) {
  constexpr float kValues[kCodes] = {
      -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
      -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
      0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f,
      0.7229568362236023f, 1.0f};
  return kValues[code & 15];
}

// The nibble of flattened element e in the packed bytes.
LK_HOST_DEVICE inline int nibble(const uint8_t* packed, int64_t e) {
  const uint8_t byte = packed[e >> 1];
  return (e & 1) ? (byte & 15) : (byte >> 4);
}

LK_HOST_DEVICE inline int64_t packed_bytes(int64_t elements) { return (elements + 1) / 2; }
LK_HOST_DEVICE inline int64_t blocks(int64_t elements, int64_t block_size) { return (elements + block_size - 1) / block_size; }

}  // namespace lk::nf4
