// Fused LoRA backward on the CPU for a frozen weight (see LoraBackwardParams in ops/lora_linear.h).
// Compiled once per SIMD level into lk::cpu::LK_SIMD_NS. The engine, its phases, napkin math and
// measurements are in cpu/lora_backward_engine.h (shared with quant.matmulBackward); here W's
// micro-panels are widened copies of its rows and there is no gate.
#include "cpu/dispatch/kernels.h"
#include "cpu/lora_backward_engine.h"

namespace lk::cpu::LK_SIMD_NS {
namespace {

template <DType T>
struct WeightRowsOf {
  const LoraBackwardParams& p;
  void operator()(const RowPanel& panel, float* dst) const { pack_row_panel<T>(p.weight, p.weight_stride, panel, dst); }
};

}  // namespace

void lora_backward(const LoraBackwardParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) {
    constexpr DType T = decltype(tag)::value;
    lora_backward_fused<T>(p, WeightRowsOf<T>{p}, LowRankGate{});
  });
}

}  // namespace lk::cpu::LK_SIMD_NS
