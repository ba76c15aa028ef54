// Eigenvectors of a symmetric matrix, for the SVD's preconditioner (jacobi_blocked.h): the
// eigenvectors V of G = AᵀA make the columns of A·V orthogonal up to G's rounding, so the one-sided
// Jacobi that follows starts where its sweeps would otherwise end (the mixed precision Jacobi of
// Higham, Tisseur, Webb and Zhou preconditions the same way). It only has to be good, not exact:
// the Jacobi sweeps after it certify orthogonality to tol whatever V is, as long as V is orthonormal.
//   1. Householder tridiagonalization G = Q·T·Qᵀ (lower triangle, float64). Step k's rank-2 update
//      of the trailing matrix and step k + 1's matrix-vector product share one pass over it:
//      ~n³/6 elements read and written once, instead of twice.
//   2. T's eigenvalues by implicit QL with Wilkinson shifts, per unreduced block, without vectors
//      (~30 flops per element per eigenvalue: O(n²)).
//   3. Each eigenvector of T by inverse iteration (LU of T − λI with partial pivoting, two
//      solves from a seeded random start), orthogonalized within its cluster (eigenvalues closer
//      than 1e-3·‖T‖, LAPACK's stein criterion): outside a cluster inverse iteration's vectors are
//      orthogonal to ~ε·‖T‖/gap ≤ 1e-13 already. O(n²) plus n·(cluster size)² per cluster.
//   4. Back to G's basis, V = Q·Z: the reflectors 32 at a time in compact WY form, two GEMMs each.
// Napkin math at n = 512: 1. ~22 M elements through L2 (~11 ms on one core), 2. and 3. O(n²)
// (~4 and ~8 ms on one core: chains of dependent divisions), 4. 2n³ = 0.27 GFLOP; together about
// three Jacobi sweeps' worth of time, against the ~10 sweeps (9·n³ = 1.2 GFLOP each) they save.
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

