// The GEMM engine's exact float32 FMA kernels, instantiated here so that the engine's
// translation units compile in parallel (see cuda/gemm_kernels.cuh).
#include "gemm_kernels.cuh"

namespace lk::cuda_ops::gemm {

bool run_fma_f32(FmaTileId tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l) {
  return run_fma<F32>(tile, la, lb, row_norm, p, l);
}

}  // namespace lk::cuda_ops::gemm
