// CUDA entries of the DoRA kernels (implemented in cuda/dora.cu). Plain C++: included by
// csrc/ops/dora.cpp, which g++ compiles, when LK_WITH_CUDA is defined.
#pragma once
#include "ops/dora.h"

namespace lk::cuda_ops {

// Synchronous (the default stream is synchronized before returning); device pointers. Throw
// lk::Error: ERR_DEVICE (no such device), ERR_UNSUPPORTED (sizes beyond int), ERR_CUDA.
void dora_norms(const DoraNormParams& p, int device);
void dora_columns(const DoraColumnParams& p, int device);

}  // namespace lk::cuda_ops
