// LoRA backward on CUDA for a frozen weight (see LoraBackwardParams in ops/lora_linear.h).
//
// With g = grad_output [m, n], xm = x ⊙ mask, all float32 accumulation:
//   1. T  = xm·Aᵀ              [m, r] float32 scratch
//   2. dT = scale·g·B          [m, r] float32 scratch
//   3. gradB = scale·gᵀ·T      [n, r]
//   4. gradA = dTᵀ·xm          [r, k]
//   5. gradInput = g·W + mask ⊙ (dT·A)   [m, k]: the low-rank term is a second, r-deep product
//      accumulated into the same output tile and added before the one store.
// Every step is one kernel, strided_gemm_kernel: C = α·L·R (+ mask ⊙ L2·R2) where each operand is
// addressed through two element strides, so transposed operands (gᵀ, Bᵀ, dTᵀ …) are read in
// place, with an optional elementwise mask on an operand (xm) — no transposed copies are made.
// 64×64 output tiles, 256 threads × 4×4 outputs, the reduction staged through shared memory in
// slices of 16; each operand tile is loaded along whichever of its two dimensions is contiguous,
// so global reads stay coalesced for every layout above.
//
// The reductions over m (gradA, gradB) have few output tiles (r·n/4096 blocks): the reduction is
// then split over grid.z into float32 partial sums [splits][M, N] that reduce_splits_kernel adds in
// split order. Fixed order everywhere, no atomics: the result is deterministic.
//
// Napkin math (m=512, K=N=4096, r=16): step 5 is 17.2 GFLOP of the 17.5 total; steps 1-4 each
// 67 MFLOP. This is exact float32 FMA on CUDA cores (no tensor cores yet): correct on every GPU
// and shape; the forward's WMMA path is where a tensor-core version would come from.
#include <algorithm>
#include <climits>
#include <string>

#include "common.cuh"
#include "lora_backward.cuh"

namespace lk::cuda_ops {
namespace {

// Element (index, kk) of an operand is p[index·si + kk·sk] (index: the output row for a left
// operand, the output column for a right one; kk: the reduction index), times
// mask[index·msi + kk·msk] when mask is set (mask in the op's dtype).
struct Operand {
  const void* p;
  long long si, sk;
  const void* mask;
  long long msi, msk;
};

struct StridedGemm {
  Operand l, r;
  long long M, N, K;
  long long k_per_split;  // grid.z = splits; split z reduces kk in [z·k_per_split, (z+1)·k_per_split)
  float alpha;
  // Optional second product (l2.p non-null, never split): + omask(i, j)·Σ_{t<K2} l2(i, t)·r2(t, j);
  // l2 is float32, r2 and omask are in the op's dtype.
  Operand l2, r2;
  long long K2;
  const void* omask;
  long long omask_stride;
  void* c;                // splits = 1: C[i·c_stride + j] in OT; splits > 1: float32 [z][M][N]
  long long c_stride;
};

constexpr int kBM = 64, kBN = 64, kBK = 16, kNT = 256, kTM = kBM / 16, kTN = kBN / 16;
constexpr int kLD = kBM + 4;  // smem row: one reduction index, kBM (= kBN) output indices

template <class ET>
__device__ __forceinline__ float load_elem(const void* base, long long i) {
  return ET::to_float(static_cast<const typename ET::storage*>(base)[i]);
}

#if defined(SIMT_DEVICE_PATH)
// s[kk·kLD + idx] = operand(index0 + idx, k0 + kk), zero outside [0, limit) × [k0, k_end).
template <class ET, class E>
__device__ __forceinline__ void load_operand_tile(const Operand& o, long long index0, long long limit, long long k0,
                                                  long long k_end, float* s) {
  const bool along_k = o.sk == 1;  // uniform across the block
  for (int e = threadIdx.x; e < kBM * kBK; e += kNT) {
    const int idx = along_k ? e / kBK : e % kBM;
    const int kk = along_k ? e % kBK : e / kBM;
    const long long gi = index0 + idx, gk = k0 + kk;
    float v = 0.f;
    if (gi < limit && gk < k_end) {
      v = load_elem<ET>(o.p, gi * o.si + gk * o.sk);
      if (o.mask) v *= load_elem<E>(o.mask, gi * o.msi + gk * o.msk);
    }
    s[kk * kLD + idx] = v;
  }
}

// c[i][j] += Σ_{kk in [k_begin, k_end)} l(m0 + ty + 16i, kk)·r(n0 + tx + 16j, kk).
template <class E, class LT, class RT>
__device__ __forceinline__ void accumulate_product(const Operand& l, const Operand& r, long long M, long long N,
                                                   long long k_begin, long long k_end, long long m0, long long n0,
                                                   float* Ls, float* Rs, float (&c)[kTM][kTN]) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  for (long long k0 = k_begin; k0 < k_end; k0 += kBK) {
    load_operand_tile<LT, E>(l, m0, M, k0, k_end, Ls);
    load_operand_tile<RT, E>(r, n0, N, k0, k_end, Rs);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; ++kk) {
      float lv[kTM], rv[kTN];
#pragma unroll
      for (int i = 0; i < kTM; ++i) lv[i] = Ls[kk * kLD + ty + i * 16];
#pragma unroll
      for (int j = 0; j < kTN; ++j) rv[j] = Rs[kk * kLD + tx + j * 16];
#pragma unroll
      for (int i = 0; i < kTM; ++i)
#pragma unroll
        for (int j = 0; j < kTN; ++j) c[i][j] = fmaf(lv[i], rv[j], c[i][j]);
    }
    __syncthreads();
  }
}
#endif  // SIMT_DEVICE_PATH

