// Multi-adapter LoRA forward on CUDA (the math: csrc/ops/lora_multi.h).
//
// Layout of this file (ggml-cuda style): kernels → launchers → op entry.
//
// 0. Host: the ids and ranks (4·(M + L) bytes) are copied back and checked before anything reads
//    A or B through them (lk::group_rows_by_adapter), so a bad id is ERR_ARGUMENT, never an
//    out-of-bounds read.
// 1. lora_multi_shrink_kernel (BGMV shrink): T[t] = scale_id·x_t·A[id][:r]ᵀ, [M, rMax] float32
//    in scratch, zero past r and for base-only rows. One block per (row, 16 ranks): 16 lanes per
//    rank stride over K (coalesced runs of 16 elements of x and of the A row), then a fixed-order
//    reduction through shared memory (deterministic). 2·M·r·K FLOPs: 0.4% of the base GEMM.
// 2. lora_forward_per_row (cuda/lora_linear.cu): the fused forward's tiled SGEMM / tensor-core
//    GEMM for x·Wᵀ, whose epilogue adds T[t]·B[id]ᵀ for each row's own adapter (B values read
//    per row up to its rank, L1-cached) and the bias to the accumulator tile, and stores y once.
//    Shared with lora.forward, not copied; 2·M·r·N more FMAs in the epilogue (0.4%).
#include <string>
#include <vector>

#include "common.cuh"
#include "gemv.cuh"
#include "lora_linear.cuh"
#include "lora_multi.cuh"

namespace lk::cuda_ops {
namespace {

struct MultiArgs {
  const void* x;
  long long x_stride;
  const void* a;          // [L, rMax, k]
  const int* ranks;       // [L] or null (all rMax)
  const float* scales;    // [L]
  const int* ids;         // [m], checked on the host: -1 ≤ id < L
  float* t;               // [m, rMax]
  long long m;
  int k, r_max;
};

constexpr int kShrinkRanks = 16, kShrinkLanes = 16;  // 256 threads

template <class E>
__global__ void __launch_bounds__(kShrinkRanks * kShrinkLanes) lora_multi_shrink_kernel(MultiArgs p) {
#if defined(SIMT_DEVICE_PATH)
  __shared__ float partial[kShrinkRanks][kShrinkLanes + 1];
  using S = typename E::storage;
  const long long row = blockIdx.x;
  const int lane = threadIdx.x % kShrinkLanes, rr = threadIdx.x / kShrinkLanes;
  const int rank = blockIdx.y * kShrinkRanks + rr;
  const int id = p.ids[row];
  const int r = id < 0 ? 0 : (p.ranks ? p.ranks[id] : p.r_max);
  float acc = 0.f;
  if (rank < r) {
    const S* x = static_cast<const S*>(p.x) + row * p.x_stride;
    const S* a = static_cast<const S*>(p.a) + (static_cast<long long>(id) * p.r_max + rank) * p.k;
    for (int kk = lane; kk < p.k; kk += kShrinkLanes) acc = fmaf(E::to_float(x[kk]), E::to_float(a[kk]), acc);
  }
  partial[rr][lane] = acc;
  __syncthreads();
  if (lane == 0 && rank < p.r_max) {
    float sum = 0.f;
    for (int l = 0; l < kShrinkLanes; ++l) sum += partial[rr][l];  // fixed order
    p.t[row * p.r_max + rank] = rank < r ? p.scales[id] * sum : 0.f;
  }
#endif
}

}  // namespace

void lora_forward_multi(const LoraMultiParams& p, int device) {
  if (p.m == 0) return;
  const cudaStream_t st = begin_op(device, "lora.forwardMulti");
  if (p.m > 2147483647LL || p.r_max > 65535LL * kShrinkRanks || p.k > 2147483647LL)
    throw Error(ErrorCode::Unsupported, "lora.forwardMulti (cuda): sizes beyond the launch grid (m=" + std::to_string(p.m) +
                                            ", k=" + std::to_string(p.k) + ", rMax=" + std::to_string(p.r_max) + ")");

  // 0. Check the ids and ranks on the host before any kernel reads through them.
  std::vector<int32_t> ids(static_cast<size_t>(p.m)), ranks;
  LK_CUDA_CHECK(cudaMemcpyAsync(ids.data(), p.adapter_ids, ids.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
  if (p.ranks) {
    ranks.resize(static_cast<size_t>(p.num_adapters));
    LK_CUDA_CHECK(cudaMemcpyAsync(ranks.data(), p.ranks, ranks.size() * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
  }
  LK_CUDA_CHECK(cudaStreamSynchronize(st));  // the host reads the ids
  group_rows_by_adapter(ids.data(), p.m, p.ranks ? ranks.data() : nullptr, p.num_adapters, p.r_max, "lora.forwardMulti");
  if (p.m <= kGemvMaxRows) return lora_forward_multi_decode(p, device, st);  // decode (BGMV): cuda/gemv.cu

  // 1. shrink: T [m, rMax] in this thread's scratch (lora_forward_per_row below uses none).
  DeviceScratch t_buffer(device, static_cast<size_t>(p.m) * static_cast<size_t>(p.r_max) * sizeof(float));
  float* t = t_buffer.as<float>();
  const MultiArgs a{p.x, p.x_stride, p.a, p.ranks, p.scales, p.adapter_ids, t, p.m, static_cast<int>(p.k), static_cast<int>(p.r_max)};
  const dim3 grid(static_cast<unsigned>(p.m), static_cast<unsigned>(ceil_div<long long>(p.r_max, kShrinkRanks)));
  auto shrink = [&](auto tag) {
    simt_launch(lora_multi_shrink_kernel<decltype(tag)>, grid, dim3(kShrinkRanks * kShrinkLanes), 0, st, a);
    LK_CUDA_CHECK_LAUNCH("lora_multi_shrink_kernel launch");
  };
  switch (p.dtype) {
    case DType::Float32: shrink(F32{}); break;
    case DType::Float16: shrink(F16{}); break;
    case DType::BFloat16: shrink(BF16{}); break;
    default: throw Error(ErrorCode::Unsupported, std::string("lora.forwardMulti (cuda): no kernel for dtype=") + dtype_name(p.dtype));
  }

  // 2. x·Wᵀ + bias + T·B[id]ᵀ, the low-rank term in the GEMM's epilogue, one store of y.
  LoraForwardParams g;
  g.dtype = p.dtype;
  g.m = p.m; g.k = p.k; g.n = p.n; g.r = p.r_max;
  g.x = p.x; g.x_stride = p.x_stride;
  g.weight = p.weight; g.weight_stride = p.weight_stride;
  g.bias = p.bias;
  g.b = p.b; g.b_stride = p.r_max;
  g.y = p.y; g.y_stride = p.y_stride;
  lora_forward_per_row(g, t, PerRowAdapters{p.adapter_ids, p.ranks, p.n * p.r_max}, device);
}

}  // namespace lk::cuda_ops
