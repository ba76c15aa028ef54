// Multi-adapter LoRA linear layer (S-LoRA / Punica style batched serving): every row of x picks
// its own adapter, or none.
//
//   y_t = x_t·Wᵀ + bias + scales[id_t]·(x_t·A[id_t][:r]ᵀ)·B[id_t][:, :r]ᵀ,   r = ranks[id_t]
//
// with id_t = adapter_ids[t] ∈ [-1, L) (-1: base layer only). A is [L, r_max, K], B [L, N, r_max]
// (PEFT's lora_A / lora_B stacked, padded to r_max); adapter l uses its first ranks[l] ranks.
//
// Napkin math (M=512, K=N=4096, r=16, 64 adapters, float32): the base GEMM is 2·M·N·K = 17.2 GFLOP
// whatever the ids are; the low-rank path is 2·M·r·(K+N) = 0.13 GFLOP (0.8%) plus reading every
// used adapter once, 64·r·(K+N)·4 B = 32 MiB (~1-2 ms at DRAM speed, ~2% of the GEMM). So serving
// 64 adapters in one batch should cost within a few percent of one adapter, if the base GEMM is
// shared and each adapter's A and B are read once per column block, not once per row.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/device.h"
#include "../core/dtype.h"

namespace lk {

struct LoraMultiParams {
  DType dtype = DType::Float32;  // x, weight, a, b, y, and bias unless bias_f32
  int64_t m = 0;                 // rows of x (leading dimensions flattened)
  int64_t k = 0;                 // input features
  int64_t n = 0;                 // output features
  int64_t num_adapters = 0;      // L ≥ 1
  int64_t r_max = 0;             // padded rank of a and b, ≥ 1

  const void* x = nullptr;       // [m, k], row stride x_stride
  int64_t x_stride = 0;
  const void* weight = nullptr;  // [n, k], row stride weight_stride
  int64_t weight_stride = 0;
  const void* bias = nullptr;    // [n] contiguous, or null
  bool bias_f32 = false;  // bias is float32 while dtype is float16/bfloat16 (the mixed-precision layout)
  const void* a = nullptr;       // [L, r_max, k] contiguous
  const void* b = nullptr;       // [L, n, r_max] contiguous
  const int32_t* ranks = nullptr;       // [L], each in [1, r_max]; null: every adapter has r_max
  const float* scales = nullptr;        // [L]
  const int32_t* adapter_ids = nullptr; // [m], each in [-1, L)
  // CUDA: ranks, scales and adapter_ids are host memory (the caller gave numbers). The op groups
  // the rows from them without reading ids back from the device — no wait for the work queued
  // before it — and uploads the 4·(m + 2L) bytes with one asynchronous copy. (CPU: always host.)
  bool small_args_on_host = false;

  void* y = nullptr;             // [m, n], row stride y_stride
  int64_t y_stride = 0;

  // Element offsets of adapter l's A and B, and of their rows.
  int64_t a_offset(int64_t l) const { return l * r_max * k; }
  int64_t b_offset(int64_t l) const { return l * n * r_max; }
  int64_t rank(int64_t l) const { return ranks ? ranks[l] : r_max; }
};

// Rows grouped by adapter (a stable counting sort of adapter_ids; base-only rows first): row
// order[i] of x is the i-th row of the grouped order, and segment s covers grouped rows
// [begin[s], begin[s + 1]) that all use adapter adapter[s] (-1 for the base-only segment).
// Built on the host: the CPU kernel processes the segments; the CUDA op builds it to check the ids.
struct AdapterSegments {
  std::vector<int32_t> order;    // [m]
  std::vector<int64_t> begin;    // [segments + 1]
  std::vector<int32_t> adapter;  // [segments]
  int64_t count() const { return static_cast<int64_t>(adapter.size()); }
};

// Checks host copies of the ids and ranks (ERR_ARGUMENT naming the first bad row / adapter) and
// groups the rows. `op` prefixes messages. Every backend calls this before reading A or B through
// an id, so an out-of-range id can never become an out-of-bounds read.
AdapterSegments group_rows_by_adapter(const int32_t* adapter_ids, int64_t m, const int32_t* ranks,
                                      int64_t num_adapters, int64_t r_max, const char* op);

// Checks the params (non-null pointers, strides, float dtype, ids, ranks) and runs on `device`.
// On CUDA, ranks, scales and adapter_ids are device pointers too. Throws lk::Error.
void lora_forward_multi(const LoraMultiParams& params, Device device);

}  // namespace lk