// E: the op's dtype; LT / RT / OT: the left operand, right operand and output types (E or F32).
template <class E, class LT, class RT, class OT>
__global__ void __launch_bounds__(kNT) strided_gemm_kernel(StridedGemm p) {
#if defined(SIMT_DEVICE_PATH)
  __shared__ float Ls[kBK * kLD];
  __shared__ float Rs[kBK * kLD];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const long long m0 = static_cast<long long>(blockIdx.x) * kBM, n0 = static_cast<long long>(blockIdx.y) * kBN;
  const long long k_begin = static_cast<long long>(blockIdx.z) * p.k_per_split;
  const long long k_end = k_begin + p.k_per_split < p.K ? k_begin + p.k_per_split : p.K;
  float c[kTM][kTN];
#pragma unroll
  for (int i = 0; i < kTM; ++i)
#pragma unroll
    for (int j = 0; j < kTN; ++j) c[i][j] = 0.f;
  accumulate_product<E, LT, RT>(p.l, p.r, p.M, p.N, k_begin, k_end, m0, n0, Ls, Rs, c);
#pragma unroll
  for (int i = 0; i < kTM; ++i)
#pragma unroll
    for (int j = 0; j < kTN; ++j) c[i][j] *= p.alpha;

  if (p.l2.p) {
    float low[kTM][kTN];
#pragma unroll
    for (int i = 0; i < kTM; ++i)
#pragma unroll
      for (int j = 0; j < kTN; ++j) low[i][j] = 0.f;
    accumulate_product<E, F32, E>(p.l2, p.r2, p.M, p.N, 0, p.K2, m0, n0, Ls, Rs, low);
#pragma unroll
    for (int i = 0; i < kTM; ++i)
#pragma unroll
      for (int j = 0; j < kTN; ++j) {
        const long long gi = m0 + ty + i * 16, gj = n0 + tx + j * 16;
        const float mask = p.omask && gi < p.M && gj < p.N ? load_elem<E>(p.omask, gi * p.omask_stride + gj) : 1.f;
        c[i][j] = fmaf(mask, low[i][j], c[i][j]);
      }
  }

  const bool split = gridDim.z > 1;
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const long long gi = m0 + ty + i * 16;
    if (gi >= p.M) continue;
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const long long gj = n0 + tx + j * 16;
      if (gj >= p.N) continue;
      if (split) static_cast<float*>(p.c)[(blockIdx.z * p.M + gi) * p.N + gj] = c[i][j];
      else static_cast<typename OT::storage*>(p.c)[gi * p.c_stride + gj] = OT::from_float(c[i][j]);
    }
  }
#endif
}

// out[i·stride + j] = Σ_z partial[z][i][j], z in order.
template <class OT>
__global__ void __launch_bounds__(256) reduce_splits_kernel(const float* partial, int splits, long long M, long long N,
                                                            void* out, long long stride) {
#if defined(SIMT_DEVICE_PATH)
  const long long e = static_cast<long long>(blockIdx.x) * 256 + threadIdx.x;
  if (e >= M * N) return;
  float s = 0.f;
  for (int z = 0; z < splits; ++z) s += partial[z * M * N + e];
  static_cast<typename OT::storage*>(out)[(e / N) * stride + e % N] = OT::from_float(s);
#endif
}

// ---- launchers -------------------------------------------------------------------------------------
// Splits of the reduction for an M×N output: enough blocks for two per SM, ≥ 256 reduction
// steps per split, at most 64.
int plan_splits(long long M, long long N, long long K, int sm_count) {
  const long long tiles = ceil_div<long long>(M, kBM) * ceil_div<long long>(N, kBN);
  if (tiles == 0) return 1;  // nothing to launch (m = 0)
  const long long want = ceil_div<long long>(2LL * sm_count, tiles);
  return static_cast<int>(std::max<long long>(1, std::min({want, K / 256, 64LL})));
}

