// simt_ptx.h — the tensor-core data path instructions (cp.async, ldmatrix, mma.sync) as one
// wrapper per instruction, with an emulated twin. Included by simt.h in both builds; kernels call
// ptx::… and never write asm() themselves. This file and simt_hopper.h (the sm_90 instructions,
// included at the end) are the only ones the subset lets hold inline PTX (scripts/lint-cuda.mjs).
//
//   nvcc device pass   → inline PTX (cp.async / mma.sync / cvt.rna.tf32: sm_80+, ldmatrix: sm_75+;
//                        on an older arch the wrapper traps: the launcher must never run it there)
//   nvcc host pass     → bodies trap (never executed; they only have to compile)
//   emulator (SIMT_EMU) → the instruction's semantics on the CPU:
//     * cp.async: per CUDA thread. The source is read at issue (so an out-of-bounds source is an
//       ASan report on the issuing line; src_bytes == 0 reads nothing) and the 16 bytes are kept
//       pending, grouped by commit_group. They reach shared memory only at the cp_async_wait<N>()
//       that covers their group (every committed group except the newest N; copies issued after
//       the last commit form an open group that no wait covers), or when the thread exits. A
//       kernel that reads a stage before its wait, or forgets the wait, or waits for the wrong
//       count, reads what was there before: stale data, or the 0xff poison of dynamic shared
//       memory (NaN as float).
//     * ldmatrix, mma.sync: warp collectives (all 32 lanes, like __shfl_sync) that gather every
//       lane's address / registers and give each lane the registers the hardware gives it, with
//       the PTX ISA fragment layouts. Layouts and results are checked bit for bit against
//       recordings from an H200 (test/simt/ptx_golden.cu, test/fixtures/gpu-golden/).
//     * mma.sync arithmetic: D = A·B + C with exact products, the sum in double, rounded once to
//       float. The GPU's accumulation order and intermediate precision are not documented (and
//       cannot be recorded exhaustively), so sums that are not exact in float may differ from the
//       GPU in the last bits: compare with tolerances unless the inputs make the sum exact. tf32
//       inputs: the tensor core ignores the low 13 mantissa bits of each float (truncated here;
//       confirmed on an H200 by ptx_golden's "spec" case);
//       round with cvt_rna_tf32 first if you want round-to-nearest. NaN payloads and the
//       tensor core's handling of subnormal results are not modelled.
//
// Address rules (checked by the emulator, simt::die with the offending lane / value): cp.async dst
// and src (when src_bytes > 0) 16-byte aligned, 0 <= src_bytes <= 16; ldmatrix row addresses
// 16-byte aligned. On the GPU cp.async dst and ldmatrix rows must be in shared memory (the
// emulator cannot tell static __shared__ from other memory and does not check that).
#pragma once
#include <cstdint>

#if defined(SIMT_EMU)
#include <cstdio>
#include <cstring>

#include "../core/half.h"
#define SIMT_PTX_FN inline
#else
#define SIMT_PTX_FN __device__ __forceinline__
#endif

