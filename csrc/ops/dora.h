// DoRA (weight-decomposed low-rank adaptation) with PEFT semantics, built on the fused LoRA op:
//
//   norm_n = ‖W_n + s·B_n·A‖₂                      per output row n, shape [n], a constant in backward
//   y      = (m / norm) ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) + bias
//
// m is PEFT's lora_magnitude_vector [n], float32 or the dtype of x (PEFT keeps it in the model
// dtype); it is read as float32 either way and its gradient comes back in its own dtype.
//
// Forward = one row-norm pass over W (dora_norms) + the fused LoRA forward with
// column_scale = m / norm: the GEMM is not repeated and y is written once.
// Backward (norm constant), with z = x·Wᵀ + s·T·Bᵀ and g = gradOutput:
//   gradMagnitude_n = Σ_i g_in·z_in / norm_n,   and the LoRA gradients of g' = g ⊙ (m / norm)
// (gradA, gradB, gradInput = lora_backward(g')). z is recomputed by the fused forward (no bias,
// no column scale) instead of being kept from the forward pass.
//
// Napkin math (K = N = 4096, r = 16, float32): the norms read W once (64 MiB) and do 2·N·K·r =
// 0.54 GFLOP; next to the prefill GEMM (M = 512: 17.3 GFLOP) that is ~3% of the FLOPs plus one
// extra read of W; at decode (M = 1) it doubles the weight traffic, like PEFT's own recomputation.
#pragma once
#include <cstdint>

#include "../core/device.h"
#include "../core/dtype.h"
#include "lora_linear.h"

namespace lk {

// Kernel: per row n, norm_n = ‖W_n + scale·B_n·A‖₂ and column_scale_n = m_n / norm_n (float32).
// The row W_n + scale·B_n·A is formed on the fly in registers, one K slice at a time, and squared
// there: W is streamed once and the [n, k] sum is never materialised. (Expanding the square as
// ‖W_n‖² + 2s·B_n·(A·W_nᵀ) + s²·B_n·(A·Aᵀ)·B_nᵀ costs the same 2·N·K·r FLOPs but subtracts large
// terms when the adapter cancels part of W, losing digits exactly where the norm gets small; the
// direct form only sums non-negative squares, relative error ~ε·√K.)
struct DoraNormParams {
  DType dtype = DType::Float32;       // of weight, a and b
  int64_t k = 0, n = 0, r = 0;        // r ≥ 1
  const void* weight = nullptr;       // [n, k]
  int64_t weight_stride = 0;
  const void* a = nullptr;            // [r, k]
  int64_t a_stride = 0;
  const void* b = nullptr;            // [n, r]
  int64_t b_stride = 0;
  float scale = 1.0f;
  const void* magnitude = nullptr;    // [n], magnitude_dtype
  DType magnitude_dtype = DType::Float32;
  float* norm = nullptr;              // [n] out, or null
  float* column_scale = nullptr;      // [n] out: magnitude / norm
};

// Kernel, the backward's column pass: scaled_grad = g ⊙ column_scale (in dtype) and
// grad_magnitude_n = Σ_i g_in·z_in / norm_n (float32 sums in a fixed row order, stored in
// magnitude_dtype). m = 0 gives zeros.
struct DoraColumnParams {
  DType dtype = DType::Float32;       // of grad_output, z and scaled_grad
  int64_t m = 0, n = 0;
  const void* grad_output = nullptr;  // [m, n]
  int64_t grad_output_stride = 0;
  const void* z = nullptr;            // [m, n]
  int64_t z_stride = 0;
  const float* norm = nullptr;        // [n]
  const float* column_scale = nullptr;  // [n]
  void* scaled_grad = nullptr;        // [m, n]
  int64_t scaled_grad_stride = 0;
  void* grad_magnitude = nullptr;     // [n], magnitude_dtype
  DType magnitude_dtype = DType::Float32;
};

struct DoraForwardParams {
  LoraForwardParams lora;             // r ≥ 1; lora.column_scale must be null (the op sets it)
  const void* magnitude = nullptr;    // [n]
  DType magnitude_dtype = DType::Float32;
};

struct DoraBackwardParams {
  LoraBackwardParams lora;            // dropout_mask must be null
  const void* magnitude = nullptr;    // [n]
  DType magnitude_dtype = DType::Float32;
  void* grad_magnitude = nullptr;     // [n], magnitude_dtype
};

// Check what memory safety needs and run on `device`; scratch (norms, z, g') is allocated there
// for the duration of the call. Throw lk::Error.
void dora_forward(const DoraForwardParams& params, Device device);
void dora_backward(const DoraBackwardParams& params, Device device);

}  // namespace lk