template <class E, class LT, class RT, class OT>
void launch(StridedGemm g, int splits, float* partial, cudaStream_t st) {
  if (g.M == 0 || g.N == 0) return;
  if (ceil_div<long long>(g.M, kBM) > INT_MAX || ceil_div<long long>(g.N, kBN) > 65535)
    throw Error(ErrorCode::Unsupported, "lora.backward (cuda): an output of " + std::to_string(g.M) + "×" +
                                            std::to_string(g.N) + " exceeds the launch grid");
  g.k_per_split = std::max<long long>(1, splits > 1 ? ceil_div<long long>(ceil_div<long long>(g.K, splits), kBK) * kBK : g.K);
  if (splits > 1) splits = static_cast<int>(ceil_div<long long>(g.K, g.k_per_split));
  void* out = g.c;
  const long long out_stride = g.c_stride;
  if (splits > 1) g.c = partial;
  const dim3 grid(static_cast<unsigned>(ceil_div<long long>(g.M, kBM)), static_cast<unsigned>(ceil_div<long long>(g.N, kBN)),
                  static_cast<unsigned>(splits));
  simt_launch(strided_gemm_kernel<E, LT, RT, OT>, grid, dim3(kNT), 0, st, g);
  LK_CUDA_CHECK_LAUNCH("strided_gemm_kernel launch");
  if (splits > 1) {
    simt_launch(reduce_splits_kernel<OT>, dim3(static_cast<unsigned>(ceil_div<long long>(g.M * g.N, 256))), dim3(256), 0, st,
                static_cast<const float*>(partial), splits, g.M, g.N, out, out_stride);
    LK_CUDA_CHECK_LAUNCH("reduce_splits_kernel launch");
  }
}

template <class E>
void backward(const LoraBackwardParams& p, int device, int sm_count, cudaStream_t st) {
  const long long m = p.m, n = p.n, k = p.k, r = p.r;
  const int split_t = plan_splits(m, r, k, sm_count), split_dt = plan_splits(m, r, n, sm_count);
  const int split_b = plan_splits(n, r, m, sm_count), split_a = plan_splits(r, k, m, sm_count);
  const long long low_rank = m * r;
  const long long partial = std::max({split_t * low_rank, split_dt * low_rank, split_b * n * r, split_a * r * k});
  DeviceScratch buffer(device, static_cast<size_t>(2 * low_rank + partial + 1) * sizeof(float));
  float* t = buffer.as<float>();
  float* dt = t + low_rank;
  float* part = dt + low_rank;
  const Operand none{nullptr, 0, 0, nullptr, 0, 0};
  const Operand g_rows{p.grad_output, p.grad_output_stride, 1, nullptr, 0, 0};  // g(i, j)
  const Operand g_cols{p.grad_output, 1, p.grad_output_stride, nullptr, 0, 0};  // gᵀ(j, i)
  const Operand xm_cols{p.x, 1, p.x_stride, p.dropout_mask, 1, p.mask_stride};  // xm(i, c) as right operand

  StridedGemm s{};
  s.alpha = 1.f;
  s.l2 = none;
  s.r2 = none;
  // 1. T = xm·Aᵀ
  s.l = {p.x, p.x_stride, 1, p.dropout_mask, p.mask_stride, 1};
  s.r = {p.a, p.a_stride, 1, nullptr, 0, 0};
  s.M = m; s.N = r; s.K = k; s.c = t; s.c_stride = r;
  launch<E, E, E, F32>(s, split_t, part, st);
  // 2. dT = scale·g·B
  s.l = g_rows;
  s.r = {p.b, 1, p.b_stride, nullptr, 0, 0};
  s.K = n; s.alpha = p.scale; s.c = dt;
  launch<E, E, E, F32>(s, split_dt, part, st);
  // 3. gradB = scale·gᵀ·T  (reduction over the m rows)
  s.l = g_cols;
  s.r = {t, 1, r, nullptr, 0, 0};
  s.M = n; s.N = r; s.K = m; s.c = p.grad_b; s.c_stride = p.grad_b_stride;
  launch<E, E, F32, E>(s, split_b, part, st);
  // 4. gradA = dTᵀ·xm
  s.l = {dt, 1, r, nullptr, 0, 0};
  s.r = xm_cols;
  s.M = r; s.N = k; s.K = m; s.alpha = 1.f; s.c = p.grad_a; s.c_stride = p.grad_a_stride;
  launch<E, F32, E, E>(s, split_a, part, st);
  // 5. gradInput = g·W + mask ⊙ (dT·A)
  if (p.grad_input) {
    s.l = g_rows;
    s.r = {p.weight, 1, p.weight_stride, nullptr, 0, 0};
    s.M = m; s.N = k; s.K = n;
    s.l2 = {dt, r, 1, nullptr, 0, 0};
    s.r2 = {p.a, 1, p.a_stride, nullptr, 0, 0};
    s.K2 = r;
    s.omask = p.dropout_mask;
    s.omask_stride = p.mask_stride;
    s.c = p.grad_input; s.c_stride = p.grad_input_stride;
    launch<E, E, E, E>(s, 1, nullptr, st);
  }
}

}  // namespace

void lora_backward(const LoraBackwardParams& p, int device) {
  const cudaStream_t st = begin_op(device, "lora.backward");
  const int sm_count = device_props(device).sm_count;
  switch (p.dtype) {
    case DType::Float32: return backward<F32>(p, device, sm_count, st);
    case DType::Float16: return backward<F16>(p, device, sm_count, st);
    case DType::BFloat16: return backward<BF16>(p, device, sm_count, st);
    default: break;
  }
  throw Error(ErrorCode::Unsupported, std::string("lora.backward (cuda): no kernel for dtype=") + dtype_name(p.dtype));
}

}  // namespace lk::cuda_ops
