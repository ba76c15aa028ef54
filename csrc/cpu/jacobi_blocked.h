// Blocked one-sided Jacobi (Hestenes) for the larger SVDs (n > ~128 columns): the columns are
// split into nb blocks of width b ≈ 24 and rotated a block pair at a time. For a pair (I, J):
//   G = [w_I w_J]ᵀ[w_I w_J]          (2b × 2b Gram matrix: a GEMM over the rows for the cross
//                                     block w_Jᵀw_I, the diagonal blocks kept from before)
//   G ≈ Q·Λ·Qᵀ                        (two sweeps of two-sided Jacobi on G in float64)
//   [w_I w_J] ← [w_I w_J]·Q, [v_I v_J] ← [v_I v_J]·Q   (two GEMMs, only the columns Q moved)
// which orthogonalizes all 2b columns against each other at once. The pairs are visited in
// row-cyclic order, run in parallel by anti-diagonals (see jacobi_blocked below).
//
// Napkin math per sweep (m rows, n columns, nb = n/b blocks, nb²/2 pairs):
//   Gram    cross block 2·m·b² per pair → m·n² per sweep
//   update  w: 2·m·(2b)² = 8·m·b², v: 8·n·b² per pair → 4·(m + n)·n² per sweep
// so m = n = 1024: 9·n³ ≈ 9.7 GFLOP a full sweep, 8/9 of it in the updates; the two GEMM
// micro-kernels run at ~50 GFLOP/s on one Zen4 core (AVX-512, ~58 peak in float64). The inner
// eigensolve costs ~3·K³ element updates per inner sweep per pair (K = 2b; every round rotates
// G's columns, its rows and Q's columns): ~72·n²·b flops a sweep for two inner sweeps, 1.8 GFLOP
// at n = 1024, but L2-bound (G, its copy and Q are 3·K² doubles): a third of the time. That is why
// b is small: b = 16, 24, 32 measured the same within noise (smaller b: cheaper eigensolves,
// narrower GEMMs, more pairs), b = 64 was much slower.
//   Measured on the 2-core Zen4 (shared with other jobs; CPU time is the steadier number) at tol
// 6e-5 (~m·ε_float32): random 1024 × 1024: 6 sweeps (4 full, 1 partial, 1 check), 0.93 s wall,
// 1.75 s CPU: GEMM updates 45%, eigensolves 33%, Gram 11%; random 512 × 512: 6 sweeps, 0.17 s
// wall. At tol 1e-7: random 512: 7 sweeps, 1024: 7; graded spectrum (σ 1 … 1e-6) 1024: 8;
// rank deficient 311: 10.
//   Pairs whose G is already diagonal to tol cost only the cross Gram (the check sweep costs
// ~1/10 of a full one). Eigenvalues are sorted descending into the lower block of the pair, so
// large columns gather at the front (de Rijk's idea): with the row-cyclic order this took 6 sweeps
// at n = 1024 where a round-robin tournament order took 13.
//
// Accuracy: Gram entries carry errors ~m·ε·‖w_i‖‖w_j‖ (scaled like the entries themselves), and
// two-sided Jacobi on a positive semidefinite matrix with such perturbations is accurate relative
// to the diagonal scaling (Demmel–Veselić), so graded columns (σ from 1 to 1e-6) converge to the
// same relative tol as the plain column-pair method. Measured ‖w·vᵀ − A‖/‖A‖ ≤ 6e-13 and
// ‖vᵀv − I‖_max ≤ 1e-12 up to n = 1024.
//
// Include only from csrc/cpu/*.cpp (inside no namespace); everything lands in lk::cpu::LK_SIMD_NS.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "core/parallel.h"
#include "cpu/vec.h"  // DVec, kDLanes and the intrinsics headers

