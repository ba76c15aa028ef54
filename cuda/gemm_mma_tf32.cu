// The GEMM engine's TF32 mma.sync kernels (float32 operands, when allowTf32), instantiated here so that the engine's
// translation units compile in parallel (see cuda/gemm_kernels.cuh).
#include "gemm_kernels.cuh"

namespace lk::cuda_ops::gemm {

bool run_mma_tf32(TileId tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l) {
  return run_mma<MmaTF32>(tile, la, lb, row_norm, p, l);
}

}  // namespace lk::cuda_ops::gemm
