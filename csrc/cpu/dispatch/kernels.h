// The CPU kernel table. Each entry is implemented in a csrc/cpu/<op>.cpp that is compiled once
// per SIMD level into namespace lk::cpu::<level>; lk::cpu::<name>() calls the one for this CPU.
#pragma once
#include "ops/lora_linear.h"
#include "ops/lora_multi.h"
#include "ops/dora.h"
#include "ops/flash_lora.h"
#include "ops/linalg.h"
#include "ops/quant.h"
#include "ops/quant_activations.h"
#include "ops/quant_matmul.h"

#define LK_CPU_KERNEL_LIST(X) \
  X(lora_forward, (const LoraForwardParams& p), (p)) \
  X(lora_forward_multi, (const LoraMultiParams& p, const AdapterSegments& s), (p, s)) \
  X(dora_norms, (const DoraNormParams& p), (p)) \
  X(dora_columns, (const DoraColumnParams& p), (p)) \
  X(lora_backward, (const LoraBackwardParams& p), (p)) \
  X(nf4_quantize, (const Nf4QuantizeParams& p), (p)) \
  X(ternary_quantize, (const TernaryQuantizeParams& p), (p)) \
  X(dequantize, (const DequantizeParams& p), (p)) \
  X(quant_matmul, (const QuantMatmulParams& p), (p)) \
  X(quant_matmul_backward, (const QuantMatmulBackwardParams& p), (p)) \
  X(int8_quantize, (const Int8QuantizeParams& p), (p)) \
  X(int8_dequantize, (const Int8DequantizeParams& p), (p)) \
  X(svd, (const SvdParams& p), (p)) \
  X(qr, (const QrParams& p), (p)) \
  X(flash_lora_forward, (const FlashLoraParams& p), (p)) \
  X(flash_lora_backward, (const FlashLoraBackwardParams& p), (p))

#define LK_CPU_DECLARE_IN(level)                                   \
  namespace lk::cpu::level {                                       \
  LK_CPU_KERNEL_LIST(LK_CPU_DECLARE_ONE)                           \
  }
#define LK_CPU_DECLARE_ONE(name, params, args) void name params;

LK_CPU_DECLARE_IN(avx512)
LK_CPU_DECLARE_IN(avx2)
LK_CPU_DECLARE_IN(neon)
LK_CPU_DECLARE_IN(scalar)

namespace lk::cpu {
LK_CPU_KERNEL_LIST(LK_CPU_DECLARE_ONE)
}
