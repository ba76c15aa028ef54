// CUDA entries of quant.matmul and its backward (implemented in cuda/quant_matmul.cu). Plain
// C++: included by csrc/ops/quant_matmul.cpp when LK_WITH_CUDA is defined. Enqueued on the
// device's stream; device pointers; throw lk::Error.
#pragma once
#include "ops/quant_matmul.h"

namespace lk::cuda_ops {

void quant_matmul(const QuantMatmulParams& p, int device);
void quant_matmul_backward(const QuantMatmulBackwardParams& p, int device);

}  // namespace lk::cuda_ops