namespace ptx {

#if defined(SIMT_EMU)
// ------------------------------------------------------------------------------ emulator
namespace detail {
inline simt::Thread& thread(const char* op) {
  if (!simt::cur) simt::die(op, "called outside a kernel", 0);
  return *simt::cur;
}
inline long misalign16(const void* p) { return static_cast<long>(reinterpret_cast<uintptr_t>(p) % 16); }

template <int NM, bool Trans>
inline void op_ldmatrix(simt::WarpState& W, uint32_t lanes) {
  if (lanes != 0xffffffffu)
    simt::die("ptx::ldmatrix needs all 32 lanes of the warp; lanes present mask", "", static_cast<long>(lanes));
  uint16_t m[NM][8][8];  // matrix, row, element
  for (int mi = 0; mi < NM; ++mi)
    for (int r = 0; r < 8; ++r) {
      const int src = 8 * mi + r;  // matrix mi's row r comes from the address of lane 8·mi + r
      const void* p = reinterpret_cast<const void*>(static_cast<uintptr_t>(W.in_val[src]));
      if (misalign16(p)) {
        char msg[160];
        std::snprintf(msg, sizeof msg,
                      "ptx::ldmatrix: the row address of lane %d (matrix %d, row %d) is not 16-byte aligned; address %% 16 =",
                      src, mi, r);
        simt::die(msg, "", misalign16(p));
      }
      std::memcpy(m[mi][r], p, 16);
    }
  for (int l = 0; l < 32; ++l)
    for (int mi = 0; mi < NM; ++mi) {
      const int a = l / 4, b = 2 * (l % 4);
      const uint32_t lo = Trans ? m[mi][b][a] : m[mi][a][b];  // lower-addressed / lower-row element
      const uint32_t hi = Trans ? m[mi][b + 1][a] : m[mi][a][b + 1];
      W.out_reg[l][mi] = lo | hi << 16;
    }
}
template <int NM, bool Trans>
inline void ldmatrix(uint32_t (&r)[NM], const void* smem_row) {
  thread("ptx::ldmatrix");
  simt::WarpState& W = simt::my_warp();
  const int lane = simt::my_lane();
  W.in_val[lane] = reinterpret_cast<uintptr_t>(smem_row);
  simt::warp_collective(0xffffffffu, op_ldmatrix<NM, Trans>);
  for (int i = 0; i < NM; ++i) r[i] = W.out_reg[lane][i];
}

enum MmaKind { kBf16, kF16, kTf32 };
inline double half_bits(uint32_t reg, int half, MmaKind kind) {
  const uint16_t h = static_cast<uint16_t>(reg >> (16 * half));
  return kind == kBf16 ? lk::bf16_to_float(h) : lk::fp16_to_float(h);
}
inline double tf32_bits(uint32_t reg) { return lk::bits_to_float(reg & 0xffffe000u); }  // low 13 bits ignored

// Lane registers (in_reg): a[0..4), b at 4..6, c at 6..10. g = lane >> 2, q = lane & 3.
template <MmaKind Kind>
inline void op_mma(simt::WarpState& W, uint32_t lanes) {
  if (lanes != 0xffffffffu)
    simt::die("ptx::mma_sync needs all 32 lanes of the warp; lanes present mask", "", static_cast<long>(lanes));
  constexpr int K = Kind == kTf32 ? 8 : 16;
  double A[16][K], B[K][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, q = l & 3;
    const uint32_t* reg = W.in_reg[l];
    if constexpr (Kind == kTf32) {
      for (int j = 0; j < 4; ++j) A[g + 8 * (j & 1)][q + 4 * (j >> 1)] = tf32_bits(reg[j]);
      for (int j = 0; j < 2; ++j) B[q + 4 * j][g] = tf32_bits(reg[4 + j]);
    } else {
      // element j sits in register j/2, the low 16 bits for even j
      for (int j = 0; j < 8; ++j) A[g + 8 * ((j >> 1) & 1)][2 * q + (j & 1) + 8 * (j >> 2)] = half_bits(reg[j / 2], j & 1, Kind);
      for (int j = 0; j < 4; ++j) B[2 * q + (j & 1) + 8 * (j >> 1)][g] = half_bits(reg[4 + j / 2], j & 1, Kind);
    }
    for (int j = 0; j < 4; ++j) C[g + 8 * (j >> 1)][2 * q + (j & 1)] = lk::bits_to_float(reg[6 + j]);
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l >> 2, q = l & 3;
    for (int j = 0; j < 4; ++j) {
      const int m = g + 8 * (j >> 1), n = 2 * q + (j & 1);
      double acc = C[m][n];
      for (int k = 0; k < K; ++k) acc += A[m][k] * B[k][n];  // products exact in double
      W.out_reg[l][j] = lk::float_to_bits(static_cast<float>(acc));
    }
  }
}
template <MmaKind Kind>
inline void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  thread("ptx::mma_sync");
  simt::WarpState& W = simt::my_warp();
  const int lane = simt::my_lane();
  uint32_t* reg = W.in_reg[lane];
  for (int i = 0; i < 4; ++i) reg[i] = a[i];
  for (int i = 0; i < 2; ++i) reg[4 + i] = b[i];
  for (int i = 0; i < 4; ++i) reg[6 + i] = lk::float_to_bits(c[i]);  // read before d is written: d may alias c
  simt::warp_collective(0xffffffffu, op_mma<Kind>);
  for (int i = 0; i < 4; ++i) d[i] = lk::bits_to_float(W.out_reg[lane][i]);
}
}  // namespace detail

