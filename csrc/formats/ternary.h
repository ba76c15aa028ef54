// 1.58-bit ternary weights (BitNet b1.58): our packing, once, for host and device code.
// Facts from ../shared/FORMATS.md (BitNet's public sources); the layout is ours.
//
// W ≈ scale · Wq with Wq ∈ {−1, 0, +1}, scale = max(mean |W|, eps) (one float32 per tensor),
// Wq = clamp(round(W / scale), −1, 1). Packed row by row: row n of [N, K] takes row_bytes(K) =
// ⌈K / 4⌉ bytes; element k is the 2-bit code at bits 2·(k % 4) of byte k / 4 (lowest bits first),
// code 0 = −1, 1 = 0, 2 = +1 (3 is never written; it decodes as 0). Padding codes past K are 1 (0).
#pragma once
#include <cstdint>

#include "nf4.h"  // LK_HOST_DEVICE

namespace lk::ternary {

constexpr float kDefaultEps = 1e-5f;

LK_HOST_DEVICE inline int64_t row_bytes(int64_t k) { return (k + 3) / 4; }

// −1, 0 or +1 for a 2-bit code.
LK_HOST_DEVICE inline int code_value(int code) { return code == 0 ? -1 : code == 2 ? 1 : 0; }

LK_HOST_DEVICE inline int code_at(const uint8_t* row, int64_t k) { return (row[k >> 2] >> (2 * (k & 3))) & 3; }

}  // namespace lk::ternary
