// Quantize and dequantize on CUDA: NF4 (bitsandbytes' bytes) and 1.58-bit ternary (BitNet b1.58).
// The rules (encoders, summation orders) are csrc/formats/nf4.h and ternary.h, shared with the CPU
// kernels so that both backends write the same bytes; every reduction here follows their order
// exactly, without atomics.
//
// Kernels, with the napkin math (W 4096 × 4096, H200 ~4.3 TB/s):
//   * nf4_quantize_kernel: one warp per block of block_size elements (32 … 4096 of the flattened
//     weight, so a block may straddle rows), two passes over its elements: the absmax (a warp max:
//     exact, so any order gives the same float), then the codes, two per byte. Lanes take
//     consecutive pairs, so both passes and the byte stores are coalesced; the second pass re-reads
//     the block from L1/L2. Reads W once from DRAM (64 MiB float32, ~16 µs) and writes 8 MiB of codes
//     + 1 MiB of absmax.
//   * double quantization: nested_sums_kernel (one thread per nested block of 256 absmax values:
//     S_j in double, ascending), nested_offset_kernel (one thread: Σ_j S_j, ascending, / blocks:
//     ~1k doubles at 4096², microseconds), nested_quantize_kernel (one CUDA block per nested block:
//     absmax − offset, its max, the 8-bit codes by binary search over the map's midpoints).
//   * ternary: row_abs_sums_kernel (one thread per row, Σ_k |w| in double, ascending k: the warp's
//     32 rows are read at the same k, one cache line per row that the next 31 k hit in L1),
//     ternary_scale_kernel (one thread: Σ_n over the rows, ascending), ternary_encode_kernel (one
//     thread per packed byte, 4 codes).
//   * dequantize_kernel: one thread per 8 flattened NF4 elements (4 bytes) or one ternary byte,
//     float32 code·absmax (the nested absmax as fp32(code·nested_absmax) + offset, two roundings,
//     never fused: __fmul_rn / __fadd_rn), then one rounding to the dtype.
// Quantization is a one-off per weight: these kernels are simple rather than tuned.
#include <string>

#include "common.cuh"
#include "formats/nf4.h"
#include "formats/ternary.h"
#include "quant.cuh"
#include "quant_decode.cuh"

