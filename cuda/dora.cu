// DoRA kernels on CUDA (see csrc/ops/dora.h for the op):
//
// 1. dora_norm_kernel: norm_n = ‖W_n + s·B_n·A‖₂, column_scale_n = m_n / norm_n.
//    A block owns 32 weight rows (8 warps × 4 rows); K goes by in slices of 32, one element per
//    lane. Per slice each lane loads its 4 W elements (coalesced: a warp reads 128 B of a row),
//    adds s·B_n·A over r in steps of 16 through shared memory (the A slice [16][32] is read by all
//    32 rows of the block; s·B [32][16] is a warp-wide broadcast), squares in registers, and the
//    warp sums its lanes with shuffles at the end. W + s·B·A is never stored.
//    Napkin math (K = N = 4096, r = 16, float32): 64 MiB of W read once (~20 µs at 3 TB/s);
//    2·N·K·r = 0.54 GFLOP on CUDA cores (~10 µs); A comes from L2 (N/32 blocks × 256 KiB).
// 2. dora_column_kernel (backward): g' = g ⊙ column_scale and gradMagnitude_n = Σ_i g·z / norm_n.
//    A block owns 32 columns (one per lane: coalesced rows) × 8 row lanes; the 8 partial sums of a
//    column are added in a fixed order (deterministic, no atomics). 3 passes over [m, n] values.
#include <climits>
#include <string>

#include "common.cuh"
#include "dora.cuh"

namespace lk::cuda_ops {
namespace {

struct NormArgs {
  const void* w;
  long long w_stride;
  const void* a;
  long long a_stride;
  const void* b;
  long long b_stride;
  const void* magnitude;  // [n], float32 when magnitude_f32, else the element type
  bool magnitude_f32;
  float* norm;            // [n] or null
  float* column_scale;    // [n]
  long long n;
  int k, r;
  float scale;
};

struct ColumnArgs {
  const void* g;
  long long g_stride;
  const void* z;
  long long z_stride;
  const float* norm;
  const float* column_scale;
  void* scaled;
  long long scaled_stride;
  void* grad_magnitude;   // [n], float32 when magnitude_f32, else the element type
  bool magnitude_f32;
  long long m, n;
};

constexpr int kNormRows = 32, kNormRowsPerWarp = 4, kNormKSlice = 32, kNormRankSlice = 16;
constexpr int kColumnCols = 32, kColumnRowLanes = 8;

template <class E>
__device__ __forceinline__ float load_e(const void* base, long long i) {
  return E::to_float(static_cast<const typename E::storage*>(base)[i]);
}

template <class E>
__global__ void __launch_bounds__(256) dora_norm_kernel(NormArgs p) {
#if defined(SIMT_DEVICE_PATH)
  constexpr int KC = kNormKSlice, RS = kNormRankSlice, RPW = kNormRowsPerWarp;
  __shared__ float As[RS][KC + 1];
  __shared__ float Bs[kNormRows][RS + 1];  // scale·B
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const long long n0 = static_cast<long long>(blockIdx.x) * kNormRows;
  float ss[RPW];
#pragma unroll
  for (int i = 0; i < RPW; ++i) ss[i] = 0.f;
  for (int k0 = 0; k0 < p.k; k0 += KC) {
    const int gk = k0 + lane;
    float v[RPW];
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
      const long long row = n0 + warp * RPW + i;
      v[i] = (row < p.n && gk < p.k) ? load_e<E>(p.w, row * p.w_stride + gk) : 0.f;
    }
    for (int r0 = 0; r0 < p.r; r0 += RS) {
      for (int e = threadIdx.x; e < RS * KC; e += 256) {
        const int rr = e / KC, kk = e % KC;
        As[rr][kk] = (r0 + rr < p.r && k0 + kk < p.k) ? load_e<E>(p.a, static_cast<long long>(r0 + rr) * p.a_stride + k0 + kk) : 0.f;
      }
      for (int e = threadIdx.x; e < kNormRows * RS; e += 256) {
        const int row = e / RS, rr = e % RS;
        Bs[row][rr] = (n0 + row < p.n && r0 + rr < p.r) ? p.scale * load_e<E>(p.b, (n0 + row) * p.b_stride + r0 + rr) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int rr = 0; rr < RS; ++rr) {
        const float av = As[rr][lane];
#pragma unroll
        for (int i = 0; i < RPW; ++i) v[i] = fmaf(Bs[warp * RPW + i][rr], av, v[i]);
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < RPW; ++i) ss[i] = fmaf(v[i], v[i], ss[i]);
  }
#pragma unroll
  for (int i = 0; i < RPW; ++i)
    for (int offset = 16; offset > 0; offset /= 2) ss[i] += __shfl_xor_sync(0xffffffffu, ss[i], offset);
  if (lane == 0) {
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
      const long long row = n0 + warp * RPW + i;
      if (row >= p.n) continue;
      const float norm = sqrtf(ss[i]);
      if (p.norm) p.norm[row] = norm;
      const float m = p.magnitude_f32 ? static_cast<const float*>(p.magnitude)[row] : load_e<E>(p.magnitude, row);
      p.column_scale[row] = m / norm;
    }
  }
#endif
}

template <class E>
__global__ void __launch_bounds__(256) dora_column_kernel(ColumnArgs p) {
#if defined(SIMT_DEVICE_PATH)
  __shared__ float partial[kColumnRowLanes][kColumnCols];
  const int tx = threadIdx.x % kColumnCols, ty = threadIdx.x / kColumnCols;
  const long long col = static_cast<long long>(blockIdx.x) * kColumnCols + tx;
  using S = typename E::storage;
  float acc = 0.f;
  if (col < p.n) {
    const float cs = p.column_scale[col];
    for (long long i = ty; i < p.m; i += kColumnRowLanes) {
      const float g = load_e<E>(p.g, i * p.g_stride + col);
      acc = fmaf(g, load_e<E>(p.z, i * p.z_stride + col), acc);
      static_cast<S*>(p.scaled)[i * p.scaled_stride + col] = E::from_float(g * cs);
    }
  }
  partial[ty][tx] = acc;
  __syncthreads();
  if (ty == 0 && col < p.n) {
    float sum = 0.f;
    for (int t = 0; t < kColumnRowLanes; ++t) sum += partial[t][tx];  // fixed order: deterministic
    const float value = sum / p.norm[col];
    if (p.magnitude_f32) static_cast<float*>(p.grad_magnitude)[col] = value;
    else static_cast<S*>(p.grad_magnitude)[col] = E::from_float(value);
  }
#endif
}

// Calls fn(E{}) for the element type of `dtype`.
template <class Fn>
void with_element(const char* op, DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::Float32: return fn(F32{});
    case DType::Float16: return fn(F16{});
    case DType::BFloat16: return fn(BF16{});
    default: break;
  }
  throw Error(ErrorCode::Unsupported, std::string(op) + " (cuda): no kernel for dtype=" + dtype_name(dtype));
}

}  // namespace