SIMT_PTX_FN void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes = 16) {
  simt::Thread& t = detail::thread("ptx::cp_async_16");
  if (src_bytes < 0 || src_bytes > 16) simt::die("ptx::cp_async_16: src_bytes must be 0..16, got", "", src_bytes);
  if (detail::misalign16(smem_dst))
    simt::die("ptx::cp_async_16: the shared-memory destination is not 16-byte aligned; address % 16 =", "",
              detail::misalign16(smem_dst));
  if (src_bytes > 0 && detail::misalign16(gmem_src))
    simt::die("ptx::cp_async_16: the global source is not 16-byte aligned; address % 16 =", "",
              detail::misalign16(gmem_src));
  simt::AsyncCopy c;
  c.dst = static_cast<unsigned char*>(smem_dst);
  c.group = t.async_commits;
  std::memset(c.bytes, 0, 16);
  if (src_bytes > 0) std::memcpy(c.bytes, gmem_src, static_cast<size_t>(src_bytes));  // read now, land at the wait
  t.async_copies.push_back(c);
}
SIMT_PTX_FN void cp_async_commit() { ++detail::thread("ptx::cp_async_commit").async_commits; }
template <int N>
SIMT_PTX_FN void cp_async_wait() {
  static_assert(N >= 0, "cp.async.wait_group N needs N >= 0");
  simt::Thread& t = detail::thread("ptx::cp_async_wait");
  t.land_async(t.async_commits > static_cast<uint32_t>(N) ? t.async_commits - static_cast<uint32_t>(N) : 0u);
}

SIMT_PTX_FN void ldmatrix_x1(uint32_t (&r)[1], const void* p) { detail::ldmatrix<1, false>(r, p); }
SIMT_PTX_FN void ldmatrix_x2(uint32_t (&r)[2], const void* p) { detail::ldmatrix<2, false>(r, p); }
SIMT_PTX_FN void ldmatrix_x4(uint32_t (&r)[4], const void* p) { detail::ldmatrix<4, false>(r, p); }
SIMT_PTX_FN void ldmatrix_x1_trans(uint32_t (&r)[1], const void* p) { detail::ldmatrix<1, true>(r, p); }
SIMT_PTX_FN void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p) { detail::ldmatrix<2, true>(r, p); }
SIMT_PTX_FN void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { detail::ldmatrix<4, true>(r, p); }

SIMT_PTX_FN void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  detail::mma<detail::kBf16>(d, a, b, c);
}
SIMT_PTX_FN void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  detail::mma<detail::kF16>(d, a, b, c);
}
SIMT_PTX_FN void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  detail::mma<detail::kTf32>(d, a, b, c);
}
// cvt.rna.tf32.f32: nearest TF32, ties away from zero; NaN / Inf unchanged (as wmma::__float_to_tf32).
SIMT_PTX_FN uint32_t cvt_rna_tf32(float x) { return lk::float_to_bits(nvcuda::wmma::__float_to_tf32(x)); }

#else
// ------------------------------------------------------------------------------ nvcc
// Device pass for an arch that has the instruction: inline PTX. Otherwise (older arch, host pass)
// the body traps; the host pass never runs device functions, and the launchers must not pick a
// kernel that uses an instruction its arch lacks.
#if SIMT_CUDA_ARCH >= 750
SIMT_PTX_FN uint32_t smem_addr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }
#endif

SIMT_PTX_FN void cp_async_16(void* smem_dst, const void* gmem_src, int src_bytes = 16) {
#if SIMT_CUDA_ARCH >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem_dst)), "l"(gmem_src),
               "r"(src_bytes)
               : "memory");
