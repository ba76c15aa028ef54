// The GEMM engine's kernels for float32 (exact FMA, or TF32 tensor cores when allowed), instantiated
// here so that the element types compile in parallel (see cuda/gemm_kernels.cuh).
#include "gemm_kernels.cuh"

namespace lk::cuda_ops::gemm {

bool run_f32(bool mma, int tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l) {
  return mma ? run_mma<MmaTF32>(static_cast<TileId>(tile), la, lb, row_norm, p, l)
             : run_fma<F32>(static_cast<FmaTileId>(tile), la, lb, row_norm, p, l);
}

}  // namespace lk::cuda_ops::gemm
