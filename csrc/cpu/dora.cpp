// DoRA kernels on the CPU (compiled once per SIMD level into lk::cpu::LK_SIMD_NS):
//  * dora_norms: norm_n = ‖W_n + s·B_n·A‖₂ and column_scale_n = m_n / norm_n.
//  * dora_columns: the backward's column pass, g' = g ⊙ column_scale and Σ_i g·z / norm.
//
// dora_norms napkin math (K = N = 4096, r = 16, float32): W is streamed once (64 MiB, ~2-4 ms at
// 16-35 GB/s) and 2·N·K·r = 0.54 GFLOP of FMAs (~2.5 ms on 2 cores at ~110 GFLOP/s each): the two
// overlap, so ~3-5 ms, ~5% of the M = 512 forward GEMM but ~2× the M = 1 GEMV. A is widened once
// to float32 (r·K·4 B = 256 KiB, L2-resident); each A vector serves 4 weight rows and each
// coefficient broadcast 4 vectors. Measured on one (shared, busy) Zen4 core: 8.5 ms at r = 16,
// 32 ms at r = 64, i.e. ~60 GFLOP/s, about half the core's FMA peak.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/parallel.h"
#include "cpu/dispatch/kernels.h"
#include "cpu/vec.h"

namespace lk::cpu::LK_SIMD_NS {
namespace {

constexpr int kRowsPerTile = 4;          // weight rows sharing each A vector load
constexpr int64_t kRowsPerTask = 64;     // 64 rows of K = 4096 float32: 1 MiB of W per task
constexpr int64_t kColumnsPerTask = 512; // dora_columns: float32 sums for 512 columns stay in L1

// Reads element i of a float32 or `dtype` vector (the magnitude).
float load_any(DType dtype, const void* base, int64_t i) {
  return with_float_dtype(dtype, [&](auto tag) { return load_as_float<decltype(tag)::value>(base, i); });
}

void store_any(DType dtype, void* base, int64_t i, float v) {
  with_float_dtype(dtype, [&](auto tag) { store_from_float<decltype(tag)::value>(base, i, v); });
}

// One step of C vectors (C·kLanes columns from kk) for kRowsPerTile rows: v = W_j + Σ_t coef[j][t]·A_t
// in registers, then ss_j += v². Each coefficient broadcast serves C FMAs and each A vector
// kRowsPerTile, so the step is FMA-bound rather than load-bound (AVX-512, C = 4: 4 A loads and
// 4 broadcasts per 16 FMAs; 16 v + 4 ss + 4 A + 1 broadcast = 25 of 32 registers).
template <DType T, int C>
void tile_step(const DoraNormParams& p, const int64_t (&rows)[kRowsPerTile], const float* a, int64_t lda,
               const float* coef, int64_t kk, Vec (&ss)[kRowsPerTile]) {
  Vec v[kRowsPerTile][C];
  for (int i = 0; i < kRowsPerTile; ++i)
    for (int c = 0; c < C; ++c) v[i][c] = vload_as_float<T>(p.weight, rows[i] * p.weight_stride + kk + c * kLanes);
  for (int64_t t = 0; t < p.r; ++t) {
    Vec av[C];
    for (int c = 0; c < C; ++c) av[c] = vload(a + t * lda + kk + c * kLanes);
    for (int i = 0; i < kRowsPerTile; ++i) {
      const Vec ci = vset1(coef[i * p.r + t]);
      for (int c = 0; c < C; ++c) v[i][c] = vfma(ci, av[c], v[i][c]);
    }
  }
  for (int i = 0; i < kRowsPerTile; ++i)
    for (int c = 0; c < C; ++c) ss[i] = vfma(v[i][c], v[i][c], ss[i]);
}

constexpr int kVecsPerStep = kLanes >= 16 ? 4 : 2;  // AVX2 / NEON: 8 v + 4 ss + 2 A + 1 = 15 registers

// Sum of squares of W_j + Σ_t coef[j][t]·A_t for kRowsPerTile rows j (rows[] may repeat the last
// real row; its result is then ignored). a is float32 [r, k] with row stride lda, coef [kRowsPerTile][r].
template <DType T>
void row_tile_sumsq(const DoraNormParams& p, const int64_t (&rows)[kRowsPerTile], const float* a, int64_t lda,
                    const float* coef, float (&sumsq)[kRowsPerTile]) {
  const int64_t k = p.k, r = p.r;
  Vec ss[kRowsPerTile];
  for (int i = 0; i < kRowsPerTile; ++i) ss[i] = vzero();
  int64_t kk = 0;
  for (; kk + kVecsPerStep * kLanes <= k; kk += kVecsPerStep * kLanes) tile_step<T, kVecsPerStep>(p, rows, a, lda, coef, kk, ss);
  for (; kk + kLanes <= k; kk += kLanes) tile_step<T, 1>(p, rows, a, lda, coef, kk, ss);
  for (int i = 0; i < kRowsPerTile; ++i) sumsq[i] = vsum(ss[i]);
  for (; kk < k; ++kk)
    for (int i = 0; i < kRowsPerTile; ++i) {
      float v = load_as_float<T>(p.weight, rows[i] * p.weight_stride + kk);
      for (int64_t t = 0; t < r; ++t) v += coef[i * r + t] * a[t * lda + kk];
      sumsq[i] += v * v;
    }
}

template <DType T>
void norms(const DoraNormParams& p) {
  const int64_t k = p.k, r = p.r;
  // Row stride of the widened A: one cache line more than a multiple of 16 floats. With K = 4096
  // the r rows read at each step would otherwise be 16 KiB apart, all in one L1 set (8 ways), and
  // for r > 8 every step would miss to L2.
  const int64_t lda = (k + 15) / 16 * 16 + 16;
  std::vector<float> a(static_cast<size_t>(r * lda));
  for (int64_t t = 0; t < r; ++t) widen_row<T>(p.a, t * p.a_stride, k, a.data() + t * lda);
  parallel_for((p.n + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t task, int) {
    const int64_t j0 = task * kRowsPerTask, j1 = std::min(p.n, j0 + kRowsPerTask);
    std::vector<float> coef(static_cast<size_t>(kRowsPerTile * r));
    for (int64_t j = j0; j < j1; j += kRowsPerTile) {
      int64_t rows[kRowsPerTile];
      for (int i = 0; i < kRowsPerTile; ++i) {
        rows[i] = std::min(j + i, j1 - 1);
        for (int64_t t = 0; t < r; ++t) coef[i * r + t] = p.scale * load_as_float<T>(p.b, rows[i] * p.b_stride + t);
      }
      float sumsq[kRowsPerTile];
      row_tile_sumsq<T>(p, rows, a.data(), lda, coef.data(), sumsq);
      for (int i = 0; i < kRowsPerTile && j + i < j1; ++i) {
        const float norm = std::sqrt(sumsq[i]);
        if (p.norm) p.norm[j + i] = norm;
        p.column_scale[j + i] = load_any(p.magnitude_dtype, p.magnitude, j + i) / norm;
      }
    }
  });
}

// Columns [j0, j1): walks every row once, writing g' and summing g·z per column in float32.
template <DType T>
void columns_block(const DoraColumnParams& p, int64_t j0, int64_t j1, float* sums) {
  const int64_t cols = j1 - j0;
  std::fill(sums, sums + cols, 0.0f);
  for (int64_t i = 0; i < p.m; ++i) {
    const int64_t g_row = i * p.grad_output_stride + j0, z_row = i * p.z_stride + j0, s_row = i * p.scaled_grad_stride + j0;
    int64_t c = 0;
    for (; c + kLanes <= cols; c += kLanes) {
      const Vec g = vload_as_float<T>(p.grad_output, g_row + c);
      vstore(sums + c, vfma(g, vload_as_float<T>(p.z, z_row + c), vload(sums + c)));
      vstore_from_float<T>(p.scaled_grad, s_row + c, vmul(g, vload(p.column_scale + j0 + c)));
    }
    for (; c < cols; ++c) {
      const float g = load_as_float<T>(p.grad_output, g_row + c);
      sums[c] += g * load_as_float<T>(p.z, z_row + c);
      store_from_float<T>(p.scaled_grad, s_row + c, g * p.column_scale[j0 + c]);
    }
  }
  for (int64_t c = 0; c < cols; ++c) store_any(p.magnitude_dtype, p.grad_magnitude, j0 + c, sums[c] / p.norm[j0 + c]);
}

}  // namespace

void dora_norms(const DoraNormParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) { norms<decltype(tag)::value>(p); });
}

void dora_columns(const DoraColumnParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) {
    parallel_for((p.n + kColumnsPerTask - 1) / kColumnsPerTask, [&](int64_t task, int) {
      const int64_t j0 = task * kColumnsPerTask, j1 = std::min(p.n, j0 + kColumnsPerTask);
      float sums[kColumnsPerTask];
      columns_block<decltype(tag)::value>(p, j0, j1, sums);
    });
  });
}

}  // namespace lk::cpu::LK_SIMD_NS
