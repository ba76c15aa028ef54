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

}  // namespace lk::cuda_ops
