// The GEMM engine's float16 mma.sync kernels with a quantized B operand (NF4 / ternary, dequantized on the
// way to the tensor cores), instantiated here so that the engine's translation units compile in
// parallel (see cuda/gemm_kernels.cuh).
#include "gemm_kernels.cuh"

namespace lk::cuda_ops::gemm {

bool run_mma_quant_f16(TileId tile, Layout la, Layout lb, const Params& p, const Launch& l) {
  return run_mma_quant<MmaF16>(tile, la, lb, p, l);
}

}  // namespace lk::cuda_ops::gemm
