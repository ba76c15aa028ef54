// The GEMM engine's FMA kernels for float16 and bfloat16 (sm_75: no cp.async, no bf16 mma.sync), instantiated here so that the engine's
// translation units compile in parallel (see cuda/gemm_kernels.cuh).
#include "gemm_kernels.cuh"

namespace lk::cuda_ops::gemm {

bool run_fma_half(DType dtype, FmaTileId tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l) {
  return dtype == DType::Float16 ? run_fma<F16>(tile, la, lb, row_norm, p, l) : run_fma<BF16>(tile, la, lb, row_norm, p, l);
}

}  // namespace lk::cuda_ops::gemm
