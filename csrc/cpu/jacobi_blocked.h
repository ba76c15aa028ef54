// Blocked one-sided Jacobi (Hestenes) for the larger SVDs (n > ~128 columns): the columns are
// split into nb blocks of width b ≈ 24 and rotated a block pair at a time. For a pair (I, J):
//   G = [w_I w_J]ᵀ[w_I w_J]          (2b × 2b Gram matrix: a GEMM over the rows for the cross
//                                     block w_Jᵀw_I, the diagonal blocks kept from before)
//   G ≈ Q·Λ·Qᵀ                        (two sweeps of two-sided Jacobi on G)
//   [w_I w_J] ← [w_I w_J]·Q, [v_I v_J] ← [v_I v_J]·Q   (two GEMMs, only the columns Q moved)
// which orthogonalizes all 2b columns against each other at once. The pairs are visited in
// row-cyclic order, run in parallel by anti-diagonals (see jacobi_blocked below). The SVD starts
// the sweeps from the eigenvectors of AᵀA (jacobi_blocked_preconditioned, at the end), which
// leaves them little to do; the sweep counts measured below are from the identity.
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
#include <limits>
#include <numeric>
#include <vector>

#include "core/parallel.h"
#include "cpu/column_kernels.h"
#include "cpu/sym_eigen.h"

