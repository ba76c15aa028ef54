// Fused LoRA linear layer: y = x·Wᵀ + bias + scale·((x ⊙ mask)·Aᵀ)·Bᵀ.
//
// Plain params struct passed by value to the CPU kernel and the CUDA launcher alike (compiled by
// g++ and nvcc). Strides are in elements and explicit so that views with padded rows work; the
// innermost dimension of every operand is contiguous. All floating operands share `dtype`
// (float32, float16 or bfloat16), except a float32 bias with 16-bit activations (bias_f32, added
// to the float32 sum before the single rounding); accumulation is float32.
//
// Napkin math (M=512, K=N=4096, r=16): base GEMM 2·M·N·K = 17.2 GFLOP; the low-rank path adds
// 2·M·r·(K+N) = 0.13 GFLOP (0.8%), so a fused kernel should cost within ~1% of the base GEMM.
#pragma once
#include <cstdint>

#include "../core/device.h"
#include "../core/dtype.h"

namespace lk {

struct LoraForwardParams {
  DType dtype = DType::Float32;
  int64_t m = 0;  // rows of x (all leading dimensions flattened)
  int64_t k = 0;  // input features
  int64_t n = 0;  // output features
  int64_t r = 0;  // LoRA rank; 0 means no low-rank path (a and b are ignored)

  const void* x = nullptr;        // [m, k], row stride x_stride
  int64_t x_stride = 0;
  const void* weight = nullptr;   // [n, k] (nn.Linear layout), row stride weight_stride
  int64_t weight_stride = 0;
  const void* bias = nullptr;     // [n] contiguous, or null
  bool bias_f32 = false;  // bias is float32 while dtype is float16/bfloat16 (the mixed-precision layout)
  const void* a = nullptr;        // [r, k] (PEFT lora_A.weight), row stride a_stride
  int64_t a_stride = 0;
  const void* b = nullptr;        // [n, r] (PEFT lora_B.weight), row stride b_stride
  int64_t b_stride = 0;
  const void* dropout_mask = nullptr;  // [m, k] like x (already holding 1/(1-p)), or null
  int64_t mask_stride = 0;
  float scale = 1.0f;

  // Per-output-column multiplier applied to x·Wᵀ + scale·T·Bᵀ before the bias is added:
  // y = column_scale ⊙ (x·Wᵀ + scale·T·Bᵀ) + bias. float32 [n], or null. DoRA uses it for m / ‖W + s·B·A‖.
  const float* column_scale = nullptr;

  void* y = nullptr;              // [m, n], row stride y_stride
  int64_t y_stride = 0;

  bool allow_tf32 = false;        // CUDA float32 only: TF32 tensor cores instead of exact FMA
};

// Backward of the forward above for a frozen weight (no gradWeight). With T = (x ⊙ mask)·Aᵀ:
//   gradB = scale·gᵀ·T                          [n, r]
//   dT    = scale·g·B                           [m, r]
//   gradA = dTᵀ·(x ⊙ mask)                      [r, k]
//   gradInput = g·W + mask ⊙ (dT·A)             [m, k]   (optional: null grad_input skips it)
// g = grad_output [m, n]. Gradients have p.dtype and are accumulated in float32.
struct LoraBackwardParams {
  DType dtype = DType::Float32;
  int64_t m = 0, k = 0, n = 0, r = 0;  // r ≥ 1

  const void* grad_output = nullptr;  // [m, n]
  int64_t grad_output_stride = 0;
  const void* x = nullptr;            // [m, k]
  int64_t x_stride = 0;
  const void* weight = nullptr;       // [n, k]
  int64_t weight_stride = 0;
  const void* a = nullptr;            // [r, k]
  int64_t a_stride = 0;
  const void* b = nullptr;            // [n, r]
  int64_t b_stride = 0;
  const void* dropout_mask = nullptr; // [m, k] or null
  int64_t mask_stride = 0;
  float scale = 1.0f;

  void* grad_input = nullptr;         // [m, k] or null
  int64_t grad_input_stride = 0;
  void* grad_a = nullptr;             // [r, k]
  int64_t grad_a_stride = 0;
  void* grad_b = nullptr;             // [n, r]
  int64_t grad_b_stride = 0;
};

// Checks what memory safety needs (non-null pointers, strides ≥ row length, float dtype) and
// runs on the given device. Throws lk::Error.
void lora_forward(const LoraForwardParams& params, Device device);
void lora_backward(const LoraBackwardParams& params, Device device);

}  // namespace lk
