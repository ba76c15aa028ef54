// simt_ptx.h — the only file in the kernel subset that may contain inline PTX (asm). Each wrapper
// is one PTX instruction under nvcc and an emulated twin under simt_emu, implemented from the
// fragment layout that the PTX ISA documents ("Matrix Fragments for mma.m16n8k16"). Unlike WMMA,
// these layouts are public, so the twin must match them exactly: whenever a GPU is available,
// run the same tests on it (that checks the emulation too). scripts/lint-cuda.mjs rejects asm
// anywhere else in cuda/ and csrc/simt/.
//
// Wrappers (add one per instruction a kernel needs, with its twin):
//   simt_mma_m16n8k16_f16 / _bf16: D(16×8, f32) = A(16×16, row) · B(16×8, col) + C, operands in
//   32-bit registers holding two 16-bit values (low half = lower column / k index). sm_80+ for
//   bf16, sm_75+ for f16. (Not used by lora_linear, which uses WMMA; kept for the attention ops.)
#pragma once
#include "simt.h"

#if defined(__CUDACC__)
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ void simt_mma_m16n8k16_f16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
#if __CUDA_ARCH__ >= 800
__device__ __forceinline__ void simt_mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}
#endif
#endif
#else  // emulated twins
namespace simt::ptx {
template <bool BF16>
inline float half_of(unsigned u, int hi) {
  const uint16_t h = static_cast<uint16_t>(hi ? u >> 16 : u & 0xffffu);
  if (BF16) {
    const uint32_t f = static_cast<uint32_t>(h) << 16;
    float v;
    std::memcpy(&v, &f, 4);
    return v;
  }
  __half_raw r;
  r.x = h;
  return __half2float(__half(r));
}
// Lane l = 4·g + t holds: A rows g and g+8, k pairs 2t..2t+1 and 2t+8..2t+9; B k pairs 2t.. for
// column g; C/D rows g and g+8, columns 2t and 2t+1.
template <bool BF16>
inline void mma_m16n8k16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
  WarpState& W = my_warp();
  const int lane = my_lane(), g = lane >> 2, t = lane & 3;
  float* A = W.mat[0];  // 16×16 row-major
  float* B = W.mat[1];  // 16×8 (k, n)
  float* C = W.mat[2];  // 16×8
  for (int r = 0; r < 4; ++r)
    for (int e = 0; e < 2; ++e) A[(g + 8 * (r & 1)) * 16 + 2 * t + e + 8 * (r >> 1)] = half_of<BF16>(a[r], e);
  for (int r = 0; r < 2; ++r)
    for (int e = 0; e < 2; ++e) B[(2 * t + e + 8 * r) * 8 + g] = half_of<BF16>(b[r], e);
  for (int i = 0; i < 4; ++i) C[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = c[i];
  warp_collective(0xffffffffu, nvcuda::wmma::detail::op_mma<16, 8, 16>);
  for (int i = 0; i < 4; ++i) d[i] = W.mat[3][(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
}
}  // namespace simt::ptx
inline void simt_mma_m16n8k16_f16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
  simt::ptx::mma_m16n8k16<false>(d, a, b, c);
}
inline void simt_mma_m16n8k16_bf16(float d[4], const unsigned a[4], const unsigned b[2], const float c[4]) {
  simt::ptx::mma_m16n8k16<true>(d, a, b, c);
}
#endif
