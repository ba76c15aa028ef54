// int8 per-token activation quantization on CUDA (rules: csrc/ops/quant_activations.h, shared with
// the CPU kernel so that both write the same bytes: the same float32 division for s, one float32
// product x·s, rintf (round half to even, as __float2int_rn), the clamp, NaN → 0).
//
// Kernels, with the napkin math (H200 ~4.3 TB/s):
//   * int8_quantize_kernel: one warp per row, lanes on consecutive elements (coalesced), two passes
//     over the row: the max |x| and whether a NaN is in it (a warp max is exact, so any order gives
//     the same float; __any_sync for the NaN), then the codes; the second pass re-reads the row
//     from L1/L2. Decode (m = 1, k = 4096): one warp, 16 KiB in, latency-bound at a few µs next to
//     the ~2 µs an NF4 4096² GEMV streams; prefill (m = 512) is 512 warps, 8 MiB read once from
//     DRAM in ~2 µs.
//   * int8_dequantize_kernel: one thread per element, code / s[row] (a float32 division, not a
//     reciprocal product), one rounding to the dtype.
#include <string>

#include "common.cuh"
#include "quant_activations.cuh"

namespace lk::cuda_ops {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

struct QuantizeArgs {
  const void* x;
  long long m, k;
  int8_t* values;
  float* scales;
};

struct DequantizeArgs {
  const int8_t* values;
  const float* scales;
  long long m, k;
  void* out;
};

template <class E>
__global__ void __launch_bounds__(kThreads) int8_quantize_kernel(QuantizeArgs a) {
#if defined(SIMT_DEVICE_PATH)
  const long long row = static_cast<long long>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= a.m) return;  // warp-uniform
  const int lane = threadIdx.x % 32;
  const typename E::storage* x = static_cast<const typename E::storage*>(a.x) + row * a.k;
  float amax = 0.f;
  int has_nan = 0;
  for (long long c = lane; c < a.k; c += 32) {
    const float v = fabsf(E::to_float(x[c]));
    if (v != v) has_nan = 1;
    else amax = fmaxf(amax, v);
  }
  amax = warp_max(amax);
  const float s = int8act::scale_of(amax, __any_sync(kFullMask, has_nan) != 0);
  if (lane == 0) a.scales[row] = s;
  int8_t* out = a.values + row * a.k;
  for (long long c = lane; c < a.k; c += 32) out[c] = int8act::code_of(E::to_float(x[c]) * s);
#endif
}

template <class E>
__global__ void __launch_bounds__(kThreads) int8_dequantize_kernel(DequantizeArgs a) {
#if defined(SIMT_DEVICE_PATH)
  const long long e = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= a.m * a.k) return;
  static_cast<typename E::storage*>(a.out)[e] = E::from_float(static_cast<float>(a.values[e]) / a.scales[e / a.k]);
#endif
}

}  // namespace

void int8_quantize(const Int8QuantizeParams& p, int device) {
  constexpr const char* op = "quant.int8.quantize";
  const cudaStream_t st = begin_op(device, op);
  if (p.m == 0) return;
  const QuantizeArgs a{p.x, p.m, p.k, p.values, p.scales};
  with_element(p.dtype, op, [&](auto e) {
    simt_launch(int8_quantize_kernel<decltype(e)>, grid_for(p.m * 32, kThreads, op), dim3(kThreads), 0, st, a);
    LK_CUDA_CHECK_LAUNCH("int8_quantize_kernel launch");
  });
}

void int8_dequantize(const Int8DequantizeParams& p, int device) {
  constexpr const char* op = "quant.int8.dequantize";
  const cudaStream_t st = begin_op(device, op);
  if (p.m == 0) return;
  const DequantizeArgs a{p.values, p.scales, p.m, p.k, p.out};
  with_element(p.dtype, op, [&](auto e) {
    simt_launch(int8_dequantize_kernel<decltype(e)>, grid_for(p.m * p.k, kThreads, op), dim3(kThreads), 0, st, a);
    LK_CUDA_CHECK_LAUNCH("int8_dequantize_kernel launch");
  });
}

}  // namespace lk::cuda_ops
