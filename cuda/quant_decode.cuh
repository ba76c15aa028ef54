// Decoding packed quantized weights (csrc/formats: NF4, ternary) inside the kernels that read them:
// the GEMM engine's dequantizing B operand (cuda/gemm_kernels.cuh), the decode GEMV (cuda/gemv.cu)
// and dequantize (cuda/quant.cu). Written in the kernel subset of csrc/simt.
//
// Code values come from a 16-word table in shared memory: a lookup is one LDS, and 16 words sit in
// 16 different banks, so any mix of codes over a warp is served in one wavefront (broadcasts for
// equal codes). A table in constant memory would serialize divergent indices; registers cannot be
// indexed. NF4 element order: byte j holds element 2j in its HIGH nibble; ternary: element 4j + t
// at bits 2t of byte j.
#pragma once
#include "common.cuh"
#include "formats/nf4.h"
#include "formats/ternary.h"
#include "ops/quant.h"

namespace lk::cuda_ops::quant {

constexpr int kTableSize = 16;

#if defined(SIMT_DEVICE_PATH)
// The format's code values: NF4's 16, or ternary's −1, 0, +1, 0 (code 3, never written, is 0).
// Thread 0 writes all 16 with constant indices (no local-memory copy of the table); the caller's
// barrier publishes them.
__device__ __forceinline__ void fill_table(float* table, QuantFormat format) {
  if (threadIdx.x != 0) return;
#pragma unroll
  for (int c = 0; c < kTableSize; ++c)
    table[c] = format == QuantFormat::Nf4 ? nf4::code_value(c) : static_cast<float>(ternary::code_value(c & 3));
}

// absmax of NF4 block i: float32, or the double-quantized form fp32(nested_code[q]·nested_absmax)
// + offset with two separate roundings (as dequantize defines it: never a fused multiply-add).
__device__ __forceinline__ float block_absmax(const QuantWeight& q, long long i) {
  if (q.absmax) return q.absmax[i];
  return __fadd_rn(__fmul_rn(q.nested_code[q.absmax_code[i]], q.nested_absmax[i / nf4::kNestedBlock]), q.offset);
}

// N consecutive NF4 elements from the N/2 bytes in the low bits of `bytes` (address order), as
// float32 code·absmax.
template <int N>
__device__ __forceinline__ void nf4_decode(const float* table, uint32_t bytes, float absmax, float (&v)[N]) {
#pragma unroll
  for (int b = 0; b < N / 2; ++b) {
    v[2 * b] = table[bytes >> (8 * b + 4) & 15] * absmax;
    v[2 * b + 1] = table[bytes >> (8 * b) & 15] * absmax;
  }
}

// N consecutive ternary elements from the 2·N bits in the low bits of `bits`, as −1 / 0 / +1
// (the caller applies the tensor's scale).
template <int N>
__device__ __forceinline__ void ternary_decode(const float* table, uint32_t bits, float (&v)[N]) {
#pragma unroll
  for (int t = 0; t < N; ++t) v[t] = table[bits >> (2 * t) & 3];
}

// Element e of the flattened NF4 weight / element (row, col) of a ternary weight, from global memory.
__device__ __forceinline__ float nf4_element(const float* table, const QuantWeight& q, int shift, long long e) {
  return table[nf4::nibble(q.packed, e)] * block_absmax(q, e >> shift);
}
__device__ __forceinline__ float ternary_element(const float* table, const QuantWeight& q, long long row_bytes, long long row,
                                                 long long col) {
  return table[ternary::code_at(q.packed + row * row_bytes, col)] * q.scale;
}
#endif  // SIMT_DEVICE_PATH

// log2 of an NF4 block size (a power of two, 32 … 4096): block index = flattened element >> shift.
inline int block_shift(long long block_size) {
  int s = 0;
  while ((1LL << s) < block_size) ++s;
  return s;
}

// out[n, k] = deq(W) in the dtype (the float32 code·absmax rounded once, as every reader of a
// packed weight computes it), enqueued on `st`: dequantize's kernel, also run inside quant.matmul
// (its wgmma prefill, cuda/quant_matmul.cu). Defined in cuda/quant.cu.
void enqueue_dequantize(const QuantWeight& w, DType dtype, void* out, long long out_stride, cudaStream_t st);

}  // namespace lk::cuda_ops::quant
