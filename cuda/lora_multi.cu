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
// 2. The base GEMM with bias: cuda_ops::lora_forward with r = 0 (the fused forward's tiled
//    SGEMM / tensor-core kernels, shared, not copied).
// 3. lora_multi_expand_kernel (BGMV expand): y_t += T[t]·B[id][:, :r]ᵀ, one block per (row, 128
//    columns), T row staged in shared memory; each output element is owned by one thread (no
//    atomics, deterministic). Base-only rows leave y as the GEMM wrote it. For float16/bfloat16
//    this re-reads y, so the base product is rounded to the dtype once before the low-rank term
//    is added (one extra half-ulp, well inside the dtype's tolerance); 2·M·r·N FLOPs + M·N·2
//    element reads/writes.
#include <string>
#include <vector>

#include "common.cuh"
#include "lora_linear.cuh"
#include "lora_multi.cuh"

namespace lk::cuda_ops {
namespace {

struct MultiArgs {
  const void* x;
  long long x_stride;
  const void* a;          // [L, rMax, k]
  const void* b;          // [L, n, rMax]
  const int* ranks;       // [L] or null (all rMax)
  const float* scales;    // [L]
  const int* ids;         // [m], checked on the host: -1 ≤ id < L
  float* t;               // [m, rMax]
  void* y;
  long long y_stride;
  long long m;
  int k, n, r_max;
};

constexpr int kShrinkRanks = 16, kShrinkLanes = 16;  // 256 threads
constexpr int kExpandCols = 128;

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

template <class E>
__global__ void __launch_bounds__(kExpandCols) lora_multi_expand_kernel(MultiArgs p) {
#if defined(SIMT_DEVICE_PATH)
  SIMT_DYNAMIC_SHARED(float, t_row);  // [rMax]
  using S = typename E::storage;
  const long long row = blockIdx.x;
  const int id = p.ids[row];
  if (id < 0) return;  // uniform over the block, before any barrier
  const int r = p.ranks ? p.ranks[id] : p.r_max;
  for (int i = threadIdx.x; i < r; i += kExpandCols) t_row[i] = p.t[row * p.r_max + i];
  __syncthreads();
  const int col = blockIdx.y * kExpandCols + threadIdx.x;
  if (col >= p.n) return;
  const S* b = static_cast<const S*>(p.b) + (static_cast<long long>(id) * p.n + col) * p.r_max;
  float acc = 0.f;
  for (int i = 0; i < r; ++i) acc = fmaf(t_row[i], E::to_float(b[i]), acc);
  S* y = static_cast<S*>(p.y) + row * p.y_stride + col;
  *y = E::from_float(E::to_float(*y) + acc);
#endif
}

}  // namespace

void lora_forward_multi(const LoraMultiParams& p, int device) {
  if (p.m == 0) return;
  use_device(device);
  if (p.m > 2147483647LL || p.r_max > 65535LL * kShrinkRanks || p.k > 2147483647LL || p.n > 65535LL * kExpandCols)
    throw Error(ErrorCode::Unsupported, "lora.forwardMulti (cuda): sizes beyond the launch grid (m=" + std::to_string(p.m) +
                                            ", n=" + std::to_string(p.n) + ", rMax=" + std::to_string(p.r_max) + ")");

  // 0. Check the ids and ranks on the host before any kernel reads through them.
  std::vector<int32_t> ids(static_cast<size_t>(p.m)), ranks;
  LK_CUDA_CHECK(cudaMemcpy(ids.data(), p.adapter_ids, ids.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
  if (p.ranks) {
    ranks.resize(static_cast<size_t>(p.num_adapters));
    LK_CUDA_CHECK(cudaMemcpy(ranks.data(), p.ranks, ranks.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
  }
  group_rows_by_adapter(ids.data(), p.m, p.ranks ? ranks.data() : nullptr, p.num_adapters, p.r_max, "lora.forwardMulti");

  MultiArgs a{p.x, p.x_stride, p.a, p.b, p.ranks, p.scales, p.adapter_ids, nullptr, p.y, p.y_stride, p.m,
              static_cast<int>(p.k), static_cast<int>(p.n), static_cast<int>(p.r_max)};
  a.t = static_cast<float*>(scratch(device, static_cast<size_t>(p.m) * static_cast<size_t>(p.r_max) * sizeof(float)));

  const dim3 shrink_grid(static_cast<unsigned>(p.m), static_cast<unsigned>(ceil_div<long long>(p.r_max, kShrinkRanks)));
  const dim3 expand_grid(static_cast<unsigned>(p.m), static_cast<unsigned>(ceil_div<long long>(p.n, kExpandCols)));
  const size_t expand_smem = static_cast<size_t>(p.r_max) * sizeof(float);
  auto run_kernels = [&](auto tag, bool expand) {
    using E = decltype(tag);
    if (!expand) {
      simt_launch(lora_multi_shrink_kernel<E>, shrink_grid, dim3(kShrinkRanks * kShrinkLanes), 0, a);
      LK_CUDA_CHECK_LAUNCH("lora_multi_shrink_kernel launch");
    } else {
      simt_launch(lora_multi_expand_kernel<E>, expand_grid, dim3(kExpandCols), expand_smem, a);
      LK_CUDA_CHECK_LAUNCH("lora_multi_expand_kernel launch");
    }
  };
  auto for_dtype = [&](bool expand) {
    switch (p.dtype) {
      case DType::Float32: return run_kernels(F32{}, expand);
      case DType::Float16: return run_kernels(F16{}, expand);
      case DType::BFloat16: return run_kernels(BF16{}, expand);
      default: throw Error(ErrorCode::Unsupported, std::string("lora.forwardMulti (cuda): no kernel for dtype=") + dtype_name(p.dtype));
    }
  };

  // 1. shrink (T lives in this thread's scratch; the base GEMM below has r = 0 and uses none).
  for_dtype(false);
  // 2. base GEMM + bias, written to y.
  LoraForwardParams base;
  base.dtype = p.dtype;
  base.m = p.m; base.k = p.k; base.n = p.n; base.r = 0;
  base.x = p.x; base.x_stride = p.x_stride;
  base.weight = p.weight; base.weight_stride = p.weight_stride;
  base.bias = p.bias;
  base.y = p.y; base.y_stride = p.y_stride;
  lora_forward(base, device);
  // 3. expand into y.
  for_dtype(true);
  LK_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace lk::cuda_ops
