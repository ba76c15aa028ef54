// CUDA entry of the fused LoRA linear op (implemented in cuda/lora_linear.cu), and the pieces the
// other LoRA ops (backward, multi-adapter, DoRA) share with it. Plain C++: included by
// csrc/ops/lora_linear.cpp, which g++ compiles, when LK_WITH_CUDA is defined.
#pragma once
#include "ops/lora_linear.h"

struct CUstream_st;

namespace lk::cuda_ops {

// y = x·Wᵀ + bias + scale·((x ⊙ mask)·Aᵀ)·Bᵀ (⊙ p.column_scale, for DoRA) on CUDA device `device`:
// enqueued on the device's stream, no wait. Pointers are device pointers. Throws lk::Error:
// ERR_DEVICE (no such device), ERR_UNSUPPORTED (a size the launch grid cannot cover),
// ERR_OUT_OF_MEMORY (scratch), ERR_CUDA (launch failure).
void lora_forward(const LoraForwardParams& p, int device);

// out = x ⊙ mask, contiguous [m, k] in the dtype (the dropout mask's branch input).
void masked_copy(DType dtype, const void* x, long long x_stride, const void* mask, long long mask_stride, void* out,
                 long long m, long long k, CUstream_st* st);

// Row stride (elements) of a low-rank activation [m, r] (T, dT) in scratch: r rounded up to 16
// bytes, so that its rows are engine operands loaded with 16-byte copies.
long long low_rank_stride(DType dtype, long long r);

// Whether T and dT are kept as hi + lo 16-bit pairs (float16 / bfloat16; see cuda/gemm.cuh).
bool split_low_rank(DType dtype);

// ERR_UNSUPPORTED unless every size fits the engine's int indices.
void check_engine_sizes(const char* op, long long m, long long k, long long n, long long r);

}  // namespace lk::cuda_ops