namespace lk::cpu::LK_SIMD_NS {
namespace jacobi_detail {

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
constexpr int kUpdRows = kUpdRowVecs * kDLanes;

constexpr int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// The columns of a block pair live in two separate runs of the matrix: the kernels address them
// through a table of column pointers.
struct Panel {
  double* const* col;  // col[c] = first row of column c
  int k;               // columns
  int64_t rows;
};

// Scratch of one pair's work (thread_local: each pool thread keeps its own, grown once).
struct PairScratch {
  std::vector<double*> cols;
  std::vector<double> qpack, y;
  std::vector<int> slot_of, touched, sorted;
};

// ---- Gram: c[i + j·ldc] = x_iᵀ·y_j, columns through pointer tables --------------------------
// Dot products straight from the column-major columns (no packing: transposing the rows into a
// row-major panel for an outer-product kernel cost more than the kernel itself). A kDotX × kDotY
// tile streams its columns once, kDotX + kDotY vector loads per kDotX·kDotY FMAs; a ragged edge
// tile repeats its last column (a few wasted FMAs, no tail code).
inline void dot_tile(const double* const* x, const double* const* y, int64_t rows, double* c, int64_t ldc, int nx,
                     int ny) {
  const double* xs[kDotX];
  const double* ys[kDotY];
  for (int i = 0; i < kDotX; ++i) xs[i] = x[std::min(i, nx - 1)];
  for (int j = 0; j < kDotY; ++j) ys[j] = y[std::min(j, ny - 1)];
  DVec acc[kDotX][kDotY];
  for (int i = 0; i < kDotX; ++i)
    for (int j = 0; j < kDotY; ++j) acc[i][j] = dzero();
  int64_t r = 0;
  for (; r + kDLanes <= rows; r += kDLanes) {
    DVec xv[kDotX];
    for (int i = 0; i < kDotX; ++i) xv[i] = dload(xs[i] + r);
    for (int j = 0; j < kDotY; ++j) {
      const DVec yv = dload(ys[j] + r);
      for (int i = 0; i < kDotX; ++i) acc[i][j] = dfma(xv[i], yv, acc[i][j]);
    }
  }
  for (int i = 0; i < nx; ++i)
    for (int j = 0; j < ny; ++j) {
      double sum = dsum(acc[i][j]);
      for (int64_t t = r; t < rows; ++t) sum += xs[i][t] * ys[j][t];
      c[i + j * ldc] = sum;
    }
}

inline void cross_gram(const double* const* x, int nx, const double* const* y, int ny, int64_t rows, double* c,
                       int64_t ldc) {
  for (int j = 0; j < ny; j += kDotY)
    for (int i = 0; i < nx; i += kDotX)
      dot_tile(x + i, y + j, rows, c + i + j * ldc, ldc, std::min(kDotX, nx - i), std::min(kDotY, ny - j));
}

// ---- update: X ← X·Q (X rows × k through its column table, Q k × k column-major) ----------------
// Rows are independent (output row r needs only input row r), so each tile of kUpdRows rows is
// computed for all columns into y and then copied back: in place with kUpdRows·k doubles of
// scratch. Q is packed into kUpdCols-wide panels (row kk of a panel contiguous, zero-padded);
// the row tile's X (kUpdRows·k·8 bytes, 9 KB at k = 48) and the packed Q (k² · 8 bytes, 18 KB)
// stay in L1 while the micro-tile, kUpdRows rows × kUpdCols columns, runs over the panels: per
// reduction step kUpdRowVecs vector loads + kUpdCols broadcasts feed kUpdRowVecs·kUpdCols FMAs.
template <int RV>
inline void update_tile(const Panel& x, int64_t r, const double* qp, double* y, int64_t ldy, int ncols) {
  DVec acc[RV][kUpdCols];
  for (int v = 0; v < RV; ++v)
    for (int c = 0; c < kUpdCols; ++c) acc[v][c] = dzero();
  for (int kk = 0; kk < x.k; ++kk) {
    const double* src = x.col[kk] + r;
    DVec xv[RV];
    for (int v = 0; v < RV; ++v) xv[v] = dload(src + v * kDLanes);
    const double* qk = qp + kk * kUpdCols;
    for (int c = 0; c < kUpdCols; ++c) {
      const DVec b = dset1(qk[c]);
      for (int v = 0; v < RV; ++v) acc[v][c] = dfma(xv[v], b, acc[v][c]);
    }
  }
  for (int c = 0; c < ncols; ++c)
    for (int v = 0; v < RV; ++v) dstore(y + c * ldy + v * kDLanes, acc[v][c]);
}

// Q's rows qrow[0..k) and columns qcol[0..k) of the K × K matrix q (ld ldq) form the k × k factor.
inline void update(const Panel& x, const double* q, int64_t ldq, const int* qrow, const int* qcol, PairScratch& s) {
  const int k = x.k;
  const int panels = (k + kUpdCols - 1) / kUpdCols;
  // qpack[p][kk][c] = Q[qrow[kk]][qcol[p·NC + c]].
  s.qpack.assign(static_cast<size_t>(panels) * k * kUpdCols, 0.0);
  for (int p = 0; p < panels; ++p)
    for (int c = 0; c < kUpdCols && p * kUpdCols + c < k; ++c) {
      const double* qc = q + qcol[p * kUpdCols + c] * ldq;
      for (int kk = 0; kk < k; ++kk) s.qpack[(static_cast<size_t>(p) * k + kk) * kUpdCols + c] = qc[qrow[kk]];
    }
  s.y.resize(static_cast<size_t>(panels) * kUpdCols * kUpdRows);
  double* y = s.y.data();  // column c of the row tile at y + c·kUpdRows
  auto copy_back = [&](int64_t r, int64_t rt) {  // vector moves: a memmove call per column cost 7%
    for (int c = 0; c < k; ++c) {
      // The pointer in a local: a store through x.col[c] could alias the table, so the compiler
      // reloaded it every vector (the copy-back was 14% of the run).
      double* const dst = x.col[c] + r;
      const double* const src = y + c * kUpdRows;
      int64_t t = 0;
      for (; t + kDLanes <= rt; t += kDLanes) dstore(dst + t, dload(src + t));
      for (; t < rt; ++t) dst[t] = src[t];
    }
  };
  auto tiles = [&](int64_t r, auto rv) {
    for (int p = 0; p < panels; ++p)
      update_tile<decltype(rv)::value>(x, r, s.qpack.data() + static_cast<size_t>(p) * k * kUpdCols,
                                       y + p * kUpdCols * kUpdRows, kUpdRows, std::min(kUpdCols, k - p * kUpdCols));
  };
  int64_t r = 0;
  for (; r + kUpdRows <= x.rows; r += kUpdRows) {
    tiles(r, std::integral_constant<int, kUpdRowVecs>{});
    copy_back(r, kUpdRows);
  }
  for (; r + kDLanes <= x.rows; r += kDLanes) {
    tiles(r, std::integral_constant<int, 1>{});
    copy_back(r, kDLanes);
  }
  for (; r < x.rows; ++r) {
    for (int c = 0; c < k; ++c) {
      const double* qp = s.qpack.data() + static_cast<size_t>(c / kUpdCols) * k * kUpdCols + c % kUpdCols;
      double sum = 0.0;
      for (int kk = 0; kk < k; ++kk) sum += x.col[kk][r] * qp[kk * kUpdCols];
      y[c * kUpdRows] = sum;
    }
    copy_back(r, 1);
  }
}

// ---- the small eigensolve: two-sided Jacobi on G (K × K, K even) in a parallel ordering --------
// Rotating one pair at a time touches two rows of G, strided in memory, and runs a chain of
// divisions and square roots per rotation: that was 85% of the time at b = 64. Instead each round
// rotates K/2 disjoint pairs at once (Brent–Luk round-robin: a sweep is K − 1 rounds and meets
// every pair once), with G kept in "slot" order so that the pairs are always slots (i, i + h),
// h = K/2:
//   columns  G[:, i], G[:, i + h] ← c·G[:, i] − s·G[:, i + h], s·G[:, i] + c·G[:, i + h]
//   rows     G[0:h, j], G[h:K, j] ← C⊙top − S⊙bottom, S⊙top + C⊙bottom   (C, S per pair)
//   Q        columns like G's (Q's rows stay in panel order; its columns are reached through a
//            table that follows the slots)
// all contiguous loops over K doubles, vectorized. Between rounds the slots move one place around
// the ring (slot 0 fixed); the row pass writes its output to the other buffer already in the next
// round's order, so the permutation costs nothing extra.
//   Rotation (p, q) when |g_pq| > tol·sqrt(g_pp·g_qq) (the relative test of the outer iteration,
// so zero columns are never rotated), by Rutishauser's formulas, and g_pp, g_qq, g_pq set to
// their exact rotated values.
struct EigenScratch {
  std::vector<double> g, g2, q, c, s, pp, qq;
  std::vector<int> order, pos, slot, slot2, qcol, qcol2;
  std::vector<char> touched;  // per panel column: some rotation involved it
};

// new[t] = old[order[t]], order = [0, h, 1 … h − 2, h + 1 … K − 1, h − 1]: the round-robin step
// (one place around the ring 1 … h − 1, K − 1 … h).
inline void ring_order(int K, int* order) {
  const int h = K / 2;
  if (h == 1) {
    order[0] = 0;
    order[1] = 1;
    return;
  }
  order[0] = 0;
  order[1] = h;
  for (int t = 2; t < h; ++t) order[t] = t - 1;
  for (int t = h; t < K - 1; ++t) order[t] = t + 1;
  order[K - 1] = h - 1;
}

// dst (the column in next-round row order) = the row rotation of src's halves: with T and B the
// rotated top and bottom halves, dst = [T0, B0, T1 … T(h−2), B1 … B(h−1), T(h−1)]. Written as two
// full-length vector loops (B to dst[h − 1 …], then T to dst[1 …]) and four fix-ups, so no loop
// has a ragged scalar tail when h is a multiple of the vector width.
inline void rotate_rows_ring(const double* __restrict src, double* __restrict dst, const double* __restrict c,
                             const double* __restrict s, int h) {
  const double* top = src;
  const double* bottom = src + h;
  if (h == 1) {
    dst[0] = c[0] * top[0] - s[0] * bottom[0];
    dst[1] = s[0] * top[0] + c[0] * bottom[0];
    return;
  }
  for (int i = 0; i < h; ++i) dst[h - 1 + i] = s[i] * top[i] + c[i] * bottom[i];
  for (int i = 0; i < h; ++i) dst[1 + i] = c[i] * top[i] - s[i] * bottom[i];
  dst[h] = s[1] * top[1] + c[1] * bottom[1];
  dst[0] = dst[1];
  dst[1] = s[0] * top[0] + c[0] * bottom[0];
  dst[2 * h - 1] = c[h - 1] * top[h - 1] - s[h - 1] * bottom[h - 1];
}

inline void rotate_columns(double* __restrict x, double* __restrict z, double c, double s, int K) {
  for (int r = 0; r < K; ++r) {
    const double xr = x[r], zr = z[r];
    x[r] = c * xr - s * zr;
    z[r] = s * xr + c * zr;
  }
}

// Returns whether any rotation was applied. e.g holds G on entry; on exit e.g the rotated G in
// slot order, e.slot the panel column each slot holds, and slot t's eigenvector is column
// e.qcol[t] of e.q (K × K).
inline bool eigen_jacobi(EigenScratch& e, int K, double tol, int max_sweeps) {
  const int h = K / 2;
  const size_t kk = static_cast<size_t>(K) * K;
  e.g2.resize(kk);
  e.q.assign(kk, 0.0);
  for (int i = 0; i < K; ++i) e.q[static_cast<size_t>(i) * K + i] = 1.0;
  for (auto* v : {&e.order, &e.pos, &e.slot, &e.slot2, &e.qcol, &e.qcol2}) v->resize(static_cast<size_t>(K));
  for (auto* v : {&e.c, &e.s, &e.pp, &e.qq}) v->resize(static_cast<size_t>(h));
  ring_order(K, e.order.data());
  for (int t = 0; t < K; ++t) e.pos[e.order[t]] = t;
  std::iota(e.slot.begin(), e.slot.end(), 0);
  std::iota(e.qcol.begin(), e.qcol.end(), 0);
  e.touched.assign(static_cast<size_t>(K), 0);
  const int* order = e.order.data();
  const int* pos = e.pos.data();
  double* c = e.c.data();
  double* sn = e.s.data();
  bool any = false;
  for (int sweep = 0; sweep < max_sweeps; ++sweep) {
    bool rotated = false;
    for (int round = 0; round < K - 1; ++round) {
      double* g = e.g.data();
      double* g2 = e.g2.data();
      const int* qcol = e.qcol.data();
      for (int i = 0; i < h; ++i) {
        const double app = g[i + static_cast<size_t>(i) * K], aqq = g[(i + h) * static_cast<size_t>(K + 1)];
        const double apq = g[i + static_cast<size_t>(i + h) * K];
        c[i] = 1.0;
        sn[i] = 0.0;
        // Written as !(≤) so a NaN counts as not orthogonal: such a matrix never converges.
        if (std::fabs(apq) <= tol * std::sqrt(app) * std::sqrt(aqq)) continue;
        rotated = true;
        const double zeta = (aqq - app) / (2.0 * apq);
        // tan of the angle that zeroes g_pq, the smaller root; 1/(2ζ) once ζ² would overflow.
        const double t = std::fabs(zeta) > 1e150 ? 0.5 / zeta
                                                 : std::copysign(1.0, zeta) / (std::fabs(zeta) + std::sqrt(1.0 + zeta * zeta));
        c[i] = 1.0 / std::sqrt(1.0 + t * t);
        sn[i] = c[i] * t;
        e.touched[e.slot[i]] = e.touched[e.slot[i + h]] = 1;
        e.pp[i] = std::max(app - t * apq, 0.0);
        e.qq[i] = std::max(aqq + t * apq, 0.0);
      }
      // A separate loop: the h rotations' divisions and square roots above overlap each other
      // instead of stalling each column update behind its own.
      for (int i = 0; i < h; ++i) {
        if (sn[i] == 0.0) continue;
        rotate_columns(g + static_cast<size_t>(i) * K, g + static_cast<size_t>(i + h) * K, c[i], sn[i], K);
        rotate_columns(e.q.data() + static_cast<size_t>(qcol[i]) * K, e.q.data() + static_cast<size_t>(qcol[i + h]) * K,
                       c[i], sn[i], K);
      }
      for (int u = 0; u < K; ++u)
        rotate_rows_ring(g + static_cast<size_t>(order[u]) * K, g2 + static_cast<size_t>(u) * K, c, sn, h);
      for (int i = 0; i < h; ++i) {
        if (sn[i] == 0.0) continue;
        const size_t p = static_cast<size_t>(pos[i]), q = static_cast<size_t>(pos[i + h]);
        g2[p * (K + 1)] = e.pp[i];
        g2[q * (K + 1)] = e.qq[i];
        g2[p + q * K] = g2[q + p * K] = 0.0;
      }
      for (int t = 0; t < K; ++t) {
        e.slot2[t] = e.slot[order[t]];
        e.qcol2[t] = e.qcol[order[t]];
      }
      e.g.swap(e.g2);
      e.slot.swap(e.slot2);
      e.qcol.swap(e.qcol2);
    }
    any = any || rotated;
    if (!rotated) break;
  }
  return any;
}

// Does G (k × k, ld ldg) have an off-diagonal entry above tol relative to its diagonal (NaN: yes)?
inline bool exceeds(const double* g, int k, int64_t ldg, double tol) {
  for (int j = 1; j < k; ++j) {
    const double dj = std::sqrt(g[j + j * ldg]);
    for (int i = 0; i < j; ++i)
      if (!(std::fabs(g[i + j * ldg]) <= tol * std::sqrt(g[i + i * ldg]) * dj)) return true;
  }
  return false;
}

// What the pairs of one call share: the matrices, the block boundaries, and each block's own
// Gram matrix. A block's Gram is needed at each of its nb − 1 pair visits but changes only when
// the block is rotated, and then it is the rotated G's diagonal block (Qᵀ·G·Q, exact but for
// rounding): so a pair computes only its cross block w_Jᵀ·w_I, half the Gram flops. The cache is
// recomputed from the columns at the start of every sweep, so rounding drift never builds up.
struct Problem {
  double* w;
  int64_t rows, ldw;
  double* v;  // null: w only
  int64_t n, ldv;
  double tol;
  std::vector<int64_t> start;             // block b is columns [start[b], start[b + 1])
  std::vector<std::vector<double>> gram;  // block b's Gram, width² column-major
  // Rows past which block b's columns of w (of v) are all exactly zero. The usual input is a
  // triangular R with v = I: in the first sweep pair (i, j) then needs only rows < start[j + 1]
  // of both, ~2/3 of that sweep's work; a rotation gives both blocks the larger bound.
  std::vector<int64_t> w_rows, v_rows;
};

// The number of leading rows of columns [c0, c1) that hold every nonzero (a scan, m·b reads).
inline int64_t nonzero_rows(const double* base, int64_t ld, int64_t rows, int64_t c0, int64_t c1) {
  int64_t bound = 0;
  for (int64_t c = c0; c < c1; ++c) {
    const double* col = base + c * ld;
    for (int64_t r = rows; r > bound; --r)
      if (col[r - 1] != 0.0) {
        bound = r;
        break;
      }
  }
  return bound;
}

inline void fill_cols(std::vector<double*>& cols, double* base, int64_t ld, int64_t i0, int64_t i1, int64_t j0,
                      int64_t j1) {
  cols.clear();
  for (int64_t j = i0; j < i1; ++j) cols.push_back(base + j * ld);
  for (int64_t j = j0; j < j1; ++j) cols.push_back(base + j * ld);
}

inline void block_gram(Problem& pr, int64_t blk) {
  thread_local PairScratch s;
  const int64_t c0 = pr.start[blk], c1 = pr.start[blk + 1];
  const int bw = static_cast<int>(c1 - c0);
  fill_cols(s.cols, pr.w, pr.ldw, c0, c1, c1, c1);
  pr.gram[blk].resize(static_cast<size_t>(bw) * bw);
  cross_gram(s.cols.data(), bw, s.cols.data(), bw, pr.w_rows[blk], pr.gram[blk].data(), bw);
}

// One block pair (I < J): returns whether its Gram matrix was off-diagonal beyond tol (then rotated).
inline bool rotate_pair(Problem& pr, int64_t bi, int64_t bj) {
  thread_local PairScratch s;
  thread_local EigenScratch e;
  const int64_t i0 = pr.start[bi], i1 = pr.start[bi + 1], j0 = pr.start[bj], j1 = pr.start[bj + 1];
  const int wi = static_cast<int>(i1 - i0), k = wi + static_cast<int>(j1 - j0);
  const int K = k + (k & 1);  // the parallel ordering pairs an even count: a zero row/column pads
  const int64_t w_rows = std::max(pr.w_rows[bi], pr.w_rows[bj]);
  fill_cols(s.cols, pr.w, pr.ldw, i0, i1, j0, j1);
  e.g.assign(static_cast<size_t>(K) * K, 0.0);
  cross_gram(s.cols.data() + wi, k - wi, s.cols.data(), wi, w_rows, e.g.data() + wi, K);  // w_Jᵀ·w_I
  for (int j = 0; j < wi; ++j)
    for (int i = wi; i < k; ++i) e.g[j + static_cast<size_t>(i) * K] = e.g[i + static_cast<size_t>(j) * K];
  auto blocks = [&](auto&& fn) {  // fn(block, first panel column, width)
    fn(bi, 0, wi);
    fn(bj, wi, k - wi);
  };
  blocks([&](int64_t blk, int c0, int bw) {
    for (int c = 0; c < bw; ++c)
      std::copy_n(pr.gram[blk].data() + static_cast<size_t>(c) * bw, bw, e.g.data() + c0 + static_cast<size_t>(c0 + c) * K);
  });
  if (!exceeds(e.g.data(), k, K, pr.tol)) return false;

  // Two sweeps at a tighter tolerance than the outer test (measured: one sweep took 9 outer
  // sweeps at n = 1024, two 6, to convergence 6 but at 1.4× the time).
  eigen_jacobi(e, K, pr.tol * 1e-3, 2);

  // Panel columns some rotation touched: only they change. Each keeps its place unless touched;
  // the touched ones get the eigenvectors of their slots sorted by descending eigenvalue, so the
  // larger columns land in block I (de Rijk's effect: the dominant subspace gathers at the front).
  const double* g = e.g.data();
  s.slot_of.assign(static_cast<size_t>(K), -1);
  for (int t = 0; t < K; ++t) s.slot_of[e.slot[t]] = t;
  s.touched.clear();
  s.sorted.clear();
  for (int c = 0; c < k; ++c)
    if (e.touched[c]) {
      s.touched.push_back(c);
      s.sorted.push_back(s.slot_of[c]);
    }
  std::stable_sort(s.sorted.begin(), s.sorted.end(), [&](int a, int b) { return g[a + a * K] > g[b + b * K]; });
  for (size_t t = 0; t < s.touched.size(); ++t) s.slot_of[s.touched[t]] = s.sorted[t];  // now: column → final slot

  blocks([&](int64_t blk, int c0, int bw) {
    for (int c = 0; c < bw; ++c)
      for (int r = 0; r < bw; ++r)
        pr.gram[blk][r + static_cast<size_t>(c) * bw] = g[s.slot_of[c0 + r] + static_cast<size_t>(s.slot_of[c0 + c]) * K];
  });
  const int nt = static_cast<int>(s.touched.size());
  for (int& t : s.sorted) t = e.qcol[t];  // the Q column of each touched column's slot
  auto rotate = [&](double* base, int64_t ld, int64_t rows) {
    s.cols.clear();
    for (int c : s.touched) s.cols.push_back(base + (c < wi ? i0 + c : j0 + c - wi) * ld);
    update(Panel{s.cols.data(), nt, rows}, e.q.data(), K, s.touched.data(), s.sorted.data(), s);
  };
  rotate(pr.w, pr.ldw, w_rows);
  pr.w_rows[bi] = pr.w_rows[bj] = w_rows;
  if (pr.v) {
    const int64_t v_rows = std::max(pr.v_rows[bi], pr.v_rows[bj]);
    rotate(pr.v, pr.ldv, v_rows);
    pr.v_rows[bi] = pr.v_rows[bj] = v_rows;
  }
  return true;
}

}  // namespace jacobi_detail

// Rotates the columns of w (rows × cols, column-major, leading dimension ldw) and of v (cols ×
// cols, column-major, ld ldv; right-multiplied by the same rotations; null: w only, e.g. for
// values-only SVDs, which halves the update work) by blocked one-sided Jacobi until every column
// pair is orthogonal to tol (|w_iᵀw_j| ≤ tol·‖w_i‖·‖w_j‖; zero columns count as orthogonal to
// everything). Returns the sweeps run, the last being the one that found every block pair
// orthogonal (1 for an input that already is, and for cols < 2), or −1 if that did not happen
// within max_sweeps (a NaN never converges). The columns come out in no particular order (larger
// ones tend to the front); sorting is the caller's.
inline int jacobi_blocked(double* w, int64_t rows, int64_t cols, int64_t ldw, double* v, int64_t ldv, int max_sweeps,
                          double tol) {
  using namespace jacobi_detail;
  if (cols < 2) return 1;
  // Blocks of width ~kBlock, as even as the split allows.
  constexpr int64_t kBlock = 24;
  const int64_t nb = std::max<int64_t>(2, (cols + kBlock - 1) / kBlock);
  Problem pr{w, rows, ldw, v, cols, ldv, tol, std::vector<int64_t>(static_cast<size_t>(nb + 1)),
             std::vector<std::vector<double>>(static_cast<size_t>(nb)), std::vector<int64_t>(static_cast<size_t>(nb)),
             std::vector<int64_t>(static_cast<size_t>(nb))};
  for (int64_t i = 0; i <= nb; ++i) pr.start[i] = i * cols / nb;
  parallel_for(nb, [&](int64_t blk, int) {
    pr.w_rows[blk] = nonzero_rows(w, ldw, rows, pr.start[blk], pr.start[blk + 1]);
    pr.v_rows[blk] = v ? nonzero_rows(v, ldv, cols, pr.start[blk], pr.start[blk + 1]) : 0;
  });
  // Row-cyclic block order, (0, 1), (0, 2) … (0, nb − 1), (1, 2) …: with the eigenvalues sorted
  // into the lower block it collects the dominant subspace front to back, and took 6 sweeps at
  // n = 1024 where a round-robin tournament order took 13. It runs in parallel all the same: pair
  // (i, j) depends only on (i, j − 1) and (i − 1, j), so the pairs of one anti-diagonal
  // i + j = d are disjoint and need only the diagonal before: processing the anti-diagonals in
  // order gives exactly the row-cyclic result, with ~d/2 pairs per step.
  std::vector<char> rotated(static_cast<size_t>(nb));
  for (int sweep = 1; sweep <= max_sweeps; ++sweep) {
    parallel_for(nb, [&](int64_t blk, int) { block_gram(pr, blk); });
    bool any = false;
    for (int64_t d = 1; d <= 2 * nb - 3; ++d) {
      const int64_t first = std::max<int64_t>(0, d - (nb - 1));  // i ≥ d − (nb − 1) keeps j < nb
      const int64_t count = (d + 1) / 2 - first;                 // i < j ⇔ i ≤ (d − 1)/2
      parallel_for(count, [&](int64_t task, int) {
        const int64_t i = first + task;
        rotated[task] = rotate_pair(pr, i, d - i);
      });
      for (int64_t t = 0; t < count; ++t) any = any || rotated[t];
    }
    if (!any) return sweep;
  }
  return -1;
}

}  // namespace lk::cpu::LK_SIMD_NS