namespace lk::cuda_ops {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;
// The low nibble of an odd element count's last byte: the code of 0.0 (bitsandbytes pads with 0.0f).
constexpr int kPadCode = 7;

struct Nf4QuantizeArgs {
  const void* w;
  long long w_stride, k, elements, blocks, block_size;
  uint8_t* packed;
  float* absmax;
};

struct NestedArgs {
  const float* absmax;
  long long blocks;
  double* sums;            // [nested blocks]
  float* offset;           // [1]
  uint8_t* absmax_code;    // [blocks]
  float* nested_absmax;    // [nested blocks]
  const float* nested_code;  // [256]
};

struct TernaryArgs {
  const void* w;
  long long w_stride, n, k, row_bytes;
  float eps;
  double* row_sums;  // [n]
  float* scale;      // [1]
  uint8_t* packed;
};

struct DequantizeArgs {
  QuantWeight q;
  void* out;
  long long out_stride;
};

#if defined(SIMT_DEVICE_PATH)
template <class E>
__device__ __forceinline__ float element(const void* w, long long stride, long long row, long long col) {
  return E::to_float(static_cast<const typename E::storage*>(w)[row * stride + col]);
}

// Flattened element e of the [·, k] weight w.
template <class E>
__device__ __forceinline__ float flat_element(const Nf4QuantizeArgs& a, long long e) {
  return element<E>(a.w, a.w_stride, e / a.k, e % a.k);
}

#endif

// ---- NF4 ----------------------------------------------------------------------------------------
template <class E>
__global__ void __launch_bounds__(kThreads) nf4_quantize_kernel(Nf4QuantizeArgs a) {
#if defined(SIMT_DEVICE_PATH)
  const long long block = static_cast<long long>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (block >= a.blocks) return;  // warp-uniform
  const int lane = threadIdx.x % 32;
  const long long begin = block * a.block_size;
  const long long end = begin + a.block_size < a.elements ? begin + a.block_size : a.elements;
  float amax = 0.f;
  for (long long e = begin + 2 * lane; e < end; e += 64) {
    amax = fmaxf(amax, fabsf(flat_element<E>(a, e)));
    if (e + 1 < end) amax = fmaxf(amax, fabsf(flat_element<E>(a, e + 1)));
  }
  amax = warp_max(amax);
  if (lane == 0) a.absmax[block] = amax;
  const float inv = nf4::inverse_absmax(amax);
  for (long long e = begin + 2 * lane; e < end; e += 64) {
    const int hi = nf4::encode(flat_element<E>(a, e) * inv);
    const int lo = e + 1 < end ? nf4::encode(flat_element<E>(a, e + 1) * inv) : kPadCode;
    a.packed[e / 2] = static_cast<uint8_t>(hi << 4 | lo);
  }
#endif
}

// S_j = Σ absmax[i] over nested block j, ascending, in double.
__global__ void __launch_bounds__(kThreads) nested_sums_kernel(NestedArgs a) {
#if defined(SIMT_DEVICE_PATH)
  const long long j = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  const long long begin = j * nf4::kNestedBlock;
  if (begin >= a.blocks) return;
  const long long end = begin + nf4::kNestedBlock < a.blocks ? begin + nf4::kNestedBlock : a.blocks;
  double s = 0.0;
  for (long long i = begin; i < end; ++i) s += a.absmax[i];
  a.sums[j] = s;
#endif
}

// offset = float(Σ_j S_j / blocks), j ascending: one thread, so the order is the documented one.
__global__ void __launch_bounds__(32) nested_offset_kernel(NestedArgs a, long long nested_blocks) {
#if defined(SIMT_DEVICE_PATH)
  if (threadIdx.x != 0) return;
  double s = 0.0;
  for (long long j = 0; j < nested_blocks; ++j) s += a.sums[j];
  *a.offset = static_cast<float>(s / static_cast<double>(a.blocks));
#endif
}

// One CUDA block per nested block of 256 absmax values (thread t ↔ value 256·blockIdx.x + t).
__global__ void __launch_bounds__(nf4::kNestedBlock) nested_quantize_kernel(NestedArgs a) {
#if defined(SIMT_DEVICE_PATH)
  __shared__ float map[nf4::kNestedCodes];
  __shared__ float warp_amax[nf4::kNestedBlock / 32];
  map[threadIdx.x] = a.nested_code[threadIdx.x];
  const long long i = static_cast<long long>(blockIdx.x) * nf4::kNestedBlock + threadIdx.x;
  const float d = i < a.blocks ? a.absmax[i] - *a.offset : 0.f;
  const float amax = warp_max(fabsf(d));
  if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
  __syncthreads();
  float block_amax = 0.f;
#pragma unroll
  for (int w = 0; w < nf4::kNestedBlock / 32; ++w) block_amax = fmaxf(block_amax, warp_amax[w]);
  if (threadIdx.x == 0) a.nested_absmax[blockIdx.x] = block_amax;
  if (i < a.blocks) a.absmax_code[i] = static_cast<uint8_t>(nf4::encode_nested(map, d * nf4::inverse_absmax(block_amax)));
#endif
}

// ---- ternary ----------------------------------------------------------------------------------------
template <class E>
__global__ void __launch_bounds__(kThreads) row_abs_sums_kernel(TernaryArgs a) {
#if defined(SIMT_DEVICE_PATH)
  const long long row = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  if (row >= a.n) return;
  double s = 0.0;
  for (long long k = 0; k < a.k; ++k) s += fabsf(element<E>(a.w, a.w_stride, row, k));
  a.row_sums[row] = s;
#endif
}

__global__ void __launch_bounds__(32) ternary_scale_kernel(TernaryArgs a) {
#if defined(SIMT_DEVICE_PATH)
  if (threadIdx.x != 0) return;
  double s = 0.0;
  for (long long row = 0; row < a.n; ++row) s += a.row_sums[row];
  *a.scale = ternary::scale_of(s, a.n * a.k, a.eps);
#endif
}

// One thread per packed byte (row, j): codes of k = 4j … 4j + 3, lowest bits first; past k: 1 (0).
template <class E>
__global__ void __launch_bounds__(kThreads) ternary_encode_kernel(TernaryArgs a) {
#if defined(SIMT_DEVICE_PATH)
  const long long e = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  if (e >= a.n * a.row_bytes) return;
  const long long row = e / a.row_bytes, k0 = e % a.row_bytes * 4;
  const float inv = 1.0f / *a.scale;
  int byte = 0;
#pragma unroll
  for (int t = 0; t < 4; ++t) {
    const int code = k0 + t < a.k ? ternary::encode(element<E>(a.w, a.w_stride, row, k0 + t), inv) : 1;
    byte |= code << (2 * t);
  }
  a.packed[e] = static_cast<uint8_t>(byte);
#endif
}

// ---- dequantize ----------------------------------------------------------------------------------
// NF4: one thread per 8 flattened elements; ternary: one thread per packed byte.
template <class E>
__global__ void __launch_bounds__(kThreads) dequantize_kernel(DequantizeArgs a) {
#if defined(SIMT_DEVICE_PATH)
  using S = typename E::storage;
  __shared__ float table[quant::kTableSize];
  quant::fill_table(table, a.q.format);
  __syncthreads();
  const QuantWeight& q = a.q;
  const long long t = static_cast<long long>(blockIdx.x) * kThreads + threadIdx.x;
  S* out = static_cast<S*>(a.out);
  if (q.format == QuantFormat::Nf4) {
    const long long elements = q.n * q.k;
#pragma unroll
    for (int v = 0; v < 8; ++v) {
      const long long e = t * 8 + v;
      if (e >= elements) break;
      const float value = table[nf4::nibble(q.packed, e)] * quant::block_absmax(q, e / q.block_size);
      out[e / q.k * a.out_stride + e % q.k] = E::from_float(value);
    }
  } else {
    const long long row_bytes = ternary::row_bytes(q.k);
    if (t >= q.n * row_bytes) return;
    const long long row = t / row_bytes, k0 = t % row_bytes * 4;
    const int byte = q.packed[t];
#pragma unroll
    for (int v = 0; v < 4; ++v)
      if (k0 + v < q.k) out[row * a.out_stride + k0 + v] = E::from_float(ternary::code_value(byte >> (2 * v) & 3) * q.scale);
  }
#endif
}

// ---- launchers -------------------------------------------------------------------------------------
}  // namespace

