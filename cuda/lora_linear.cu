// Fused LoRA linear forward on CUDA: y = x·Wᵀ + bias + scale·((x ⊙ mask)·Aᵀ)·Bᵀ, on the GEMM engine
// (cuda/gemm.cuh) — or, for m ≤ 16 rows, on the decode GEMV (cuda/gemv.cuh).
//
//   x [m, k], W [n, k], A [r, k], B [n, r], y [m, n], bias [n]; explicit row strides (elements);
//   every operand in p.dtype (float32, or float16 / bfloat16 as raw 16-bit); float32 accumulation.
//
// Two engine calls:
//   1. the shrink T = scale·(x ⊙ mask)·Aᵀ [m, r] (a skinny product: n = r) into scratch, rows
//      padded to 16 bytes so that it can be the A operand of
//   2. y = [T | x]·[B | W]ᵀ + bias: the low-rank term is extra k-steps of the same tensor-core
//      mainloop (segment 0 = (T, B) over r, segment 1 = (x, W) over K), never float32 FMA work in
//      an epilogue, and y is stored once. DoRA's column scale (m / ‖W + s·B·A‖) is the epilogue's.
// For float16 / bfloat16, T is kept as hi + lo (two 16-bit arrays, ~2× the mantissa bits; the
// segment runs twice): the low-rank term keeps ~float32 accuracy where torch's unfused
// (x@A.T)@B.T rounds T to the dtype. float32 keeps T in float32.
// Napkin math (M = K = N = 4096, r = 16, bf16, H200): the GEMM is 137 GFLOP (~0.2 ms at ~700
// TFLOP/s); the shrink reads x once (32 MiB, ~8 µs at ~4 TB/s) and its 0.5 GFLOP are nothing; the
// extra k-steps are 2·r/K = 0.8% of the mainloop.
// The dropout mask applies to the low-rank branch only: with one, x ⊙ mask is formed once in
// scratch (one more pass over x, ~2·8 µs at the shape above) and the shrink reads it.
#include <algorithm>
#include <climits>
#include <string>

#include "common.cuh"
#include "gemm.cuh"
#include "gemv.cuh"
#include "lora_linear.cuh"

namespace lk::cuda_ops {
namespace {

// out[i, j] = x[i, j]·mask[i, j] (contiguous out, row stride k).
template <class E>
__global__ void __launch_bounds__(256) masked_copy_kernel(const void* x, long long x_stride, const void* mask,
                                                          long long mask_stride, void* out, long long m, long long k) {
#if defined(SIMT_DEVICE_PATH)
  using S = typename E::storage;
  const long long e = static_cast<long long>(blockIdx.x) * 256 + threadIdx.x;
  if (e >= m * k) return;
  const long long i = e / k, j = e % k;
  const float v = E::to_float(static_cast<const S*>(x)[i * x_stride + j]) * E::to_float(static_cast<const S*>(mask)[i * mask_stride + j]);
  static_cast<S*>(out)[e] = E::from_float(v);
#endif
}

}  // namespace

void masked_copy(DType dtype, const void* x, long long x_stride, const void* mask, long long mask_stride, void* out,
                 long long m, long long k, cudaStream_t st) {
  const dim3 grid(static_cast<unsigned>(ceil_div<long long>(m * k, 256)));
  switch (dtype) {
    case DType::Float32: simt_launch(masked_copy_kernel<F32>, grid, dim3(256), 0, st, x, x_stride, mask, mask_stride, out, m, k); break;
    case DType::Float16: simt_launch(masked_copy_kernel<F16>, grid, dim3(256), 0, st, x, x_stride, mask, mask_stride, out, m, k); break;
    case DType::BFloat16: simt_launch(masked_copy_kernel<BF16>, grid, dim3(256), 0, st, x, x_stride, mask, mask_stride, out, m, k); break;
    default: throw Error(ErrorCode::Unsupported, std::string("masked_copy (cuda): no kernel for dtype=") + dtype_name(dtype));
  }
  LK_CUDA_CHECK_LAUNCH("masked_copy_kernel launch");
}

long long low_rank_stride(DType dtype, long long r) {
  const long long per16 = 16 / static_cast<long long>(dtype_size(dtype));
  return ceil_div(r, per16) * per16;
}

bool split_low_rank(DType dtype) { return dtype == DType::Float16 || dtype == DType::BFloat16; }

void check_engine_sizes(const char* op, long long m, long long k, long long n, long long r) {
  constexpr long long kMax = INT_MAX - 256;
  if (m > kMax || k > kMax || n > kMax || r > kMax)
    throw Error(ErrorCode::Unsupported, std::string(op) + " (cuda): sizes must be below 2^31 - 256 (m=" + std::to_string(m) +
                                            ", k=" + std::to_string(k) + ", n=" + std::to_string(n) + ", r=" + std::to_string(r) + ")");
}

void lora_forward(const LoraForwardParams& p, int device) {
  if (p.m == 0) return;
  const cudaStream_t st = begin_op(device, p.column_scale ? "lora.doraForward" : "lora.forward");
  check_engine_sizes("lora.forward", p.m, p.k, p.n, p.r);
  if (p.m <= kGemvMaxRows) return lora_forward_decode(p, device, st);

  const int m = static_cast<int>(p.m), k = static_cast<int>(p.k), n = static_cast<int>(p.n), r = static_cast<int>(p.r);
  const long long t_stride = low_rank_stride(p.dtype, r);
  const size_t es = dtype_size(p.dtype);
  const size_t t_elems = static_cast<size_t>(m) * t_stride;
  const int t_parts = split_low_rank(p.dtype) ? 2 : 1;
  DeviceScratch scratch(device, (t_parts * t_elems + (p.dropout_mask && r ? static_cast<size_t>(m) * k : 0)) * es);
  void* t = scratch.as<void>();
  void* t_lo = t_parts == 2 ? scratch.as<unsigned char>() + t_elems * es : nullptr;

  gemm::Problem main;
  main.dtype = p.dtype;
  main.allow_tf32 = p.allow_tf32;
  main.m = m;
  main.n = n;
  main.what = "lora.forward";
  if (r > 0) {
    const void* xm = p.x;
    long long xm_stride = p.x_stride;
    if (p.dropout_mask) {
      xm = scratch.as<unsigned char>() + t_parts * t_elems * es;
      xm_stride = k;
      masked_copy(p.dtype, p.x, p.x_stride, p.dropout_mask, p.mask_stride, const_cast<void*>(xm), m, k, st);
    }
    gemm::Problem shrink;
    shrink.dtype = p.dtype;
    shrink.allow_tf32 = p.allow_tf32;
    shrink.m = m;
    shrink.n = r;
    shrink.seg[0] = {xm, p.a, xm_stride, p.a_stride, k, 0, m, INT_MAX, false};
    shrink.num_segments = 1;
    shrink.epi.alpha = p.scale;
    shrink.epi.out = t;
    shrink.epi.out_lo = t_lo;
    shrink.epi.out_stride = t_stride;
    shrink.what = "lora.forward";
    gemm::run(shrink, device, st);
    main.seg[main.num_segments++] = {t, p.b, t_stride, p.b_stride, r, 0, m, INT_MAX, false, t_lo};
  }
  main.seg[main.num_segments++] = {p.x, p.weight, p.x_stride, p.weight_stride, k, 0, m, INT_MAX, false};
  main.epi.column_scale = p.column_scale;
  main.epi.bias = p.bias;
  main.epi.bias_f32 = p.bias_f32;
  main.epi.out = p.y;
  main.epi.out_stride = p.y_stride;
  gemm::run(main, device, st);
}

}  // namespace lk::cuda_ops
