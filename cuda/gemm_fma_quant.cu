// The GEMM engine's FMA kernels with a quantized B operand (NF4 / ternary, dequantized in the
// register-staged loads): float32 on every architecture, float16 and bfloat16 on sm_75.
// Instantiated here so that the engine's translation units compile in parallel (see
// cuda/gemm_kernels.cuh).
#include "gemm_kernels.cuh"

namespace lk::cuda_ops::gemm {

bool run_fma_quant(DType dtype, FmaTileId tile, Layout la, Layout lb, const Params& p, const Launch& l) {
  switch (dtype) {
    case DType::Float32: return run_fma_quant<F32>(tile, la, lb, p, l);
    case DType::Float16: return run_fma_quant<F16>(tile, la, lb, p, l);
    case DType::BFloat16: return run_fma_quant<BF16>(tile, la, lb, p, l);
    default: return false;
  }
}

}  // namespace lk::cuda_ops::gemm
