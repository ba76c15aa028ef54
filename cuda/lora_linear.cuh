// CUDA entry of the fused LoRA linear op (implemented in cuda/lora_linear.cu). Plain C++: it is
// included by csrc/ops/lora_linear.cpp, which g++ compiles, when LK_WITH_CUDA is defined.
#pragma once
#include "ops/lora_linear.h"

namespace lk::cuda_ops {

// y = x·Wᵀ + bias + scale·((x ⊙ mask)·Aᵀ)·Bᵀ on CUDA device `device`; synchronous (the default
// stream is synchronized before returning). Pointers are device pointers. Throws lk::Error:
// ERR_DEVICE (no such device), ERR_UNSUPPORTED (a size the launch grid cannot cover),
// ERR_OUT_OF_MEMORY (scratch), ERR_CUDA (launch or execution failure).
void lora_forward(const LoraForwardParams& p, int device);

// Rows with their own adapters (lora.forwardMulti): row i uses B at p.b + ids[i]·b_adapter_stride
// (row stride p.b_stride) over its first ranks[ids[i]] ranks (null: p.r); ids[i] = -1: no low-rank
// term. Device pointers; the ids and ranks must already be checked (in range) by the caller.
struct PerRowAdapters {
  const int* ids = nullptr;
  const int* ranks = nullptr;
  long long b_adapter_stride = 0;
};

// y = x·Wᵀ + bias + T·B[id]ᵀ per row, with T [p.m, p.r] float32 (already scaled, device memory)
// given: the fused forward's GEMM with the per-row low-rank term added in its epilogue, so y is
// stored once. p.a, p.dropout_mask and p.scale are not used. Synchronous; errors as lora_forward.
void lora_forward_per_row(const LoraForwardParams& p, const float* t, const PerRowAdapters& rows, int device);

}  // namespace lk::cuda_ops
