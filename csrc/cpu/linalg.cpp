// linalg.svd and linalg.qr on the CPU (semantics: csrc/ops/linalg.h). Compiled once per SIMD level
// into lk::cpu::LK_SIMD_NS.
//
// Everything is computed in float64 from the float32 input and rounded once on the way out: a
// float32 one-sided Jacobi could not reach the 2^-23 relative orthogonality the output asks for.
//
// SVD of one matrix, oriented so that rows ≥ cols (a wide matrix is factored as its transpose: the
// strides swap the roles of u and vh, nothing is copied twice):
//   1. load into a float64 column-major buffer; a NaN or infinity → sweeps −1, every output NaN,
//      no sweep run (it could never converge);
//   2. tall (rows > cols): Householder QR, A = Q·R, and Jacobi runs on J = Rᵀ (cols × cols): the
//      triangular factor's transpose converges in fewer sweeps (Drmač–Veselić), and the work per
//      sweep is cols² · cols instead of cols² · rows. Square: J = A;
//   3. one-sided Jacobi on J, accumulating the rotations in X (J·X = W): cyclic pair order,
//      Rutishauser's rotation, a pair is skipped when |w_iᵀw_j| ≤ tol·‖w_i‖‖w_j‖; column norms are
//      updated with each rotation (α − tγ, β + tγ) and recomputed at every sweep's start;
//   4. σ_j = ‖w_j‖ sorted descending, Ũ = W·Σ⁻¹. A column whose σ is 0 (or below σ₁·2^-100,
//      where its direction is rounding noise) is replaced by Gram–Schmidt against e_1, e_2, … so
//      that Ũ stays orthonormal for rank-deficient and zero matrices;
//   5. square: U = Ũ, V = X. Tall: Rᵀ = Ũ·Σ·Xᵀ, so A = (Q·X)·Σ·Ũᵀ: U = Q·X (Q applied from the
//      reflectors, one output column at a time; full_matrices: Q·diag(X, I)), V = Ũ.
//
// Batches of small matrices (cols ≤ kLaneMaxCols) run kLanes8 matrices at once: their J and X are
// interleaved, element (r, j) of matrix l at [(j·ld + r)·8 + l], so the pair loop over rows is one
// 8-wide float64 vector per row (an AVX-512 register, two AVX2 ones) with no horizontal sums, and
// a lane whose pair is already orthogonal just gets c = 1, s = 0. One matrix at a time the same
// code runs with the 8 partial sums of a column's rows in the vector (layout [j·ld + r], ld a
// multiple of 8), reduced once per pair.
//
// Napkin math, 32 × 32: a sweep is 496 pairs × 32 rows × (1 dot + 2 × 4 rotation flops over W and
// X) ≈ 0.3 M float64 FMA-ish operations per matrix, ~7 sweeps; 8 lanes per instruction (~2 per
// cycle on Zen 4) → ~0.13 M cycles per matrix, 1000 matrices ≈ 40 ms on one core, half on two;
// the 64 KiB of a group's J and X stay in L2.
//
// Tolerance (tol = 0 → kDefaultTol = 2^-24 / 2^-23 = ε_float32): after convergence every pair of
// columns of Ũ has cosine ≤ tol, the orthogonality a float32 U has after rounding anyway (its
// entries carry ε_float32/2 relative error each); Jacobi converges quadratically, so a tighter
// default would cost about one more sweep for nothing that survives the rounding. The
// reconstruction does not depend on tol: W = J·X holds to float64 rounding whatever the sweeps.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "core/parallel.h"
#include "cpu/dispatch/kernels.h"
#include "cpu/packed_gemm.h"