namespace lk::cpu::LK_SIMD_NS {

namespace sym_eigen_detail {

// ---- 1. tridiagonalization ----------------------------------------------------------------------
// Reflector k: H_k = I − tau_k·v·vᵀ on rows/columns k+1 … n−1, v = (1, v₂ …) stored in g's column
// k below the diagonal (g[k+1, k] holds the 1). T: diagonal d[0, n), subdiagonal e[0, n − 1).
// From x = g[k+1:, k]: tau, v in place, and the new subdiagonal entry β (H·x = β·e₁).
inline double make_reflector(double* x, int64_t len, double& tau) {
  const double alpha = x[0], tail = dot(x + 1, x + 1, len - 1);
  if (tail == 0) {
    tau = 0;
    return alpha;
  }
  const double beta = -std::copysign(std::sqrt(alpha * alpha + tail), alpha);
  tau = (beta - alpha) / beta;
  const double scale = 1 / (alpha - beta);
  for (int64_t i = 1; i < len; ++i) x[i] *= scale;
  x[0] = 1;
  return beta;
}

// p[j:] += G[j:, j]ᵀ-and-its-mirror times v: column j's share of p = G·v over the lower triangle.
inline void symv_column(const double* col, const double* v, double* p, int64_t j, int64_t n) {
  const double vj = v[j];
  double acc[8] = {};
  int64_t i = j + 1;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) {
      acc[k] += col[i + k] * v[i + k];
      p[i + k] += col[i + k] * vj;
    }
  double s = col[j] * vj;
  for (int k = 0; k < 8; ++k) s += acc[k];
  for (; i < n; ++i) {
    s += col[i] * v[i];
    p[i] += col[i] * vj;
  }
  p[j] += s;
}

// v, vn, w, p: scratch vectors of n, indexed by row (step k uses rows ≥ k + 1).
inline void tridiagonalize(double* g, int64_t n, int64_t ld, double* d, double* e, double* tau, double* v, double* vn,
                           double* w, double* p) {
  auto col = [&](int64_t j) { return g + j * ld; };
  if (n <= 2) {
    for (int64_t i = 0; i < n; ++i) d[i] = col(i)[i];
    if (n == 2) e[0] = col(0)[1];
    return;
  }
  // Step 0's reflector and p = G₂₂·v (the one pass not shared with an update).
  e[0] = make_reflector(col(0) + 1, n - 1, tau[0]);
  std::fill(p, p + n, 0.0);
  std::fill(v, v + n, 0.0);
  std::copy(col(0) + 1, col(0) + n, v + 1);
  if (tau[0] != 0)
    for (int64_t j = 1; j < n; ++j) symv_column(col(j), v, p, j, n);
  for (int64_t k = 0; k + 2 < n; ++k) {
    d[k] = col(k)[k];
    const double t = tau[k];
    // w = tau·G·v − (tau²/2)(vᵀG v)·v, so that H·G·H = G − v·wᵀ − w·vᵀ on the trailing block.
    if (t != 0) {
      for (int64_t i = k + 1; i < n; ++i) p[i] *= t;
      const double half = -0.5 * t * dot(p + k + 1, v + k + 1, n - k - 1);
      for (int64_t i = k + 1; i < n; ++i) w[i] = p[i] + half * v[i];
    }
    auto update = [&](int64_t j) {  // G[j:, j] −= v·w_j + w·v_j
      if (t == 0) return;
      double* c = col(j);
      const double wj = w[j], vj = v[j];
      for (int64_t i = j; i < n; ++i) c[i] -= v[i] * wj + w[i] * vj;
    };
    // Column k + 1 first: it gives the next reflector, whose product with the trailing block is
    // then accumulated column by column right behind each column's update.
    update(k + 1);
    const bool next = k + 3 < n;  // step k + 1 has a reflector of length ≥ 2
    if (next) {
      e[k + 1] = make_reflector(col(k + 1) + k + 2, n - k - 2, tau[k + 1]);
      std::copy(col(k + 1) + k + 2, col(k + 1) + n, vn + k + 2);
    }
    const bool product = next && tau[k + 1] != 0;
    std::fill(p + k + 1, p + n, 0.0);
    for (int64_t j = k + 2; j < n; ++j) {
      update(j);
      if (product) symv_column(col(j), vn, p, j, n);
    }
    std::swap(v, vn);
  }
  d[n - 2] = col(n - 2)[n - 2];
  d[n - 1] = col(n - 1)[n - 1];
  e[n - 2] = col(n - 2)[n - 1];
}

// ---- 2. eigenvalues of one unreduced block (d, e copies; e[N − 1] = 0) --------------------------
// Implicit QL with Wilkinson's shift: each pass chases the bulge from the bottom of the active
// part [l, m] up to l with Givens rotations. Returns false after 60 passes on one eigenvalue.
inline bool ql_eigenvalues(double* d, double* e, int64_t N) {
  constexpr double eps = std::numeric_limits<double>::epsilon();
  for (int64_t l = 0; l < N; ++l) {
    for (int pass = 0;; ++pass) {
      int64_t m = l;
      for (; m + 1 < N; ++m)
        if (std::fabs(e[m]) <= eps * (std::fabs(d[m]) + std::fabs(d[m + 1]))) break;
      if (m == l) break;
      if (pass == 60) return false;
      double g = (d[l + 1] - d[l]) / (2 * e[l]);
      double r = std::sqrt(g * g + 1);
      g = d[m] - d[l] + e[l] / (g + std::copysign(r, g));
      double s = 1, c = 1, p = 0;
      bool underflow = false;
      for (int64_t i = m - 1; i >= l; --i) {
        const double f = s * e[i], b = c * e[i];
        r = std::sqrt(f * f + g * g);  // |T|² < 1e160 (G = AᵀA of float32 A): std::hypot's care buys nothing
        e[i + 1] = r;
        if (r == 0) {  // the rotation underflowed: the matrix split at i + 1, start over on it
          d[i + 1] -= p;
          e[m] = 0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
      }
      if (underflow) continue;
      d[l] -= p;
      e[l] = g;
      e[m] = 0;
    }
  }
  return true;
}

// ---- 3. inverse iteration ------------------------------------------------------------------------
// T − λI = P·L·U by Gaussian elimination with partial pivoting: U's three diagonals u0, u1, u2,
// and per row the multiplier and whether rows i, i + 1 were swapped. Pivots below pivmin are
// raised to it (λ is an eigenvalue: one pivot is ~0 by design, and that is what makes the solve
// amplify the eigenvector).
struct TridiagonalLu {
  std::vector<double> inv_u0, u1, u2, mult;  // 1/u0: the solves multiply
  std::vector<char> swapped;

  // Branch-free (the pivot choice of an eigenvalue's shifted matrix is a coin toss per row: as a
  // branch it cost a misprediction every other row, most of the time here).
  void factor(const double* d, const double* e, int64_t N, double lambda, double pivmin) {
    for (auto* x : {&inv_u0, &u1, &u2, &mult}) x->assign(static_cast<size_t>(N), 0.0);
    swapped.assign(static_cast<size_t>(N), 0);
    double c0 = d[0] - lambda, c1 = N > 1 ? e[0] : 0;  // the working row, columns i and i + 1
    for (int64_t i = 0; i + 1 < N; ++i) {
      const double below = e[i], next_diag = d[i + 1] - lambda, next_sup = i + 2 < N ? e[i + 1] : 0;
      const bool swap = std::fabs(below) > std::fabs(c0);
      // The pivot row (into U) and the row it eliminates from, columns i, i + 1, i + 2.
      const double p0 = swap ? below : c0, p1 = swap ? next_diag : c1, p2 = swap ? next_sup : 0;
      const double r0 = swap ? c0 : below, r1 = swap ? c1 : next_diag, r2 = swap ? 0 : next_sup;
      const double m = p0 == 0 ? 0 : r0 / p0;
      swapped[i] = swap;
      inv_u0[i] = p0;
      u1[i] = p1;
      u2[i] = p2;
      mult[i] = m;
      c0 = r1 - m * p1;
      c1 = r2 - m * p2;
    }
    inv_u0[N - 1] = c0;
    for (double& u : inv_u0) u = 1 / (std::fabs(u) < pivmin ? std::copysign(pivmin, u) : u);
  }

  void solve(double* x, int64_t N) const {
    for (int64_t i = 0; i + 1 < N; ++i) {
      const double a = x[i], b = x[i + 1];
      const double top = swapped[i] ? b : a;
      x[i] = top;
      x[i + 1] = (swapped[i] ? a : b) - mult[i] * top;
    }
    for (int64_t i = N - 1; i >= 0; --i) {
      double s = x[i];
      if (i + 1 < N) s -= u1[i] * x[i + 1];
      if (i + 2 < N) s -= u2[i] * x[i + 2];
      x[i] = s * inv_u0[i];
    }
  }
};

// A reproducible start vector in (−1, 1) per eigenvector (splitmix64 of its index).
inline double start_entry(uint64_t seed, int64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(i) + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-52 - 1;
}

// The eigenvectors of the block [b0, b0 + N) of T for its eigenvalues lambda[first, last) (one
// cluster), into z's columns col[first …] (rows b0 … b0 + N − 1; the other rows zeroed).
// Returns false if a solve overflowed.
inline bool cluster_vectors(const double* d, const double* e, int64_t N, int64_t b0, const double* lambda, int64_t first,
                            int64_t last, double pivmin, double* z, int64_t ldz, int64_t n, const int64_t* col) {
  thread_local TridiagonalLu lu;
  constexpr int kSolves = 2;
  for (int64_t j = first; j < last; ++j) {
    double* out = z + col[j] * ldz;
    std::fill(out, out + n, 0.0);
    double* x = out + b0;
    for (int64_t i = 0; i < N; ++i) x[i] = start_entry(static_cast<uint64_t>(b0 + j), i);
    lu.factor(d, e, N, lambda[j], pivmin);
    for (int solve = 0; solve < kSolves; ++solve) {
      const double before = std::sqrt(dot(x, x, N));
      for (int64_t i = 0; i < N; ++i) x[i] /= before;
      lu.solve(x, N);
      for (int64_t prev = first; prev < j; ++prev) {
        const double* y = z + col[prev] * ldz + b0;
        axpy(-dot(y, x, N), y, x, N);
      }
      const double norm = std::sqrt(dot(x, x, N));
      if (!(norm > 0) || !std::isfinite(norm)) return false;
    }
    const double norm = std::sqrt(dot(x, x, N));
    for (int64_t i = 0; i < N; ++i) x[i] /= norm;
  }
  return true;
}

// ---- 4. back to G's basis: z ← Q·z, Q = H_0 ⋯ H_{n−3} ---------------------------------------------
// kBlock reflectors at a time as I − Y·T·Yᵀ (compact WY: Y the block's vectors, unit lower
// trapezoidal, T upper triangular from T_ii = tau_i, T[0:i, i] = −tau_i·T[0:i, 0:i]·Y[:, 0:i]ᵀy_i),
// the last block first. Per block two GEMMs over z's rows below the block: M = Yᵀ·z (cross_gram)
// and z += (−Y·T)·M (update), in column chunks across the threads. The same 2n³ flops as one
// reflector at a time (at n = 512 that took 18 ms on one core as dots and axpys), at GEMM speed.
inline void apply_reflectors(const double* g, int64_t ld, const double* tau, int64_t n, double* z, int64_t ldz) {
  using namespace column_kernels;
  constexpr int kBlock = 32;
  constexpr int kChunk = 48;
  const int64_t reflectors = n - 2;
  if (reflectors <= 0) return;
  thread_local std::vector<double> y, neg_yt, t, yty;
  thread_local std::vector<double*> ycols, ytcols;
  thread_local std::vector<int> index;
  thread_local UpdateScratch<double> s;
  index.resize(std::max(kBlock, kChunk));
  std::iota(index.begin(), index.end(), 0);
  for (int64_t k0 = (reflectors - 1) / kBlock * kBlock; k0 >= 0; k0 -= kBlock) {
    const int nb = static_cast<int>(std::min<int64_t>(kBlock, reflectors - k0));
    const int64_t r0 = k0 + 1, rows = n - r0;  // the block's rows r0 … n − 1
    y.assign(static_cast<size_t>(rows) * nb, 0.0);
    neg_yt.resize(static_cast<size_t>(rows) * nb);
    ycols.clear();
    ytcols.clear();
    for (int i = 0; i < nb; ++i) {
      double* col = y.data() + static_cast<size_t>(i) * rows;
      const int64_t one = k0 + i + 1;  // the row of reflector k0 + i's unit entry
      col[one - r0] = 1;
      std::copy(g + (k0 + i) * ld + one + 1, g + (k0 + i) * ld + n, col + one - r0 + 1);
      ycols.push_back(col);
      ytcols.push_back(neg_yt.data() + static_cast<size_t>(i) * rows);
    }
    yty.resize(static_cast<size_t>(nb) * nb);
    cross_gram(ycols.data(), nb, ycols.data(), nb, rows, yty.data(), nb);
    t.assign(static_cast<size_t>(nb) * nb, 0.0);  // holds −T
    for (int i = 0; i < nb; ++i) {
      const double ti = tau[k0 + i];
      for (int j = 0; j < i; ++j) {
        double sum = 0;
        for (int l = j; l < i; ++l) sum += t[j + l * nb] * yty[l + i * nb];
        t[j + i * nb] = -ti * sum;
      }
      t[i + i * nb] = -ti;
    }
    update(Panel<double>{ycols.data(), nb, rows}, t.data(), nb, index.data(), index.data(), nb, ytcols.data(), s);
    double* const* ytp = ytcols.data();
    double* const* yp = ycols.data();
    const int* idx = index.data();
    parallel_for((n + kChunk - 1) / kChunk, [&](int64_t task, int) {
      thread_local std::vector<double*> zcols;
      thread_local std::vector<double> m;
      thread_local UpdateScratch<double> ts;
      const int64_t c0 = task * kChunk;
      const int cw = static_cast<int>(std::min<int64_t>(kChunk, n - c0));
      zcols.clear();
      for (int c = 0; c < cw; ++c) zcols.push_back(z + (c0 + c) * ldz + r0);
      m.resize(static_cast<size_t>(nb) * cw);
      cross_gram(yp, nb, zcols.data(), cw, rows, m.data(), nb);
      update(Panel<double>{ytp, nb, rows}, m.data(), nb, idx, idx, cw, zcols.data(), ts, true);
    });
  }
}

}  // namespace sym_eigen_detail

// The eigenvectors of the symmetric g (n × n, column-major, ld; its lower triangle is read and
// overwritten) into z's columns (n × n, ldz), ordered by descending eigenvalue, orthonormal to
// ~1e-13 (well separated) or by Gram–Schmidt (clusters). Returns false when an eigenvalue did not
// converge or an inverse iteration overflowed (a NaN or infinity in g, or a pathological T): z is
// then unusable and the caller starts from the identity instead.
inline bool symmetric_eigenvectors(double* g, int64_t n, int64_t ld, double* z, int64_t ldz) {
  using namespace sym_eigen_detail;
  constexpr double eps = std::numeric_limits<double>::epsilon();
  thread_local std::vector<double> d, e, tau, v, vn, w, p, lambda, wd, we;
  for (auto* x : {&d, &e, &tau, &v, &vn, &w, &p, &lambda, &wd, &we}) x->assign(static_cast<size_t>(n) + 1, 0.0);
  tridiagonalize(g, n, ld, d.data(), e.data(), tau.data(), v.data(), vn.data(), w.data(), p.data());
  // Unreduced blocks, their eigenvalues (ascending within each) and clusters.
  struct Cluster {
    int64_t b0, N, first, last;
    double pivmin;
  };
  std::vector<Cluster> clusters;
  // Split where a coupling is at the level of G's own rounding (eps·‖T‖): the zero eigenvalues of a
  // rank-deficient G then come out as 1 × 1 blocks, not as one block whose solves overflow.
  double tnorm = 0;
  for (int64_t i = 0; i < n; ++i) tnorm = std::max(tnorm, std::fabs(d[i]) + (i > 0 ? std::fabs(e[i - 1]) : 0) + std::fabs(e[i]));
  for (int64_t b0 = 0; b0 < n;) {
    int64_t b1 = b0 + 1;
    while (b1 < n && std::fabs(e[b1 - 1]) > eps * tnorm) ++b1;
    const int64_t N = b1 - b0;
    std::copy(d.begin() + b0, d.begin() + b1, wd.begin());
    std::copy(e.begin() + b0, e.begin() + b1 - 1, we.begin());
    we[N - 1] = 0;
    if (!ql_eigenvalues(wd.data(), we.data(), N)) return false;
    std::sort(wd.begin(), wd.begin() + N);
    std::copy(wd.begin(), wd.begin() + N, lambda.begin() + b0);
    double norm = 0;
    for (int64_t i = b0; i < b1; ++i)
      norm = std::max(norm, std::fabs(d[i]) + (i > b0 ? std::fabs(e[i - 1]) : 0) + (i + 1 < b1 ? std::fabs(e[i]) : 0));
    const double gap = 1e-3 * norm, pivmin = std::max(eps * norm, std::numeric_limits<double>::min());
    for (int64_t first = b0; first < b1;) {
      int64_t last = first + 1;
      while (last < b1 && lambda[last] - lambda[last - 1] <= gap) ++last;
      clusters.push_back({b0, N, first, last, pivmin});
      first = last;
    }
    b0 = b1;
  }
  std::vector<int64_t> order(static_cast<size_t>(n)), col(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lambda[a] > lambda[b]; });
  for (int64_t c = 0; c < n; ++c) col[order[c]] = c;
  // The pool's threads see their own thread_local vectors: the tasks get plain pointers.
  const double *dp = d.data(), *ep = e.data(), *lp = lambda.data(), *taup = tau.data();
  std::vector<char> ok(clusters.size(), 1);
  parallel_for(static_cast<int64_t>(clusters.size()), [&](int64_t t, int) {
    const Cluster& c = clusters[t];
    ok[t] = cluster_vectors(dp + c.b0, ep + c.b0, c.N, c.b0, lp, c.first, c.last, c.pivmin, z, ldz, n, col.data());
  });
  if (std::find(ok.begin(), ok.end(), 0) != ok.end()) return false;
  apply_reflectors(g, ld, taup, n, z, ldz);
  return true;
}

}  // namespace lk::cpu::LK_SIMD_NS