void nf4_quantize(const Nf4QuantizeParams& p, int device) {
  const cudaStream_t st = begin_op(device, "quant.nf4.quantize");
  const long long elements = p.n * p.k;
  if (elements == 0) return;
  Nf4QuantizeArgs a{p.w, p.w_stride, p.k, elements, nf4::blocks(elements, p.block_size), p.block_size, p.packed, p.absmax};
  with_element(p.dtype, "quant.nf4.quantize", [&](auto e) {
    using E = decltype(e);
    simt_launch(nf4_quantize_kernel<E>, grid_for(a.blocks * 32, kThreads, "quant.nf4.quantize"), dim3(kThreads), 0, st, a);
    LK_CUDA_CHECK_LAUNCH("nf4_quantize_kernel launch");
  });
  if (!p.double_quant) return;
  const long long nested = ceil_div<long long>(a.blocks, nf4::kNestedBlock);
  DeviceScratch sums(device, static_cast<size_t>(nested) * sizeof(double));
  NestedArgs n{p.absmax, a.blocks, sums.as<double>(), p.offset, p.absmax_code, p.nested_absmax, p.nested_code};
  simt_launch(nested_sums_kernel, grid_for(nested, kThreads, "quant.nf4.quantize"), dim3(kThreads), 0, st, n);
  LK_CUDA_CHECK_LAUNCH("nested_sums_kernel launch");
  simt_launch(nested_offset_kernel, dim3(1), dim3(32), 0, st, n, nested);
  LK_CUDA_CHECK_LAUNCH("nested_offset_kernel launch");
  if (nested > 0x7fffffffLL) throw Error(ErrorCode::Unsupported, "quant.nf4.quantize (cuda): too many nested blocks");
  simt_launch(nested_quantize_kernel, dim3(static_cast<unsigned>(nested)), dim3(nf4::kNestedBlock), 0, st, n);
  LK_CUDA_CHECK_LAUNCH("nested_quantize_kernel launch");
}

void ternary_quantize(const TernaryQuantizeParams& p, int device) {
  const cudaStream_t st = begin_op(device, "quant.ternary.quantize");
  if (p.n * p.k == 0) return;
  DeviceScratch row_sums(device, static_cast<size_t>(p.n) * sizeof(double));
  TernaryArgs a{p.w, p.w_stride, p.n, p.k, ternary::row_bytes(p.k), p.eps, row_sums.as<double>(), p.scale, p.packed};
  with_element(p.dtype, "quant.ternary.quantize", [&](auto e) {
    using E = decltype(e);
    simt_launch(row_abs_sums_kernel<E>, grid_for(a.n, kThreads, "quant.ternary.quantize"), dim3(kThreads), 0, st, a);
    LK_CUDA_CHECK_LAUNCH("row_abs_sums_kernel launch");
    simt_launch(ternary_scale_kernel, dim3(1), dim3(32), 0, st, a);
    LK_CUDA_CHECK_LAUNCH("ternary_scale_kernel launch");
    simt_launch(ternary_encode_kernel<E>, grid_for(a.n * a.row_bytes, kThreads, "quant.ternary.quantize"), dim3(kThreads), 0, st, a);
    LK_CUDA_CHECK_LAUNCH("ternary_encode_kernel launch");
  });
}

void quant::enqueue_dequantize(const QuantWeight& q, DType dtype, void* out, long long out_stride, cudaStream_t st) {
  if (q.n * q.k == 0) return;
  const long long threads = q.format == QuantFormat::Nf4 ? ceil_div<long long>(q.n * q.k, 8) : q.n * ternary::row_bytes(q.k);
  DequantizeArgs a{q, out, out_stride};
  with_element(dtype, "quant.dequantize", [&](auto e) {
    using E = decltype(e);
    simt_launch(dequantize_kernel<E>, grid_for(threads, kThreads, "quant.dequantize"), dim3(kThreads), 0, st, a);
    LK_CUDA_CHECK_LAUNCH("dequantize_kernel launch");
  });
}

void dequantize(const DequantizeParams& p, int device) {
  const QuantWeight& q = p.weight;
  const cudaStream_t st = begin_op(device, q.format == QuantFormat::Nf4 ? "quant.nf4.dequantize" : "quant.ternary.dequantize");
  quant::enqueue_dequantize(q, p.dtype, p.out, p.out_stride, st);
}

}  // namespace lk::cuda_ops