void dora_norms(const DoraNormParams& p, int device) {
  if (p.k > INT_MAX - kNormKSlice || p.r > INT_MAX - kNormRankSlice)
    throw Error(ErrorCode::Unsupported, "lora.dora (cuda): k and r must be below 2^31 - 32 (k=" + std::to_string(p.k) +
                                            ", r=" + std::to_string(p.r) + ")");
  if (p.n == 0) return;
  const cudaStream_t st = begin_op(device, "lora.dora");
  const NormArgs a{p.weight, p.weight_stride, p.a, p.a_stride, p.b, p.b_stride, p.magnitude,
                   p.magnitude_dtype == DType::Float32, p.norm, p.column_scale, p.n, static_cast<int>(p.k),
                   static_cast<int>(p.r), p.scale};
  const dim3 grid(static_cast<unsigned>(ceil_div<long long>(p.n, kNormRows)));
  with_element("lora.dora", p.dtype, [&](auto e) {
    simt_launch(dora_norm_kernel<decltype(e)>, grid, dim3(256), 0, st, a);
    LK_CUDA_CHECK_LAUNCH("dora_norm_kernel launch");
  });
}

void dora_columns(const DoraColumnParams& p, int device) {
  if (p.n == 0) return;
  const cudaStream_t st = begin_op(device, "lora.doraBackward");
  const ColumnArgs a{p.grad_output, p.grad_output_stride, p.z, p.z_stride, p.norm, p.column_scale, p.scaled_grad,
                     p.scaled_grad_stride, p.grad_magnitude, p.magnitude_dtype == DType::Float32, p.m, p.n};
  const dim3 grid(static_cast<unsigned>(ceil_div<long long>(p.n, kColumnCols)));
  with_element("lora.doraBackward", p.dtype, [&](auto e) {
    simt_launch(dora_column_kernel<decltype(e)>, grid, dim3(256), 0, st, a);
    LK_CUDA_CHECK_LAUNCH("dora_column_kernel launch");
  });
}

}  // namespace lk::cuda_ops
