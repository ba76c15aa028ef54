// DoRA kernels on CUDA (see csrc/ops/dora.h for the op):
//
// 1. The norms: norm_n = ‖W_n + s·B_n·A‖₂ on the GEMM engine (cuda/gemm.cuh) with its row-norm
//    epilogue: the mainloop forms the [n, k] tile of B·A on the tensor cores (k = r: r/16 k-steps,
//    B K-major, A N-major), the epilogue adds s·(B·A) to the W tile it reads once from memory,
//    squares and sums each row; W + s·B·A is never stored. dora_scale_kernel then takes the square
//    root and column_scale_n = m_n / norm_n.
//    Napkin math (K = N = 4096, r = 16, bf16, H200): W is read once (32 MiB, ~8 µs at ~4 TB/s);
//    the 0.5 GFLOP of B·A are ~1 µs of tensor-core time, and stay small at r = 128 (4.3 GFLOP),
//    where a CUDA-core loop (r FMAs per W element) would take ~70 µs.
// 2. dora_column_kernel (backward): g' = g ⊙ column_scale and gradMagnitude_n = Σ_i g·z / norm_n.
//    A block owns 32 columns (one per lane: coalesced rows) × 8 row lanes; the 8 partial sums of a
//    column are added in a fixed order (deterministic, no atomics). 3 passes over [m, n] values.
#include <climits>
#include <string>

#include "common.cuh"
#include "dora.cuh"
#include "gemm.cuh"
#include "lora_linear.cuh"

namespace lk::cuda_ops {
namespace {

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

constexpr int kColumnCols = 32, kColumnRowLanes = 8;

template <class E>
__device__ __forceinline__ float load_e(const void* base, long long i) {
  return E::to_float(static_cast<const typename E::storage*>(base)[i]);
}

// norm_n = √sumsq_n; column_scale_n = m_n / norm_n (m float32 or the dtype).
template <class E>
__global__ void __launch_bounds__(256) dora_scale_kernel(const float* sumsq, const void* magnitude, bool magnitude_f32,
                                                         float* norm, float* column_scale, long long n) {
#if defined(SIMT_DEVICE_PATH)
  const long long row = static_cast<long long>(blockIdx.x) * 256 + threadIdx.x;
  if (row >= n) return;
  const float value = sqrtf(sumsq[row]);
  if (norm) norm[row] = value;
  const float m = magnitude_f32 ? static_cast<const float*>(magnitude)[row] : load_e<E>(magnitude, row);
  column_scale[row] = m / value;
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


}  // namespace

void dora_norms(const DoraNormParams& p, int device) {
  if (p.n == 0) return;
  const cudaStream_t st = begin_op(device, "lora.dora");
  check_engine_sizes("lora.dora", p.n, p.r, p.k, 0);
  DeviceScratch sumsq(device, static_cast<size_t>(p.n) * sizeof(float));
  // sumsq_n = Σ_c (s·(B·A)[n, c] + W[n, c])²: rows = output features, columns = input features,
  // reduction over the rank; B (n, j) = b[n·b_stride + j] K-major, A (c, j) = a[j·a_stride + c] N-major.
  gemm::Problem q;
  q.dtype = p.dtype;
  q.a_layout = gemm::Layout::KMajor;
  q.b_layout = gemm::Layout::MNMajor;
  q.m = static_cast<int>(p.n);
  q.n = static_cast<int>(p.k);
  q.seg[0] = {p.b, p.a, p.b_stride, p.a_stride, static_cast<int>(p.r), 0, static_cast<int>(p.n), INT_MAX, false};
  q.num_segments = 1;
  q.epi.alpha = p.scale;
  q.row_norm = {p.weight, p.weight_stride, sumsq.as<float>()};
  q.what = "lora.dora";
  gemm::run(q, device, st);
  const dim3 grid(static_cast<unsigned>(ceil_div<long long>(p.n, 256)));
  with_element(p.dtype, "lora.dora", [&](auto e) {
    simt_launch(dora_scale_kernel<decltype(e)>, grid, dim3(256), 0, st, static_cast<const float*>(sumsq.as<float>()), p.magnitude,
                p.magnitude_dtype == DType::Float32, p.norm, p.column_scale, static_cast<long long>(p.n));
    LK_CUDA_CHECK_LAUNCH("dora_scale_kernel launch");
  });
}

void dora_columns(const DoraColumnParams& p, int device) {
  if (p.n == 0) return;
  const cudaStream_t st = begin_op(device, "lora.doraBackward");
  const ColumnArgs a{p.grad_output, p.grad_output_stride, p.z, p.z_stride, p.norm, p.column_scale, p.scaled_grad,
                     p.scaled_grad_stride, p.grad_magnitude, p.magnitude_dtype == DType::Float32, p.m, p.n};
  const dim3 grid(static_cast<unsigned>(ceil_div<long long>(p.n, kColumnCols)));
  with_element(p.dtype, "lora.doraBackward", [&](auto e) {
    simt_launch(dora_column_kernel<decltype(e)>, grid, dim3(256), 0, st, a);
    LK_CUDA_CHECK_LAUNCH("dora_column_kernel launch");
  });
}

}  // namespace lk::cuda_ops
