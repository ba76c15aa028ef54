// The two GEMM micro-kernels of the CPU linear algebra (csrc/cpu/linalg.cpp): dot products of
// many columns at once (cross_gram: C = XᵀY) and the product of a set of columns with a small
// matrix (update: Y = X·Q, or Y += X·Q), both on column-major float64 columns reached through tables
// of column pointers, plus multiply (a parallel X·Q over whole matrices) and the vector dot/axpy.
// Used by the blocked Jacobi (jacobi_blocked.h) and the symmetric eigensolver (sym_eigen.h).
//
// Include only from csrc/cpu/*.cpp (inside no namespace); everything lands in lk::cpu::LK_SIMD_NS.
#pragma once
#include <algorithm>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "core/parallel.h"
#include "cpu/vec.h"  // DVec, kDLanes and the intrinsics headers

namespace lk::cpu::LK_SIMD_NS {

// Partial sums in 8 independent lanes: the compiler vectorizes it at every SIMD level.
inline double dot(const double* x, const double* y, int64_t n) {
  constexpr int kAcc = 8;
  double acc[kAcc] = {};
  int64_t i = 0;
  for (; i + kAcc <= n; i += kAcc)
    for (int k = 0; k < kAcc; ++k) acc[k] += x[i + k] * y[i + k];
  double s = 0;
  for (int k = 0; k < kAcc; ++k) s += acc[k];
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

inline void axpy(double alpha, const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

namespace column_kernels {
// ---- the register tiles of the two GEMM micro-kernels (on vec.h's float64 DVec) -------------
// Update tile: kUpdRowVecs vectors of rows × kUpdCols columns of the output, per reduction step
// kUpdRowVecs loads and kUpdCols broadcasts. Gram tile: kDotX × kDotY dot products of columns,
// per step kDotX + kDotY loads (summed across lanes at the end). Accumulators + operands fit:
//   AVX-512 update 3×8 = 24 zmm + 3 + 1, Gram 4×5 = 20 zmm + 4 + 1 (Zen4: one zmm FMA a cycle)
//   AVX2    update 2×6 = 12 ymm + 2 + 1, Gram 3×3 =  9 ymm + 3 + 1
//   NEON    update 3×6 = 18 q   + 3 + 1, Gram 4×5 = 20 q   + 4 + 1
//   scalar  a 4-double struct the compiler keeps in registers where it can
#if defined(LK_SIMD_AVX512)
constexpr int kUpdRowVecs = 3, kUpdCols = 8, kDotX = 4, kDotY = 5;
#elif defined(LK_SIMD_AVX2)
constexpr int kUpdRowVecs = 2, kUpdCols = 6, kDotX = 3, kDotY = 3;
#elif defined(LK_SIMD_NEON)
constexpr int kUpdRowVecs = 3, kUpdCols = 6, kDotX = 4, kDotY = 5;
#else
constexpr int kUpdRowVecs = 2, kUpdCols = 4, kDotX = 2, kDotY = 2;
#endif

// The element type T of the columns picks its vector type (float64 is the one the SVD uses: a
// float32 Jacobi cannot resolve the orthogonality its float32 output keeps).
template <class T>
struct Simd;
template <>
struct Simd<double> {
  using V = DVec;
  static constexpr int kLanes = kDLanes;
  static V zero() { return dzero(); }
  static V set1(double x) { return dset1(x); }
  static V load(const double* p) { return dload(p); }
  static void store(double* p, V v) { dstore(p, v); }
  static V fma(V a, V b, V acc) { return dfma(a, b, acc); }
  static double sum(V v) { return dsum(v); }
};
template <class T>
constexpr int kUpdRows = kUpdRowVecs * Simd<T>::kLanes;

constexpr int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// The columns of a block pair live in two separate runs of the matrix: the kernels address them
// through a table of column pointers.
template <class T>
struct Panel {
  T* const* col;  // col[c] = first row of column c
  int k;          // columns
  int64_t rows;
};

// update's scratch: the packed Q and one row tile of the output (thread_local at the callers:
// each pool thread keeps its own, grown once).
template <class T>
struct UpdateScratch {
  std::vector<T> qpack, y;
};

// ---- Gram: c[i + j·ldc] = x_iᵀ·y_j, columns through pointer tables --------------------------
// Dot products straight from the column-major columns (no packing: transposing the rows into a
// row-major panel for an outer-product kernel cost more than the kernel itself). A kDotX × kDotY
// tile streams its columns once, kDotX + kDotY vector loads per kDotX·kDotY FMAs; a ragged edge
// tile repeats its last column (a few wasted FMAs, no tail code).
template <class T, class C>
inline void dot_tile(const T* const* x, const T* const* y, int64_t rows, C* c, int64_t ldc, int nx, int ny) {
  using S = Simd<T>;
  const T* xs[kDotX];
  const T* ys[kDotY];
  for (int i = 0; i < kDotX; ++i) xs[i] = x[std::min(i, nx - 1)];
  for (int j = 0; j < kDotY; ++j) ys[j] = y[std::min(j, ny - 1)];
  typename S::V acc[kDotX][kDotY];
  for (int i = 0; i < kDotX; ++i)
    for (int j = 0; j < kDotY; ++j) acc[i][j] = S::zero();
  int64_t r = 0;
  for (; r + S::kLanes <= rows; r += S::kLanes) {
    typename S::V xv[kDotX];
    for (int i = 0; i < kDotX; ++i) xv[i] = S::load(xs[i] + r);
    for (int j = 0; j < kDotY; ++j) {
      const typename S::V yv = S::load(ys[j] + r);
      for (int i = 0; i < kDotX; ++i) acc[i][j] = S::fma(xv[i], yv, acc[i][j]);
    }
  }
  for (int i = 0; i < nx; ++i)
    for (int j = 0; j < ny; ++j) {
      T sum = S::sum(acc[i][j]);
      for (int64_t t = r; t < rows; ++t) sum += xs[i][t] * ys[j][t];
      c[i + j * ldc] = sum;
    }
}

template <class T, class C>
inline void cross_gram(const T* const* x, int nx, const T* const* y, int ny, int64_t rows, C* c, int64_t ldc) {
  for (int j = 0; j < ny; j += kDotY)
    for (int i = 0; i < nx; i += kDotX)
      dot_tile(x + i, y + j, rows, c + i + j * ldc, ldc, std::min(kDotX, nx - i), std::min(kDotY, ny - j));
}

// ---- update: Y ← X·Q (X rows × k through its column table, Q k × nout, Y nout columns) ----------
// Rows are independent (output row r needs only input row r), so each tile of kUpdRows rows is
// computed for all columns into y and then copied out: Y may be X itself (in place, with
// kUpdRows·nout elements of scratch). Q is packed (as T) into kUpdCols-wide
// panels (row kk of a panel contiguous, zero-padded); the row tile's X (kUpdRows·k·8 bytes, 9 KB at
// k = 48 in float64) and the packed Q (k² · 8 bytes, 18 KB) stay in L1 while the micro-tile,
// kUpdRows rows × kUpdCols columns, runs over the panels: per reduction step kUpdRowVecs vector
// loads + kUpdCols broadcasts feed kUpdRowVecs·kUpdCols FMAs.
template <int RV, class T>
inline void update_tile(const Panel<T>& x, int64_t r, const T* qp, T* y, int64_t ldy, int ncols) {
  using S = Simd<T>;
  typename S::V acc[RV][kUpdCols];
  for (int v = 0; v < RV; ++v)
    for (int c = 0; c < kUpdCols; ++c) acc[v][c] = S::zero();
  for (int kk = 0; kk < x.k; ++kk) {
    const T* src = x.col[kk] + r;
    typename S::V xv[RV];
    for (int v = 0; v < RV; ++v) xv[v] = S::load(src + v * S::kLanes);
    const T* qk = qp + kk * kUpdCols;
    for (int c = 0; c < kUpdCols; ++c) {
      const typename S::V b = S::set1(qk[c]);
      for (int v = 0; v < RV; ++v) acc[v][c] = S::fma(xv[v], b, acc[v][c]);
    }
  }
  for (int c = 0; c < ncols; ++c)
    for (int v = 0; v < RV; ++v) S::store(y + c * ldy + v * S::kLanes, acc[v][c]);
}

// Q's rows qrow[0..k) and columns qcol[0..nout) of the matrix q (ld ldq) form the k × nout factor;
// out[0..nout) are Y's columns.
// accumulate: Y += X·Q instead.
template <class T, class Q>
inline void update(const Panel<T>& x, const Q* q, int64_t ldq, const int* qrow, const int* qcol, int nout,
                   T* const* out, UpdateScratch<T>& s, bool accumulate = false) {
  using S = Simd<T>;
  constexpr int kRows = kUpdRows<T>;
  const int k = x.k;
  const int panels = (nout + kUpdCols - 1) / kUpdCols;
  // qpack[p][kk][c] = Q[qrow[kk]][qcol[p·NC + c]].
  s.qpack.assign(static_cast<size_t>(panels) * k * kUpdCols, T(0));
  for (int p = 0; p < panels; ++p)
    for (int c = 0; c < kUpdCols && p * kUpdCols + c < nout; ++c) {
      const Q* qc = q + qcol[p * kUpdCols + c] * ldq;
      for (int kk = 0; kk < k; ++kk) s.qpack[(static_cast<size_t>(p) * k + kk) * kUpdCols + c] = static_cast<T>(qc[qrow[kk]]);
    }
  s.y.resize(static_cast<size_t>(panels) * kUpdCols * kRows);
  T* y = s.y.data();  // column c of the row tile at y + c·kRows
  auto copy_back = [&](int64_t r, int64_t rt) {  // vector moves: a memmove call per column cost 7%
    for (int c = 0; c < nout; ++c) {
      // The pointer in a local: a store through out[c] could alias the table, so the compiler
      // reloaded it every vector (the copy-back was 14% of the run).
      T* const dst = out[c] + r;
      const T* const src = y + c * kRows;
      int64_t t = 0;
      if (accumulate) {
        for (; t < rt; ++t) dst[t] += src[t];
        continue;
      }
      for (; t + S::kLanes <= rt; t += S::kLanes) S::store(dst + t, S::load(src + t));
      for (; t < rt; ++t) dst[t] = src[t];
    }
  };
  auto tiles = [&](int64_t r, auto rv) {
    for (int p = 0; p < panels; ++p)
      update_tile<decltype(rv)::value>(x, r, s.qpack.data() + static_cast<size_t>(p) * k * kUpdCols,
                                       y + p * kUpdCols * kRows, kRows, std::min(kUpdCols, nout - p * kUpdCols));
  };
  int64_t r = 0;
  for (; r + kRows <= x.rows; r += kRows) {
    tiles(r, std::integral_constant<int, kUpdRowVecs>{});
    copy_back(r, kRows);
  }
  for (; r + S::kLanes <= x.rows; r += S::kLanes) {
    tiles(r, std::integral_constant<int, 1>{});
    copy_back(r, S::kLanes);
  }
  for (; r < x.rows; ++r) {
    for (int c = 0; c < nout; ++c) {
      const T* qp = s.qpack.data() + static_cast<size_t>(c / kUpdCols) * k * kUpdCols + c % kUpdCols;
      T sum = 0;
      for (int kk = 0; kk < k; ++kk) sum += x.col[kk][r] * qp[kk * kUpdCols];
      y[c * kRows] = sum;
    }
    copy_back(r, 1);
  }
}

// out[:, j] = x·q[:, j] for the columns j of the blocks of kOutBlock (one task each): x has k
// columns x_col(kk) of `rows` rows, q is k × cols (ld ldq), out's column j at out + j·ldo.
inline void multiply(const double* x, int64_t ldx, int64_t rows, int k, const double* q, int64_t ldq, int cols,
                     double* out, int64_t ldo) {
  constexpr int kOutBlock = 48;
  parallel_for((cols + kOutBlock - 1) / kOutBlock, [&](int64_t task, int) {
    thread_local UpdateScratch<double> s;
    thread_local std::vector<double*> in_cols, out_cols;
    thread_local std::vector<int> qrow, qcol;
    const int j0 = static_cast<int>(task) * kOutBlock, nout = std::min(kOutBlock, cols - j0);
    in_cols.clear();
    for (int kk = 0; kk < k; ++kk) in_cols.push_back(const_cast<double*>(x) + kk * ldx);
    out_cols.clear();
    for (int j = 0; j < nout; ++j) out_cols.push_back(out + (j0 + j) * ldo);
    qrow.resize(static_cast<size_t>(k));
    std::iota(qrow.begin(), qrow.end(), 0);
    qcol.resize(static_cast<size_t>(nout));
    std::iota(qcol.begin(), qcol.end(), j0);
    update(Panel<double>{in_cols.data(), k, rows}, q, ldq, qrow.data(), qcol.data(), nout, out_cols.data(), s);
  });
}

}  // namespace column_kernels
}  // namespace lk::cpu::LK_SIMD_NS
