// CUDA entry of the multi-adapter LoRA op (implemented in cuda/lora_multi.cu). Plain C++: it is
// included by csrc/ops/lora_multi.cpp, which g++ compiles, when LK_WITH_CUDA is defined.
#pragma once
#include "ops/lora_multi.h"

namespace lk::cuda_ops {

// y_t = x_t·Wᵀ + bias + scales[id]·(x_t·A[id][:r]ᵀ)·B[id][:, :r]ᵀ on CUDA device `device`;
// synchronous. Every pointer (ids, ranks, scales included) is a device pointer. The ids and ranks
// are copied to the host and checked before any kernel reads through them: ERR_ARGUMENT names the
// first bad row / adapter. Other errors as cuda_ops::lora_forward.
void lora_forward_multi(const LoraMultiParams& p, int device);

}  // namespace lk::cuda_ops
