// The register-blocked float32 GEMM micro-kernel shared by the CPU kernels: C[MR×NR] (+)= A·B over
// kc steps, A packed as kc groups of MR values (one column of an MR-row panel per step) and B as
// kc groups of NR values (one row of an NR-column panel per step), so every step is NR/kLanes
// vector loads, MR broadcasts and MR·NR/kLanes independent FMAs.
//
// Shapes (accumulators + B vectors + one broadcast must fit the register file):
//   AVX-512  MR=6,  NR=64: 24 zmm accumulators + 4 B + 1 broadcast = 29 of 32 registers;
//            24 FMAs per 4 loads and 6 broadcasts. Measured on Zen4 (2 × 256-bit FMA pipes,
//            ~117 GFLOP/s per core): 14×32, 12×32, 8×48, 6×64 and 4×96 all reach ~113 GFLOP/s
//            (97%) on cached panels; in the full GEMM 6×64 came out 2-4% ahead of 14×32 (fewer
//            broadcasts, and M=512 has no ragged 14-row panel).
//   AVX2     MR=6,  NR=16: 12 ymm accumulators + 2 B + 1 broadcast = 15 of 16.
//   NEON     MR=8,  NR=12: 24 q accumulators + 3 B + 1 broadcast = 28 of 32.
//   scalar   MR=4,  NR=8:  a 4×8 tile of plain floats the compiler can keep in registers.
#pragma once
#include <cstdint>

#include "cpu/vec.h"

namespace lk::cpu::LK_SIMD_NS {

#if defined(LK_SIMD_AVX512)
constexpr int kGemmMR = 6;
constexpr int kGemmNV = 4;
#elif defined(LK_SIMD_AVX2)
constexpr int kGemmMR = 6;
constexpr int kGemmNV = 2;
#elif defined(LK_SIMD_NEON)
constexpr int kGemmMR = 8;
constexpr int kGemmNV = 3;
#else
constexpr int kGemmMR = 4;
constexpr int kGemmNV = 2;
#endif
constexpr int kGemmNR = kGemmNV * kLanes;

// Where a finished MR×NR product goes. Partial sums over K blocks live in a float32 tile `c`;
// the last K block adds c, the bias and writes y in its dtype instead (for float32 y, c is y).
struct TileTarget {
  float* c = nullptr;       // float32 partial sums, row stride ldc
  int64_t ldc = 0;
  bool accumulate = false;  // add the partial sums already in c (every K block but the first)
  void* y = nullptr;        // non-null on the last K block: write here, row stride ldy, dtype T
  int64_t ldy = 0;
  const float* bias = nullptr;  // float32 bias at the tile's first column, or null
  const float* column_scale = nullptr;  // float32 multipliers at the tile's first column (before the bias), or null
};

template <DType T>
inline void finish_row_vectors(const Vec* acc, int row, const TileTarget& t) {
  for (int v = 0; v < kGemmNV; ++v) {
    Vec sum = acc[v];
    if (t.accumulate) sum = vadd(sum, vload(t.c + row * t.ldc + v * kLanes));
    if (t.y) {
      if (t.column_scale) sum = vmul(sum, vload(t.column_scale + v * kLanes));
      if (t.bias) sum = vadd(sum, vload(t.bias + v * kLanes));
      vstore_from_float<T>(t.y, row * t.ldy + v * kLanes, sum);
    } else {
      vstore(t.c + row * t.ldc + v * kLanes, sum);
    }
  }
}

template <DType T>
inline void finish_partial_tile(const float* tile, int rows, int cols, const TileTarget& t) {
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      float sum = tile[i * kGemmNR + j];
      if (t.accumulate) sum += t.c[i * t.ldc + j];
      if (t.y) {
        if (t.column_scale) sum *= t.column_scale[j];
        if (t.bias) sum += t.bias[j];
        store_from_float<T>(t.y, i * t.ldy + j, sum);
      } else {
        t.c[i * t.ldc + j] = sum;
      }
    }
}

