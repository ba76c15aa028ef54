// CUDA entry of the LoRA backward op (implemented in cuda/lora_backward.cu). Plain C++: it is
// included by csrc/ops/lora_linear.cpp, which g++ compiles, when LK_WITH_CUDA is defined.
#pragma once
#include "ops/lora_linear.h"

namespace lk::cuda_ops {

// gradA, gradB and (when p.grad_input is set) gradInput of the fused LoRA linear layer for a
// frozen weight on CUDA device `device`; synchronous. Pointers are device pointers. Deterministic
// (fixed-order reductions, no atomics). Throws lk::Error: ERR_DEVICE, ERR_UNSUPPORTED (a size the
// launch grid cannot cover), ERR_OUT_OF_MEMORY (scratch), ERR_CUDA.
void lora_backward(const LoraBackwardParams& p, int device);

}  // namespace lk::cuda_ops