namespace lk::cpu::LK_SIMD_NS {
namespace jacobi_detail {
using namespace column_kernels;

// Scratch of one pair's work (thread_local: each pool thread keeps its own, grown once).
template <class T>
struct PairScratch {
  std::vector<T*> cols;
  std::vector<int> slot_of, touched, sorted;
  UpdateScratch<T> update;
};

// ---- the small eigensolve: two-sided Jacobi on G (K × K, K even, element type E) in a parallel
// ordering ----------------------------------------------------------------------------------------
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
template <class E>
struct EigenScratch {
  std::vector<E> g, g2, q, c, s, pp, qq;
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
template <class E>
inline void rotate_rows_ring(const E* __restrict src, E* __restrict dst, const E* __restrict c,
                             const E* __restrict s, int h) {
  const E* top = src;
  const E* bottom = src + h;
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

template <class E>
inline void rotate_columns(E* __restrict x, E* __restrict z, E c, E s, int K) {
  for (int r = 0; r < K; ++r) {
    const E xr = x[r], zr = z[r];
    x[r] = c * xr - s * zr;
    z[r] = s * xr + c * zr;
  }
}

// Returns whether any rotation was applied. e.g holds G on entry; on exit e.g the rotated G in
// slot order, e.slot the panel column each slot holds, and slot t's eigenvector is column
// e.qcol[t] of e.q (K × K).
template <class E>
inline bool eigen_jacobi(EigenScratch<E>& e, int K, E tol, int max_sweeps) {
  const int h = K / 2;
  const size_t kk = static_cast<size_t>(K) * K;
  e.g2.resize(kk);
  e.q.assign(kk, E(0));
  for (int i = 0; i < K; ++i) e.q[static_cast<size_t>(i) * K + i] = 1;
  for (auto* v : {&e.order, &e.pos, &e.slot, &e.slot2, &e.qcol, &e.qcol2}) v->resize(static_cast<size_t>(K));
  for (auto* v : {&e.c, &e.s, &e.pp, &e.qq}) v->resize(static_cast<size_t>(h));
  ring_order(K, e.order.data());
  for (int t = 0; t < K; ++t) e.pos[e.order[t]] = t;
  std::iota(e.slot.begin(), e.slot.end(), 0);
  std::iota(e.qcol.begin(), e.qcol.end(), 0);
  e.touched.assign(static_cast<size_t>(K), 0);
  const int* order = e.order.data();
  const int* pos = e.pos.data();
  E* c = e.c.data();
  E* sn = e.s.data();
  // ζ² would overflow past this (1e154 in float64).
  const E kHuge = E(0.5) * std::sqrt(std::numeric_limits<E>::max());
  bool any = false;
  for (int sweep = 0; sweep < max_sweeps; ++sweep) {
    bool rotated = false;
    for (int round = 0; round < K - 1; ++round) {
      E* g = e.g.data();
      E* g2 = e.g2.data();
      const int* qcol = e.qcol.data();
      for (int i = 0; i < h; ++i) {
        const E app = g[i + static_cast<size_t>(i) * K], aqq = g[(i + h) * static_cast<size_t>(K + 1)];
        const E apq = g[i + static_cast<size_t>(i + h) * K];
        c[i] = 1;
        sn[i] = 0;
        // Written as !(≤) so a NaN counts as not orthogonal: such a matrix never converges.
        if (std::fabs(apq) <= tol * std::sqrt(app) * std::sqrt(aqq) || app <= 0 || aqq <= 0) continue;
        rotated = true;
        const E zeta = (aqq - app) / (2 * apq);
        // tan of the angle that zeroes g_pq, the smaller root; 1/(2ζ) once ζ² would overflow.
        const E t = std::fabs(zeta) > kHuge ? E(0.5) / zeta
                                            : std::copysign(E(1), zeta) / (std::fabs(zeta) + std::sqrt(1 + zeta * zeta));
        c[i] = 1 / std::sqrt(1 + t * t);
        sn[i] = c[i] * t;
        e.touched[e.slot[i]] = e.touched[e.slot[i + h]] = 1;
        e.pp[i] = std::max(app - t * apq, E(0));
        e.qq[i] = std::max(aqq + t * apq, E(0));
      }
      // A separate loop: the h rotations' divisions and square roots above overlap each other
      // instead of stalling each column update behind its own.
      for (int i = 0; i < h; ++i) {
        if (sn[i] == 0) continue;
        rotate_columns(g + static_cast<size_t>(i) * K, g + static_cast<size_t>(i + h) * K, c[i], sn[i], K);
        rotate_columns(e.q.data() + static_cast<size_t>(qcol[i]) * K, e.q.data() + static_cast<size_t>(qcol[i + h]) * K,
                       c[i], sn[i], K);
      }
      for (int u = 0; u < K; ++u)
        rotate_rows_ring(g + static_cast<size_t>(order[u]) * K, g2 + static_cast<size_t>(u) * K, c, sn, h);
      for (int i = 0; i < h; ++i) {
        if (sn[i] == 0) continue;
        const size_t p = static_cast<size_t>(pos[i]), q = static_cast<size_t>(pos[i + h]);
        g2[p * (K + 1)] = e.pp[i];
        g2[q * (K + 1)] = e.qq[i];
        g2[p + q * K] = g2[q + p * K] = 0;
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

// Does G (k × k, ld ldg) have an off-diagonal entry above tol relative to its diagonal, between
// two nonzero columns (NaN: yes)?
template <class E>
inline bool exceeds(const E* g, int k, int64_t ldg, E tol) {
  for (int j = 1; j < k; ++j) {
    const E gjj = g[j + j * ldg], dj = std::sqrt(gjj);
    if (gjj <= 0) continue;
    for (int i = 0; i < j; ++i)
      if (!(std::fabs(g[i + j * ldg]) <= tol * std::sqrt(g[i + i * ldg]) * dj || g[i + i * ldg] <= 0)) return true;
  }
  return false;
}

// What the pairs of one call share: the matrices, the block boundaries, and each block's own
// Gram matrix. A block's Gram is needed at each of its nb − 1 pair visits but changes only when
// the block is rotated, and then it is the rotated G's diagonal block (Qᵀ·G·Q, exact but for
// rounding): so a pair computes only its cross block w_Jᵀ·w_I, half the Gram flops. The cache is
// recomputed from the columns at the start of every sweep, so rounding drift never builds up.
template <class T>
struct Problem {
  T* w;
  int64_t rows, ldw;
  T* v;
  int64_t n, ldv;
  double tol;
  std::vector<int64_t> start;        // block b is columns [start[b], start[b + 1])
  std::vector<std::vector<T>> gram;  // block b's Gram, width² column-major
};

template <class T>
inline void fill_cols(std::vector<T*>& cols, T* base, int64_t ld, int64_t i0, int64_t i1, int64_t j0,
                      int64_t j1) {
  cols.clear();
  for (int64_t j = i0; j < i1; ++j) cols.push_back(base + j * ld);
  for (int64_t j = j0; j < j1; ++j) cols.push_back(base + j * ld);
}

template <class T>
inline void block_gram(Problem<T>& pr, int64_t blk) {
  thread_local PairScratch<T> s;
  const int64_t c0 = pr.start[blk], c1 = pr.start[blk + 1];
  const int bw = static_cast<int>(c1 - c0);
  fill_cols(s.cols, pr.w, pr.ldw, c0, c1, c1, c1);
  pr.gram[blk].resize(static_cast<size_t>(bw) * bw);
  cross_gram(s.cols.data(), bw, s.cols.data(), bw, pr.rows, pr.gram[blk].data(), bw);
}

// One block pair (I < J): returns whether its Gram matrix was off-diagonal beyond tol (then rotated).
template <class T>
inline bool rotate_pair(Problem<T>& pr, int64_t bi, int64_t bj) {
  thread_local PairScratch<T> s;
  thread_local EigenScratch<T> e;
  const int64_t i0 = pr.start[bi], i1 = pr.start[bi + 1], j0 = pr.start[bj], j1 = pr.start[bj + 1];
  const int wi = static_cast<int>(i1 - i0), k = wi + static_cast<int>(j1 - j0);
  const int K = k + (k & 1);  // the parallel ordering pairs an even count: a zero row/column pads
  fill_cols(s.cols, pr.w, pr.ldw, i0, i1, j0, j1);
  e.g.assign(static_cast<size_t>(K) * K, T(0));
  cross_gram(s.cols.data() + wi, k - wi, s.cols.data(), wi, pr.rows, e.g.data() + wi, K);  // w_Jᵀ·w_I
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
  if (!exceeds(e.g.data(), k, K, static_cast<T>(pr.tol))) return false;

  // Two inner sweeps at a tighter tolerance than the outer test (measured: one sweep took 9 outer
  // sweeps at n = 1024, two 6, to convergence 6 but at 1.4× the time).
  constexpr int kInnerSweeps = 2;
  eigen_jacobi(e, K, static_cast<T>(pr.tol * 1e-3), kInnerSweeps);

  // Panel columns some rotation touched: only they change. Each keeps its place unless touched;
  // the touched ones get the eigenvectors of their slots sorted by descending eigenvalue, so the
  // larger columns land in block I (de Rijk's effect: the dominant subspace gathers at the front).
  const T* g = e.g.data();
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
  auto rotate = [&](T* base, int64_t ld, int64_t rows) {
    s.cols.clear();
    for (int c : s.touched) s.cols.push_back(base + (c < wi ? i0 + c : j0 + c - wi) * ld);
    update(Panel<T>{s.cols.data(), nt, rows}, e.q.data(), K, s.touched.data(), s.sorted.data(), nt, s.cols.data(), s.update);
  };
  rotate(pr.w, pr.ldw, pr.rows);
  rotate(pr.v, pr.ldv, pr.n);
  return true;
}

}  // namespace jacobi_detail

// Rotates the columns of w (rows × cols, column-major, leading dimension ldw) and of v (cols ×
// cols, column-major, ld ldv; right-multiplied by the same rotations) by blocked one-sided
// Jacobi until every column pair is orthogonal to tol (|w_iᵀw_j| ≤ tol·‖w_i‖·‖w_j‖; zero columns
// count as orthogonal to everything). Returns the sweeps run, the last being the one that found every block pair
// orthogonal (1 for an input that already is, and for cols < 2), or −1 if that did not happen
// within max_sweeps (a NaN never converges). The columns come out in no particular order (larger
// ones tend to the front); sorting is the caller's.
template <class T>
int jacobi_blocked(T* w, int64_t rows, int64_t cols, int64_t ldw, T* v, int64_t ldv, int max_sweeps, double tol) {
  using namespace jacobi_detail;
  if (cols < 2) return 1;
  // Blocks of width ~kBlock, as even as the split allows.
  constexpr int64_t kBlock = 24;
  const int64_t nb = std::max<int64_t>(2, (cols + kBlock - 1) / kBlock);
  Problem<T> pr{w, rows, ldw, v, cols, ldv, tol, std::vector<int64_t>(static_cast<size_t>(nb + 1)),
                std::vector<std::vector<T>>(static_cast<size_t>(nb))};
  for (int64_t i = 0; i <= nb; ++i) pr.start[i] = i * cols / nb;
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


// The SVD's Jacobi, preconditioned: w·vᵀ = a on return (rows × cols, column-major, ld ld; v cols ×
// cols, ld ld), with the columns of w orthogonal to tol and v orthonormal, as from
// jacobi_blocked(a copy of a, identity) but in a fraction of the sweeps:
//   1. g = aᵀa (float64: the products of float32 inputs are exact, the sums carry ε·rows);
//   2. v = g's eigenvectors (sym_eigen.h), descending: then w = a·v has orthogonal columns up to
//      g's rounding, |w_iᵀw_j| ~ ε·rows·‖a‖² against σ_i·σ_j, and its columns come sorted, large
//      ones first, as the row-cyclic order likes them;
//   3. float64 sweeps from there: quadratic convergence leaves the check sweep, and rotations only
//      among the columns whose σ is below ~sqrt(ε)·σ₁, where g's rounding hid their directions.
// g: cols² doubles of scratch. Returns the sweeps (at least 1, the check), or −1 as jacobi_blocked.
//   If the eigensolver fails (it does not converge, or an inverse iteration overflows: no input
// seen so far does either), v starts from the identity and the sweeps do all the work.
inline int jacobi_blocked_preconditioned(const double* a, int64_t rows, int64_t cols, int64_t ld, double* w, double* v,
                                         double* g, int max_sweeps, double tol) {
  using namespace jacobi_detail;
  // g's lower triangle, the part the eigensolver reads, by column blocks: rows [j0, cols) of
  // columns [j0, j1).
  constexpr int64_t kGramBlock = 48;
  parallel_for((cols + kGramBlock - 1) / kGramBlock, [&](int64_t task, int) {
    thread_local std::vector<double*> x;
    const int64_t j0 = task * kGramBlock, j1 = std::min(cols, j0 + kGramBlock);
    x.clear();
    for (int64_t j = j0; j < cols; ++j) x.push_back(const_cast<double*>(a) + j * ld);
    cross_gram(x.data(), static_cast<int>(cols - j0), x.data(), static_cast<int>(j1 - j0), rows, g + j0 + j0 * cols, cols);
  });
  if (!symmetric_eigenvectors(g, cols, cols, v, ld))
    parallel_for(cols, [&](int64_t j, int) {
      for (int64_t i = 0; i < cols; ++i) v[j * ld + i] = i == j;
    });
  multiply(a, ld, rows, static_cast<int>(cols), v, ld, static_cast<int>(cols), w, ld);
  return jacobi_blocked(w, rows, cols, ld, v, ld, max_sweeps, tol);
}

}  // namespace lk::cpu::LK_SIMD_NS
