// A linear layer on a quantized base weight with a low-rank correction, in one pass over the
// packed weight (it is never dequantized to memory):
//
//   y = x·deq(W)ᵀ + bias + gate·scale·(x·Aᵀ)·Bᵀ        gate: a scalar, or float32 [n] per output
//
// and its backward for a frozen W (HGF / QLoRA training of the correction): with T = x·Aᵀ and
// g = grad_output, s = scale, G = gate (broadcast per column):
//   gradInput = g·deq(W) + ((G ⊙ g)·B)·s·A      gradA = s·((G ⊙ g)·B)ᵀ·x      gradB = s·(G ⊙ g)ᵀ·T
//   gradGate  = Σ_i g[i, ·] ⊙ s·(T·Bᵀ)[i, ·]   (summed over every column too for a scalar gate)
// Accumulation in float32; x, bias, a, b, y and the gradients share `dtype` (the bias may be float32
// with 16-bit activations: bias_f32).
#pragma once
#include <cstdint>

#include "../core/device.h"
#include "../core/dtype.h"
#include "quant.h"

namespace lk {

struct QuantMatmulParams {
  DType dtype = DType::Float32;
  int64_t m = 0;                  // rows of x (leading dimensions flattened)
  QuantWeight weight;             // [n, k]
  const void* x = nullptr;        // [m, k]
  int64_t x_stride = 0;
  const void* bias = nullptr;     // [n] or null
  bool bias_f32 = false;  // bias is float32 while dtype is float16/bfloat16 (the mixed-precision layout)
  int64_t r = 0;                  // 0: no low-rank term
  const void* a = nullptr;        // [r, k]
  int64_t a_stride = 0;
  const void* b = nullptr;        // [n, r]
  int64_t b_stride = 0;
  float scale = 1;
  float gate = 1;                       // used when gate_per_output is null
  const float* gate_per_output = nullptr;  // [n] float32
  void* y = nullptr;              // [m, n]
  int64_t y_stride = 0;
};

struct QuantMatmulBackwardParams {
  DType dtype = DType::Float32;
  int64_t m = 0;
  QuantWeight weight;                 // [n, k], frozen
  const void* grad_output = nullptr;  // [m, n]
  int64_t grad_output_stride = 0;
  const void* x = nullptr;            // [m, k]
  int64_t x_stride = 0;
  int64_t r = 0;                      // ≥ 1
  const void* a = nullptr;            // [r, k]
  int64_t a_stride = 0;
  const void* b = nullptr;            // [n, r]
  int64_t b_stride = 0;
  float scale = 1;
  float gate = 1;
  const float* gate_per_output = nullptr;  // [n] or null
  void* grad_input = nullptr;         // [m, k] or null (not wanted)
  int64_t grad_input_stride = 0;
  void* grad_a = nullptr;             // [r, k]
  int64_t grad_a_stride = 0;
  void* grad_b = nullptr;             // [n, r]
  int64_t grad_b_stride = 0;
  float* grad_gate = nullptr;         // float32 [1] (scalar gate) or [n] (per-output gate), or null
};

void quant_matmul(const QuantMatmulParams& params, Device device);
void quant_matmul_backward(const QuantMatmulBackwardParams& params, Device device);

}  // namespace lk