namespace lk::cpu::LK_SIMD_NS {
namespace {

constexpr double kDefaultTol = 1.0 / (1 << 23);
// Partial sums per column dot: one 8-wide float64 vector (AVX-512) or two (AVX2).
constexpr int kAcc = 8;
// Matrices per interleaved group; the group path serves batches of matrices with at most
// kLaneMaxCols columns (after orientation), where per-pair overhead would dominate one matrix.
constexpr int kGroup = 8;
constexpr int64_t kLaneMaxCols = 64;
// σ_j ≤ σ₁·2^-100: the column is the rounding noise of a (numerically) zero singular value.
constexpr double kNegligible = 7.888609052210118e-31;

enum class SvdBuffer { A, Tau, J, X, U, Sigma, Column, GroupJ, GroupX, Norms, Count };
enum class QrBuffer { A, Tau, Column, Count };

// A float64 view of a thread's scratch buffer (64-byte aligned, grow-only).
template <class Which>
double* doubles(Which which, int64_t count) {
  return reinterpret_cast<double*>(scratch(which, 2 * count));
}

double dot(const double* x, const double* y, int64_t n) {
  double acc[kAcc] = {};
  int64_t i = 0;
  for (; i + kAcc <= n; i += kAcc)
    for (int k = 0; k < kAcc; ++k) acc[k] += x[i + k] * y[i + k];
  double s = 0;
  for (int k = 0; k < kAcc; ++k) s += acc[k];
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

void axpy(double alpha, const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// ---- Householder QR (column-major float64, in place) -------------------------------------------
// Reflector k: H_k = I − tau_k·v·vᵀ with v = (1, a[k+1:, k]) below the diagonal, R above (LAPACK's
// convention, beta = −sign(x0)·‖x‖ so that x0 − beta never cancels).

void apply_reflector(const double* a, int64_t ld, int64_t rows, int64_t k, double tau, double* y) {
  if (tau == 0) return;
  const double* v = a + k * ld;
  const double d = tau * (y[k] + dot(v + k + 1, y + k + 1, rows - k - 1));
  y[k] -= d;
  axpy(-d, v + k + 1, y + k + 1, rows - k - 1);
}

void householder_qr(double* a, int64_t ld, int64_t rows, int64_t cols, double* tau) {
  for (int64_t k = 0, end = std::min(rows, cols); k < end; ++k) {
    double* col = a + k * ld;
    const double x0 = col[k], tail = dot(col + k + 1, col + k + 1, rows - k - 1);
    if (tail == 0) {  // already upper triangular here: H_k = I
      tau[k] = 0;
      continue;
    }
    const double norm = std::sqrt(x0 * x0 + tail), beta = x0 >= 0 ? -norm : norm;
    tau[k] = (beta - x0) / beta;
    const double scale = 1 / (x0 - beta);
    for (int64_t i = k + 1; i < rows; ++i) col[i] *= scale;
    col[k] = beta;
    for (int64_t j = k + 1; j < cols; ++j) apply_reflector(a, ld, rows, k, tau[k], a + j * ld);
  }
}

// y ← Q·y = H_0·H_1 ⋯ H_{n−1}·y.
void apply_q(const double* a, int64_t ld, int64_t rows, int64_t reflectors, const double* tau, double* y) {
  for (int64_t k = reflectors - 1; k >= 0; --k) apply_reflector(a, ld, rows, k, tau[k], y);
}

// ---- one-sided Jacobi over L interleaved matrices ----------------------------------------------
// Column j of lane l: element r at w[(j·ld + r)·L + l]; ld·L is a multiple of kAcc, and rows past
// the matrix are zero (rotations keep them zero).

template <int L>
void lane_dots(const double* x, const double* y, int64_t len, double out[L]) {
  double acc[kAcc] = {};
  for (int64_t i = 0; i < len; i += kAcc)
    for (int k = 0; k < kAcc; ++k) acc[k] += x[i + k] * y[i + k];
  for (int l = 0; l < L; ++l) out[l] = 0;
  for (int k = 0; k < kAcc; ++k) out[k % L] += acc[k];
}

template <int L>
void lane_rotate(double* x, double* y, int64_t len, const double c[L], const double s[L]) {
  double cv[kAcc], sv[kAcc];
  for (int k = 0; k < kAcc; ++k) {
    cv[k] = c[k % L];
    sv[k] = s[k % L];
  }
  for (int64_t i = 0; i < len; i += kAcc)
    for (int k = 0; k < kAcc; ++k) {
      const double xi = x[i + k], yi = y[i + k];
      x[i + k] = cv[k] * xi - sv[k] * yi;
      y[i + k] = sv[k] * xi + cv[k] * yi;
    }
}

// Rotates the cols columns of w (and of x, cols × cols with leading dimension ldx, when not null)
// until every pair is orthogonal to tol. sweeps[l]: the sweeps lane l ran, the last one finding
// nothing to rotate (0 for a single column), or −1 when max_sweeps were not enough.
template <int L>
void jacobi(double* w, int64_t ld, int64_t cols, double* x, int64_t ldx, int max_sweeps, double tol, int32_t sweeps[L]) {
  const int64_t wlen = ld * L, xlen = ldx * L;
  for (int l = 0; l < L; ++l) sweeps[l] = cols < 2 ? 0 : -1;
  if (cols < 2) return;
  double* norms = doubles(SvdBuffer::Norms, cols * L);
  const double tol2 = tol * tol;
  int pending = L;
  for (int sweep = 1; sweep <= max_sweeps && pending > 0; ++sweep) {
    for (int64_t j = 0; j < cols; ++j) lane_dots<L>(w + j * wlen, w + j * wlen, wlen, norms + j * L);
    bool rotated[L] = {};
    for (int64_t i = 0; i + 1 < cols; ++i) {
      double* ai = norms + i * L;
      for (int64_t j = i + 1; j < cols; ++j) {
        double* aj = norms + j * L;
        double g[L], c[L], s[L];
        lane_dots<L>(w + i * wlen, w + j * wlen, wlen, g);
        bool any = false;
        for (int l = 0; l < L; ++l) {
          // |γ| > tol·sqrt(α·β), squared: no square root for the pairs that are done. The squares
          // stay in range: float32 data gives α, β within 2^±300.
          const bool rotate = g[l] * g[l] > tol2 * ai[l] * aj[l];
          const double zeta = (aj[l] - ai[l]) / (2 * g[l]);
          const double t = std::copysign(1.0, zeta) / (std::fabs(zeta) + std::sqrt(1 + zeta * zeta));
          const double cl = 1 / std::sqrt(1 + t * t);
          c[l] = rotate ? cl : 1;
          s[l] = rotate ? cl * t : 0;
          ai[l] -= rotate ? t * g[l] : 0;
          aj[l] += rotate ? t * g[l] : 0;
          rotated[l] = rotated[l] || rotate;
          any = any || rotate;
        }
        if (!any) continue;
        lane_rotate<L>(w + i * wlen, w + j * wlen, wlen, c, s);
        if (x) lane_rotate<L>(x + i * xlen, x + j * xlen, xlen, c, s);
      }
    }
    for (int l = 0; l < L; ++l)
      if (sweeps[l] < 0 && !rotated[l]) {
        sweeps[l] = sweep;
        --pending;
      }
  }
}

// ---- the SVD of one oriented matrix ------------------------------------------------------------

// Where element (i, j) of an operand lives: base + b·bs + i·rs + j·cs.
struct View {
  int64_t bs = 0, rs = 0, cs = 0;
};

// The problem as factored: rows ≥ cols; left = U (rows × keep, or rows × rows for full_matrices),
// right = V (cols × keep, or cols × cols), both already mapped onto u / vh.
struct Plan {
  int64_t batch, rows, cols, keep;
  bool full, vectors, tall;
  int max_sweeps;
  double tol;
  const float* a;
  View a_view;
  float* left;
  View left_view;
  float* right;
  View right_view;
  float* s;
  int32_t* sweeps;
  int64_t lda, ldj;  // rows and cols rounded up to kAcc
};

Plan make_plan(const SvdParams& p) {
  Plan plan{};
  const bool wide = p.m < p.n;
  plan.batch = p.batch;
  plan.rows = wide ? p.n : p.m;
  plan.cols = wide ? p.m : p.n;
  plan.keep = p.keep;
  plan.full = p.full_matrices;
  plan.vectors = p.u != nullptr;
  plan.tall = plan.rows > plan.cols;
  plan.max_sweeps = p.max_sweeps;
  plan.tol = p.tol > 0 ? p.tol : kDefaultTol;
  plan.a = p.a;
  const MatrixArg &a = p.a_layout, &u = p.u_layout, &vh = p.vh_layout;
  // A = U·Σ·Vᵀ: U (i, j) → u (i, j), V (i, j) → vh (j, i). Wide: Aᵀ = V·Σ·Uᵀ is factored, so its
  // left factor is A's V and its right factor A's U.
  const View u_as_is{u.batch_stride, u.row_stride, u.col_stride}, v_into_vh{vh.batch_stride, vh.col_stride, vh.row_stride};
  plan.a_view = wide ? View{a.batch_stride, a.col_stride, a.row_stride} : View{a.batch_stride, a.row_stride, a.col_stride};
  plan.left = wide ? p.vh : p.u;
  plan.left_view = wide ? v_into_vh : u_as_is;
  plan.right = wide ? p.u : p.vh;
  plan.right_view = wide ? u_as_is : v_into_vh;
  plan.s = p.s;
  plan.sweeps = p.sweeps;
  plan.lda = round_up(std::max<int64_t>(plan.rows, 1), kAcc);
  plan.ldj = round_up(std::max<int64_t>(plan.cols, 1), kAcc);
  return plan;
}

// col (rows long) into output column j of matrix b.
void store_column(float* base, const View& v, int64_t b, int64_t j, const double* col, int64_t rows) {
  float* out = base + b * v.bs + j * v.cs;
  for (int64_t i = 0; i < rows; ++i) out[i * v.rs] = static_cast<float>(col[i]);
}

int64_t left_cols(const Plan& p) { return p.full ? p.rows : p.keep; }
int64_t right_cols(const Plan& p) { return p.full ? p.cols : p.keep; }

// Matrix b into `a` (lda × cols, zero-padded rows), QR'd when tall, and J (Rᵀ or A) into
// j[(col·ldj + row)·lanes], zero when a value is not finite. Returns whether all were finite.
bool prepare(const Plan& p, int64_t b, double* a, double* tau, double* j, int lanes) {
  const float* src = p.a + b * p.a_view.bs;
  bool finite = true;
  for (int64_t c = 0; c < p.cols; ++c) {
    double* col = a + c * p.lda;
    for (int64_t r = 0; r < p.rows; ++r) {
      const float v = src[r * p.a_view.rs + c * p.a_view.cs];
      finite = finite && std::isfinite(v);
      col[r] = v;
    }
    std::fill(col + p.rows, col + p.lda, 0.0);
  }
  if (finite && p.tall) householder_qr(a, p.lda, p.rows, p.cols, tau);
  for (int64_t c = 0; c < p.cols; ++c)
    for (int64_t r = 0; r < p.ldj; ++r) {
      // Tall: J (r, c) = R (c, r), nonzero for c ≤ r < cols.
      const double v = !finite || r >= p.cols ? 0 : p.tall ? (c <= r ? a[r * p.lda + c] : 0) : a[c * p.lda + r];
      j[(c * p.ldj + r) * lanes] = v;
    }
  return finite;
}

void identity_lane(const Plan& p, double* x, int lanes) {
  for (int64_t c = 0; c < p.cols; ++c)
    for (int64_t r = 0; r < p.ldj; ++r) x[(c * p.ldj + r) * lanes] = r == c ? 1 : 0;
}

void write_nan(const Plan& p, int64_t b) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::fill(p.s + b * p.keep, p.s + (b + 1) * p.keep, nan);
  if (!p.vectors) return;
  for (int64_t j = 0; j < left_cols(p); ++j)
    for (int64_t i = 0; i < p.rows; ++i) p.left[b * p.left_view.bs + i * p.left_view.rs + j * p.left_view.cs] = nan;
  for (int64_t j = 0; j < right_cols(p); ++j)
    for (int64_t i = 0; i < p.cols; ++i) p.right[b * p.right_view.bs + i * p.right_view.rs + j * p.right_view.cs] = nan;
}

// Gives every flagged column of u (n × n, column-major, ld) a unit vector orthogonal to all the
// others: e_k minus its projections (twice, for orthogonality to rounding), for the next k whose
// residual keeps more than 1/(4n) of its squared length. Such a k exists among those not tried:
// the residuals' squares sum to the n − (columns set) ≥ 1 dimensions left, a rejected k holds
// < 1/(4n) of it and only shrinks as columns are added.
void complete_basis(double* u, int64_t ld, int64_t n, const std::vector<char>& flagged, double* v) {
  int64_t k = 0;
  for (int64_t j = 0; j < n; ++j) {
    if (!flagged[j]) continue;
    for (; k < n; ++k) {
      std::fill(v, v + n, 0.0);
      v[k] = 1;
      for (int pass = 0; pass < 2; ++pass)
        for (int64_t i = 0; i < n; ++i)
          if (i != j && (!flagged[i] || i < j)) axpy(-dot(u + i * ld, v, n), u + i * ld, v, n);
      const double norm2 = dot(v, v, n);
      if (norm2 * 4 * static_cast<double>(n) > 1) {
        const double inv = 1 / std::sqrt(norm2);
        for (int64_t i = 0; i < n; ++i) u[j * ld + i] = v[i] * inv;
        ++k;
        break;
      }
    }
  }
}

// From the converged W (cols × cols, ldj) and X: s, and U, V through the plan's views.
void finish(const Plan& p, int64_t b, const double* a, const double* tau, const double* w, const double* x) {
  const int64_t n = p.cols;
  double* sigma = doubles(SvdBuffer::Sigma, n);
  for (int64_t j = 0; j < n; ++j) sigma[j] = std::sqrt(dot(w + j * p.ldj, w + j * p.ldj, n));
  thread_local std::vector<int64_t> order;
  order.resize(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) { return sigma[i] > sigma[j]; });
  for (int64_t j = 0; j < p.keep; ++j) p.s[b * p.keep + j] = static_cast<float>(sigma[order[j]]);
  if (!p.vectors) return;

  double* u = doubles(SvdBuffer::U, n * p.ldj);
  thread_local std::vector<char> flagged;
  flagged.assign(static_cast<size_t>(n), 0);
  const double floor = n > 0 ? sigma[order[0]] * kNegligible : 0;
  for (int64_t j = 0; j < n; ++j) {
    const double sj = sigma[order[j]];
    const double* src = w + order[j] * p.ldj;
    flagged[j] = !(sj > floor) || !std::isnormal(1 / sj);
    const double inv = flagged[j] ? 0 : 1 / sj;
    for (int64_t i = 0; i < n; ++i) u[j * p.ldj + i] = src[i] * inv;
  }
  double* column = doubles(SvdBuffer::Column, std::max(p.rows, n));
  if (std::find(flagged.begin(), flagged.end(), 1) != flagged.end()) complete_basis(u, p.ldj, n, flagged, column);

  // Square: U = Ũ, V = X. Tall: U = Q·X (Q·diag(X, I) for full_matrices), V = Ũ.
  const double* left_src = p.tall ? x : u;
  const double* right_src = p.tall ? u : x;
  for (int64_t j = 0; j < right_cols(p); ++j) {
    const int64_t src = p.tall ? j : order[j];
    store_column(p.right, p.right_view, b, j, right_src + src * p.ldj, n);
  }
  for (int64_t j = 0; j < left_cols(p); ++j) {
    if (!p.tall) {
      store_column(p.left, p.left_view, b, j, left_src + j * p.ldj, n);
      continue;
    }
    std::fill(column, column + p.rows, 0.0);
    if (j < n) std::copy(x + order[j] * p.ldj, x + order[j] * p.ldj + n, column);
    else column[j] = 1;
    apply_q(a, p.lda, p.rows, n, tau, column);
    store_column(p.left, p.left_view, b, j, column, p.rows);
  }
}

// Matrix b alone, vectors over rows.
void svd_one(const Plan& p, int64_t b) {
  double* a = doubles(SvdBuffer::A, p.lda * std::max<int64_t>(p.cols, 1));
  double* tau = doubles(SvdBuffer::Tau, std::max<int64_t>(p.cols, 1));
  double* j = doubles(SvdBuffer::J, p.ldj * std::max<int64_t>(p.cols, 1));
  double* x = p.vectors ? doubles(SvdBuffer::X, p.ldj * std::max<int64_t>(p.cols, 1)) : nullptr;
  if (!prepare(p, b, a, tau, j, 1)) {
    p.sweeps[b] = -1;
    return write_nan(p, b);
  }
  if (x) identity_lane(p, x, 1);
  int32_t sweeps[1];
  jacobi<1>(j, p.ldj, p.cols, x, p.ldj, p.max_sweeps, p.tol, sweeps);
  p.sweeps[b] = sweeps[0];
  finish(p, b, a, tau, j, x);
}

// Matrices [first, first + kGroup) ∩ batch as the lanes of one interleaved Jacobi.
void svd_group(const Plan& p, int64_t first) {
  const int64_t count = std::min<int64_t>(kGroup, p.batch - first), jsize = p.ldj * p.cols;
  double* a = doubles(SvdBuffer::A, kGroup * p.lda * p.cols);
  double* tau = doubles(SvdBuffer::Tau, kGroup * p.cols);
  double* gj = doubles(SvdBuffer::GroupJ, kGroup * jsize);
  double* gx = p.vectors ? doubles(SvdBuffer::GroupX, kGroup * jsize) : nullptr;
  bool finite[kGroup] = {};
  for (int l = 0; l < kGroup; ++l) {
    if (l < count) finite[l] = prepare(p, first + l, a + l * p.lda * p.cols, tau + l * p.cols, gj + l, kGroup);
    else for (int64_t i = 0; i < jsize; ++i) gj[i * kGroup + l] = 0;
    if (gx) identity_lane(p, gx + l, kGroup);
  }
  int32_t sweeps[kGroup];
  jacobi<kGroup>(gj, p.ldj, p.cols, gx, p.ldj, p.max_sweeps, p.tol, sweeps);
  double* w = doubles(SvdBuffer::J, jsize);
  double* x = gx ? doubles(SvdBuffer::X, jsize) : nullptr;
  for (int l = 0; l < count; ++l) {
    const int64_t b = first + l;
    if (!finite[l]) {
      p.sweeps[b] = -1;
      write_nan(p, b);
      continue;
    }
    p.sweeps[b] = sweeps[l];
    for (int64_t i = 0; i < jsize; ++i) w[i] = gj[i * kGroup + l];
    if (x)
      for (int64_t i = 0; i < jsize; ++i) x[i] = gx[i * kGroup + l];
    finish(p, b, a + l * p.lda * p.cols, tau + l * p.cols, w, x);
  }
}

// ---- QR ----------------------------------------------------------------------------------------

void qr_one(const QrParams& p, int64_t b) {
  const int64_t m = p.m, n = p.n, k = std::min(m, n), lda = round_up(std::max<int64_t>(m, 1), kAcc);
  double* a = doubles(QrBuffer::A, lda * n);
  double* tau = doubles(QrBuffer::Tau, std::max<int64_t>(k, 1));
  double* column = doubles(QrBuffer::Column, lda);
  const float* src = p.a + b * p.a_layout.batch_stride;
  for (int64_t c = 0; c < n; ++c)
    for (int64_t r = 0; r < m; ++r) a[c * lda + r] = src[r * p.a_layout.row_stride + c * p.a_layout.col_stride];
  householder_qr(a, lda, m, n, tau);
  // diag(R) ≥ 0: row i of R and column i of Q change sign together when R_ii < 0.
  auto sign = [&](int64_t i) { return a[i * lda + i] < 0 ? -1.0 : 1.0; };
  if (p.r) {
    float* r = p.r + b * p.r_layout.batch_stride;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t c = 0; c < n; ++c)
        r[i * p.r_layout.row_stride + c * p.r_layout.col_stride] = c < i ? 0.0f : static_cast<float>(sign(i) * a[c * lda + i]);
  }
  float* q = p.q + b * p.q_layout.batch_stride;
  for (int64_t j = 0; j < k; ++j) {
    std::fill(column, column + m, 0.0);
    column[j] = sign(j);
    apply_q(a, lda, m, k, tau, column);
    for (int64_t i = 0; i < m; ++i) q[i * p.q_layout.row_stride + j * p.q_layout.col_stride] = static_cast<float>(column[i]);
  }
}

}  // namespace

void svd(const SvdParams& params) {
  const Plan p = make_plan(params);
  if (p.batch >= kGroup && p.cols <= kLaneMaxCols) {
    parallel_for(ceil_div(p.batch, kGroup), [&](int64_t group, int) { svd_group(p, group * kGroup); });
    return;
  }
  parallel_for(p.batch, [&](int64_t b, int) { svd_one(p, b); });
}

void qr(const QrParams& params) {
  parallel_for(params.batch, [&](int64_t b, int) { qr_one(params, b); });
}

}  // namespace lk::cpu::LK_SIMD_NS
