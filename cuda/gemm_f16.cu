// The GEMM engine's kernels for float16 (mma.sync, or FMA on sm_75), instantiated
// here so that the element types compile in parallel (see cuda/gemm_kernels.cuh).
#include "gemm_kernels.cuh"

namespace lk::cuda_ops::gemm {

bool run_f16(bool mma, int tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l) {
  return mma ? run_mma<MmaF16>(static_cast<TileId>(tile), la, lb, row_norm, p, l)
             : run_fma<F16>(static_cast<FmaTileId>(tile), la, lb, row_norm, p, l);
}

}  // namespace lk::cuda_ops::gemm