#else
  simt_trap();
#endif
}
SIMT_PTX_FN void cp_async_commit() {
#if SIMT_CUDA_ARCH >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#else
  simt_trap();
#endif
}
template <int N>
SIMT_PTX_FN void cp_async_wait() {
  static_assert(N >= 0, "cp.async.wait_group N needs N >= 0");
#if SIMT_CUDA_ARCH >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#else
  simt_trap();
#endif
}

#if SIMT_CUDA_ARCH >= 750
#define SIMT_PTX_LDMATRIX_BODY1(shape)                                                               \
  asm volatile("ldmatrix.sync.aligned.m8n8." shape ".shared.b16 {%0}, [%1];\n" : "=r"(r[0])            \
               : "r"(smem_addr(p))                                                                   \
               : "memory")
#define SIMT_PTX_LDMATRIX_BODY2(shape)                                                               \
  asm volatile("ldmatrix.sync.aligned.m8n8." shape ".shared.b16 {%0, %1}, [%2];\n"                    \
               : "=r"(r[0]), "=r"(r[1])                                                              \
               : "r"(smem_addr(p))                                                                   \
               : "memory")
#define SIMT_PTX_LDMATRIX_BODY4(shape)                                                               \
  asm volatile("ldmatrix.sync.aligned.m8n8." shape ".shared.b16 {%0, %1, %2, %3}, [%4];\n"            \
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])                                      \
               : "r"(smem_addr(p))                                                                   \
               : "memory")
#else
#define SIMT_PTX_LDMATRIX_BODY1(shape) simt_trap()
#define SIMT_PTX_LDMATRIX_BODY2(shape) simt_trap()
#define SIMT_PTX_LDMATRIX_BODY4(shape) simt_trap()
#endif
SIMT_PTX_FN void ldmatrix_x1(uint32_t (&r)[1], const void* p) { SIMT_PTX_LDMATRIX_BODY1("x1"); }
SIMT_PTX_FN void ldmatrix_x2(uint32_t (&r)[2], const void* p) { SIMT_PTX_LDMATRIX_BODY2("x2"); }
SIMT_PTX_FN void ldmatrix_x4(uint32_t (&r)[4], const void* p) { SIMT_PTX_LDMATRIX_BODY4("x4"); }
SIMT_PTX_FN void ldmatrix_x1_trans(uint32_t (&r)[1], const void* p) { SIMT_PTX_LDMATRIX_BODY1("x1.trans"); }
SIMT_PTX_FN void ldmatrix_x2_trans(uint32_t (&r)[2], const void* p) { SIMT_PTX_LDMATRIX_BODY2("x2.trans"); }
SIMT_PTX_FN void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) { SIMT_PTX_LDMATRIX_BODY4("x4.trans"); }
#undef SIMT_PTX_LDMATRIX_BODY1
#undef SIMT_PTX_LDMATRIX_BODY2
#undef SIMT_PTX_LDMATRIX_BODY4

#if SIMT_CUDA_ARCH >= 800
#define SIMT_PTX_MMA_BODY(instr)                                                                     \
  asm volatile(instr " {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"           \
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                                      \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), \
                 "f"(c[2]), "f"(c[3]))
#else
#define SIMT_PTX_MMA_BODY(instr) simt_trap()
#endif
SIMT_PTX_FN void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  SIMT_PTX_MMA_BODY("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32");
}
SIMT_PTX_FN void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  SIMT_PTX_MMA_BODY("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32");
}
SIMT_PTX_FN void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4]) {
  SIMT_PTX_MMA_BODY("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32");
}
#undef SIMT_PTX_MMA_BODY

SIMT_PTX_FN uint32_t cvt_rna_tf32(float x) {
#if SIMT_CUDA_ARCH >= 800
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
#else
  simt_trap();
  return 0;
#endif
}
#endif

}  // namespace ptx
#undef SIMT_PTX_FN

// sm_90: mbarrier, TMA, wgmma
#include "simt_hopper.h"
