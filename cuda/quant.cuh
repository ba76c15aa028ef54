// CUDA entries of the quantize / dequantize ops (implemented in cuda/quant.cu). Plain C++:
// included by csrc/ops/quant.cpp when LK_WITH_CUDA is defined. Enqueued on the device's stream;
// device pointers; throw lk::Error.
#pragma once
#include "ops/quant.h"

namespace lk::cuda_ops {

void nf4_quantize(const Nf4QuantizeParams& p, int device);
void ternary_quantize(const TernaryQuantizeParams& p, int device);
void dequantize(const DequantizeParams& p, int device);

}  // namespace lk::cuda_ops