// dst[kk·NR + jj] = src[row0 + jj][col0 + kk] for kk < len, jj < NR (zero for jj ≥ valid_rows):
// one NR-wide micro-panel of the transposed weight, widened to float32, kLanes×kLanes blocks at a
// time through registers.
template <DType T>
void pack_transposed(const void* src, int64_t ld, int64_t row0, int64_t valid_rows, int64_t col0, int64_t len,
                     float* dst) {
  for (int64_t g = 0; g < kGemmNR; g += kLanes) {
    if (g + kLanes <= valid_rows) {
      const int64_t base = (row0 + g) * ld + col0;
      int64_t kk = 0;
      for (; kk + kLanes <= len; kk += kLanes) {
        Vec block[kLanes];
        for (int l = 0; l < kLanes; ++l) block[l] = vload_as_float<T>(src, base + l * ld + kk);
        vtranspose(block);
        for (int l = 0; l < kLanes; ++l) vstore(dst + (kk + l) * kGemmNR + g, block[l]);
      }
      for (; kk < len; ++kk)
        for (int l = 0; l < kLanes; ++l) dst[kk * kGemmNR + g + l] = load_as_float<T>(src, base + l * ld + kk);
    } else {
      for (int64_t kk = 0; kk < len; ++kk)
        for (int l = 0; l < kLanes; ++l) {
          const int64_t row = g + l;
          dst[kk * kGemmNR + g + l] = row < valid_rows ? load_as_float<T>(src, (row0 + row) * ld + col0 + kk) : 0.0f;
        }
    }
  }
}

// acc = A·B over kc steps (the register-blocked core; kc = 0 gives zeros).
inline void gemm_micro_accumulate(int64_t kc, const float* __restrict a, const float* __restrict b,
                                  Vec (&acc)[kGemmMR][kGemmNV]) {
  for (int i = 0; i < kGemmMR; ++i)
    for (int v = 0; v < kGemmNV; ++v) acc[i][v] = vzero();

  for (int64_t k = 0; k < kc; ++k) {
    Vec bv[kGemmNV];
    for (int v = 0; v < kGemmNV; ++v) bv[v] = vload(b + v * kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < kGemmMR; ++i) {
      const Vec ai = vset1(a[i]);
      for (int v = 0; v < kGemmNV; ++v) acc[i][v] = vfma(ai, bv[v], acc[i][v]);
    }
    a += kGemmMR;
    b += kGemmNR;
  }
}

// rows ≤ MR and cols ≤ NR say how much of the tile is real (the packed panels are zero-padded).
template <DType T>
inline void gemm_micro_kernel(int64_t kc, const float* __restrict a, const float* __restrict b, int rows, int cols,
                              const TileTarget& target) {
  // The C tile (partial sums in L2/L3, rows a y-row apart) is needed only after the k loop:
  // start fetching it now so its misses overlap the kc·MR·NR/kLanes FMAs.
  if (target.accumulate)
    for (int i = 0; i < kGemmMR; ++i)
      for (int j = 0; j < kGemmNR; j += 64 / int{sizeof(float)}) prefetch_for_write(target.c + i * target.ldc + j);

  Vec acc[kGemmMR][kGemmNV];
  gemm_micro_accumulate(kc, a, b, acc);

  if (rows == kGemmMR && cols == kGemmNR) {
    for (int i = 0; i < kGemmMR; ++i) finish_row_vectors<T>(acc[i], i, target);
  } else {
    alignas(64) float tile[kGemmMR * kGemmNR];
    for (int i = 0; i < kGemmMR; ++i)
      for (int v = 0; v < kGemmNV; ++v) vstore(tile + i * kGemmNR + v * kLanes, acc[i][v]);
    finish_partial_tile<T>(tile, rows, cols, target);
  }
}

}  // namespace lk::cpu::LK_SIMD_NS
