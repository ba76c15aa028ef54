// CUDA entries of int8 per-token activation quantization (implemented in
// cuda/quant_activations.cu). Plain C++: included by csrc/ops/quant_activations.cpp when
// LK_WITH_CUDA is defined. Enqueued on the device's stream; device pointers; throw lk::Error.
#pragma once
#include "ops/quant_activations.h"

namespace lk::cuda_ops {

void int8_quantize(const Int8QuantizeParams& p, int device);
void int8_dequantize(const Int8DequantizeParams& p, int device);

}  // namespace lk::cuda_ops
