// linalg.svd and linalg.qr on the CPU (semantics: csrc/ops/linalg.h). Compiled once per SIMD level
// into lk::cpu::LK_SIMD_NS.
//
// Everything is computed in float64 from the float32 input and rounded once on the way out: a
// float32 one-sided Jacobi could not reach the 2^-23 relative orthogonality the output asks for.
// (The blocked Jacobi starts from the eigenvectors of JᵀJ, so that its sweeps find little left
// to do: jacobi_blocked_preconditioned in cpu/jacobi_blocked.h.)
//
// SVD of one matrix, oriented so that rows ≥ cols (a wide matrix is factored as its transpose: the
// strides swap the roles of u and vh, nothing is copied twice):
//   1. load into a float64 row-major buffer; a NaN or infinity → sweeps −1, every output NaN, no
//      sweep run (it could never converge);
//   2. tall (rows > cols): Householder QR, A = Q·R, and Jacobi runs on J = Rᵀ (cols × cols): the
//      triangular factor's transpose converges in fewer sweeps (Drmač–Veselić), and the work per
//      sweep is cols² · cols instead of cols² · rows. Square: J = A (QR first saved 2 of ~9
//      sweeps at 32 × 32 but cost as much: 63 vs 59 ms for 1000 of them);
//   3. one-sided Jacobi on J, accumulating the rotations in X (J·X = W): cyclic pair order,
//      Rutishauser's rotation, a pair is skipped when |w_iᵀw_j| ≤ tol·‖w_i‖‖w_j‖; column norms are
//      updated with each rotation (α − tγ, β + tγ) and recomputed at every sweep's start;
//   4. σ_j = ‖w_j‖ sorted descending, Ũ = W·Σ⁻¹. A column whose σ is 0 (or below σ₁·2^-100,
//      where its direction is rounding noise) is replaced by Gram–Schmidt against e_1, e_2, … so
//      that Ũ stays orthonormal for rank-deficient and zero matrices;
//   5. square: U = Ũ, V = X. Tall: Rᵀ = Ũ·Σ·Xᵀ, so A = (Q·X)·Σ·Ũᵀ: U = Q·X (the reflectors applied
//      to 64 columns at a time; full_matrices: Q·diag(X, I)), V = Ũ.
//
// Batches of small matrices (cols ≤ kLaneMaxCols) run kGroup = 8 matrices at once: their J and X
// are interleaved, element (r, j) of matrix l at [(j·ld + r)·8 + l], so the pair loop over rows is
// one 8-wide float64 vector per row (an AVX-512 register, two AVX2 ones) with no horizontal sums,
// and a lane whose pair is already orthogonal gets c = 1, s = 0. One matrix at a time the same code
// runs with 8 consecutive rows of a column in the vector (layout [j·ld + r], ld a multiple of 8),
// reduced once per pair. Per pair: one pass over w_i, w_j that rotates them and accumulates the
// next pair's γ; X's rotations of one i are applied after its j loop, in one pass that keeps x_i
// in registers.
//
// Napkin math, 32 × 32: a sweep is 496 pairs × 32 rows × (2 loads + 2 stores of W, 1 load + 1 store
// of X) per 8 lanes; a 64-byte store takes ~2 cycles on Zen 4, so ~6 cycles per row, 0.1 M cycles
// per sweep for 8 matrices, ~9 sweeps (fewer pairs rotate in the last ones): ~0.1 M cycles per
// matrix, 1000 matrices ≈ 30 ms on one core. Measured (one thread, LK_NUM_THREADS=1, CPU time, the
// 2 cores shared with builds at load ~3-4): 1000 × 32 × 32 economy U, V 59 ms (values only 41 ms),
// 256 × 64 × 64 139 ms, 64 × 128 × 128 324 ms; AVX2 the same as AVX-512 on this Zen 4, scalar
// 161 ms. Two threads (wall, load ~2.9): 30.7 ms (values only 21 ms), 68.7 ms, 160 ms, against
// torch.linalg.svd's 102 / 132 / 163 ms on these 2 cores. More than kUnblockedMaxCols columns go
// to the blocked Jacobi: 512² 258 ms, 1024² 1.38 s (7 sweeps each) from the identity;
// preconditioned by the eigenvectors of JᵀJ 512² 39 ms, 1024² 266 ms (1 sweep: the check).
//
// Tolerance (tol = 0 → kDefaultTol = 2^-23 = ε_float32): after convergence every pair of columns of
// Ũ has cosine ≤ tol, the orthogonality a float32 U has after rounding anyway (its entries carry
// ε_float32/2 relative error each). Jacobi converges quadratically, so a tighter tol buys nothing
// that survives the rounding and costs up to one more sweep: tol = 1e-13 took 65 vs 60 ms at
// 1000 × 32 × 32, 159 vs 145 ms at 256 × 64 × 64. The reconstruction does not depend on tol:
// W = J·X holds to float64 rounding whatever the sweeps.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <utility>
#include <vector>

#include "core/parallel.h"
#include "cpu/dispatch/kernels.h"
#include "cpu/jacobi_blocked.h"
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
// More columns than this: blocked Jacobi (cpu/jacobi_blocked.h), one matrix at a time with the
// thread pool inside it (its Gram matrices and GEMM updates amortize what the column pairs here
// spend per pair, and a batch of 1 still uses every core).
constexpr int64_t kUnblockedMaxCols = 128;
// σ_j ≤ σ₁·2^-100: the column is the rounding noise of a (numerically) zero singular value.
constexpr double kNegligible = 7.888609052210118e-31;

enum class SvdBuffer { A, Tau, J, X, U, E, Sigma, Column, GroupJ, GroupX, Norms, Coef, W, Gram, Count };
enum class QrBuffer { A, Tau, E, Column, Count };

// A float64 view of a thread's scratch buffer (64-byte aligned, grow-only).
template <class Which>
double* doubles(Which which, int64_t count) {
  return reinterpret_cast<double*>(scratch(which, 2 * count));
}

// ---- Householder QR (row-major float64, in place) ----------------------------------------------
// Reflector k: H_k = I − tau_k·v·vᵀ with v = (1, a[k+1:, k]) below the diagonal, R on and above it
// (LAPACK's convention, beta = −sign(x0)·‖x‖ so that x0 − beta never cancels). Row-major, so that
// applying a reflector to many columns runs along rows: d = vᵀ·E and E −= tau·v·d are vector
// loops over the columns, with no reduction per column.

// Columns [j0, j1) of e (row-major, lde) ← H_k·e; d: scratch of j1 entries.
void apply_reflector(const double* a, int64_t lda, int64_t rows, int64_t k, double tau, double* e, int64_t lde, int64_t j0,
                     int64_t j1, double* d) {
  if (tau == 0 || j0 >= j1) return;
  double* ek = e + k * lde;
  for (int64_t j = j0; j < j1; ++j) d[j] = ek[j];
  for (int64_t i = k + 1; i < rows; ++i) {
    const double vi = a[i * lda + k];
    const double* ei = e + i * lde;
    for (int64_t j = j0; j < j1; ++j) d[j] += vi * ei[j];
  }
  for (int64_t j = j0; j < j1; ++j) {
    d[j] *= tau;
    ek[j] -= d[j];
  }
  for (int64_t i = k + 1; i < rows; ++i) {
    const double vi = a[i * lda + k];
    double* ei = e + i * lde;
    for (int64_t j = j0; j < j1; ++j) ei[j] -= vi * d[j];
  }
}

void householder_qr(double* a, int64_t lda, int64_t rows, int64_t cols, double* tau, double* d) {
  for (int64_t k = 0, end = std::min(rows, cols); k < end; ++k) {
    const double x0 = a[k * lda + k];
    double tail = 0;
    for (int64_t i = k + 1; i < rows; ++i) tail += a[i * lda + k] * a[i * lda + k];
    if (tail == 0) {  // already upper triangular here: H_k = I
      tau[k] = 0;
      continue;
    }
    const double norm = std::sqrt(x0 * x0 + tail), beta = x0 >= 0 ? -norm : norm;
    tau[k] = (beta - x0) / beta;
    const double scale = 1 / (x0 - beta);
    for (int64_t i = k + 1; i < rows; ++i) a[i * lda + k] *= scale;
    a[k * lda + k] = beta;
    apply_reflector(a, lda, rows, k, tau[k], a, lda, k + 1, cols, d);
  }
}

// Output columns [0, count) of Q·B (Q = H_0·H_1 ⋯ from the first `reflectors` of a), kQChunk at a
// time through a rows × kQChunk row-major buffer e: fill(e, lde, j0, width) writes B's columns
// [j0, j0 + width) into the zeroed e, store(e, lde, j0, width) takes the product.
constexpr int64_t kQChunk = 64;

template <class Which, class Fill, class Store>
void q_times(Which e_buffer, Which d_buffer, const double* a, int64_t lda, int64_t rows, int64_t reflectors, const double* tau,
             int64_t count, Fill fill, Store store) {
  const int64_t lde = round_up(std::min(count, kQChunk), kAcc);
  double* e = doubles(e_buffer, rows * lde);
  double* d = doubles(d_buffer, lde);
  for (int64_t j0 = 0; j0 < count; j0 += kQChunk) {
    const int64_t width = std::min(kQChunk, count - j0);
    std::fill(e, e + rows * lde, 0.0);
    fill(e, lde, j0, width);
    for (int64_t k = reflectors - 1; k >= 0; --k) apply_reflector(a, lda, rows, k, tau[k], e, lde, 0, width, d);
    store(e, lde, j0, width);
  }
}

// ---- D8: 8 doubles. On the SIMD levels 8/kDLanes of vec.h's DVec (one AVX-512 vector, two AVX2,
// four NEON), the parts spelled out by a pack expansion, not a loop: GCC keeps the parts in
// registers only when every index is a constant before its loop unrolling runs (with loops AVX2
// ran 12% slower). M8 holds the matching DMasks. ------------------------------------------------
#if !defined(LK_SIMD_SCALAR)
constexpr int kD8Vecs = 8 / kDLanes;
using D8Parts = std::make_index_sequence<kD8Vecs>;
struct D8 {
  DVec v[kD8Vecs];
};
struct M8 {
  DMask m[kD8Vecs];
};
template <class F, size_t... I>
inline D8 d8_map(F f, std::index_sequence<I...>) {
  return D8{{f(I)...}};
}
template <class F>
inline D8 d8_map(F f) {
  return d8_map(f, D8Parts{});
}
inline D8 d8_zero() { return d8_map([](size_t) { return dzero(); }); }
inline D8 d8_set1(double v) { return d8_map([&](size_t) { return dset1(v); }); }
inline D8 d8_load(const double* p) { return d8_map([&](size_t i) { return dload(p + i * kDLanes); }); }
template <size_t... I>
inline void d8_store(double* p, D8 a, std::index_sequence<I...>) {
  (dstore(p + I * kDLanes, a.v[I]), ...);
}
inline void d8_store(double* p, D8 a) { d8_store(p, a, D8Parts{}); }
inline D8 d8_add(D8 a, D8 b) { return d8_map([&](size_t i) { return dadd(a.v[i], b.v[i]); }); }
inline D8 d8_sub(D8 a, D8 b) { return d8_map([&](size_t i) { return dsub(a.v[i], b.v[i]); }); }
inline D8 d8_mul(D8 a, D8 b) { return d8_map([&](size_t i) { return dmul(a.v[i], b.v[i]); }); }
inline D8 d8_div(D8 a, D8 b) { return d8_map([&](size_t i) { return ddiv(a.v[i], b.v[i]); }); }
inline D8 d8_fma(D8 a, D8 b, D8 c) { return d8_map([&](size_t i) { return dfma(a.v[i], b.v[i], c.v[i]); }); }
inline D8 d8_fms(D8 a, D8 b, D8 c) { return d8_map([&](size_t i) { return dfms(a.v[i], b.v[i], c.v[i]); }); }
inline D8 d8_sqrt(D8 a) { return d8_map([&](size_t i) { return dsqrt(a.v[i]); }); }
inline D8 d8_abs(D8 a) { return d8_map([&](size_t i) { return dabs(a.v[i]); }); }
inline D8 d8_sign(D8 a) { return d8_map([&](size_t i) { return dsign(a.v[i]); }); }  // ±1
template <size_t... I>
inline M8 d8_greater(D8 a, D8 b, std::index_sequence<I...>) {
  return M8{{dgreater(a.v[I], b.v[I])...}};
}
inline M8 d8_greater(D8 a, D8 b) { return d8_greater(a, b, D8Parts{}); }
inline D8 d8_select(M8 m, D8 yes, D8 no) { return d8_map([&](size_t i) { return dselect(m.m[i], yes.v[i], no.v[i]); }); }
template <size_t... I>
inline unsigned m8_bits(M8 m, std::index_sequence<I...>) {  // bit k: element k
  return (0u | ... | (dmask_bits(m.m[I]) << (I * kDLanes)));
}
inline unsigned m8_bits(M8 m) { return m8_bits(m, D8Parts{}); }
#else
// The scalar level: 8 plain doubles in loops, which GCC turns into baseline SIMD (SSE2). Measured:
// as two 4-double scalar DVecs (in registers, unvectorized) the small SVDs ran 10-25% slower.
struct D8 {
  double v[8];
};
template <class F>
D8 d8_map(F f) {
  D8 r;
  for (int k = 0; k < 8; ++k) r.v[k] = f(k);
  return r;
}
inline D8 d8_zero() { return d8_map([](int) { return 0.0; }); }
inline D8 d8_load(const double* p) { return d8_map([&](int k) { return p[k]; }); }
inline void d8_store(double* p, D8 a) {
  for (int k = 0; k < 8; ++k) p[k] = a.v[k];
}
inline D8 d8_add(D8 a, D8 b) { return d8_map([&](int k) { return a.v[k] + b.v[k]; }); }
inline D8 d8_mul(D8 a, D8 b) { return d8_map([&](int k) { return a.v[k] * b.v[k]; }); }
inline D8 d8_fma(D8 a, D8 b, D8 c) { return d8_map([&](int k) { return a.v[k] * b.v[k] + c.v[k]; }); }
inline D8 d8_fms(D8 a, D8 b, D8 c) { return d8_map([&](int k) { return a.v[k] * b.v[k] - c.v[k]; }); }
inline D8 d8_sqrt(D8 a) { return d8_map([&](int k) { return std::sqrt(a.v[k]); }); }
inline D8 d8_set1(double v) { return d8_map([&](int) { return v; }); }
inline D8 d8_sub(D8 a, D8 b) { return d8_map([&](int k) { return a.v[k] - b.v[k]; }); }
inline D8 d8_div(D8 a, D8 b) { return d8_map([&](int k) { return a.v[k] / b.v[k]; }); }
inline D8 d8_abs(D8 a) { return d8_map([&](int k) { return std::fabs(a.v[k]); }); }
inline D8 d8_sign(D8 a) { return d8_map([&](int k) { return std::copysign(1.0, a.v[k]); }); }
using M8 = unsigned;
inline M8 d8_greater(D8 a, D8 b) {
  unsigned m = 0;
  for (int k = 0; k < 8; ++k) m |= a.v[k] > b.v[k] ? 1u << k : 0u;
  return m;
}
inline D8 d8_select(M8 m, D8 yes, D8 no) { return d8_map([&](int k) { return m >> k & 1 ? yes.v[k] : no.v[k]; }); }
inline unsigned m8_bits(M8 m) { return m; }
#endif
static_assert(kAcc == 8, "D8 holds the kAcc partial sums");

// ---- one-sided Jacobi over L interleaved matrices ----------------------------------------------
// Column j of lane l: element r at w[(j·ld + r)·L + l]; len = ld·L is a multiple of 8, and rows
// past the matrix are zero (rotations keep them zero). A D8 of a column holds 8/L rows of L lanes,
// so per-lane coefficients repeat every L doubles and partial sums fold k → k mod L.

template <int L>
void fold(D8 acc, double* out) {
  alignas(64) double a[8];
  d8_store(a, acc);
  for (int l = 0; l < L; ++l) out[l] = 0;
  for (int k = 0; k < 8; ++k) out[k % L] += a[k];
}

// Per lane Σ x·y; four accumulators hide the FMA latency.
template <int L>
void lane_dots(const double* x, const double* y, int64_t len, double* out) {
  D8 acc[4] = {d8_zero(), d8_zero(), d8_zero(), d8_zero()};
  int64_t i = 0;
  for (; i + 32 <= len; i += 32)
    for (int u = 0; u < 4; ++u) acc[u] = d8_fma(d8_load(x + i + 8 * u), d8_load(y + i + 8 * u), acc[u]);
  for (; i < len; i += 8) acc[0] = d8_fma(d8_load(x + i), d8_load(y + i), acc[0]);
  fold<L>(d8_add(d8_add(acc[0], acc[1]), d8_add(acc[2], acc[3])), out);
}

// (x, y) ← (c·x − s·y, s·x + c·y); returns the new x.
inline D8 rotate8(double* x, double* y, D8 c, D8 s) {
  const D8 xi = d8_load(x), yi = d8_load(y), xr = d8_fms(c, xi, d8_mul(s, yi));
  d8_store(x, xr);
  d8_store(y, d8_fma(s, xi, d8_mul(c, yi)));
  return xr;
}

inline void lane_rotate(double* x, double* y, int64_t len, D8 c, D8 s) {
  for (int64_t i = 0; i < len; i += 8) rotate8(x + i, y + i, c, s);
}

// lane_rotate, and out = the lanes' dots of the rotated x with z, the next pair's γ: one pass over
// x instead of two (two accumulators hide the FMA latency).
template <int L>
void lane_rotate_dot(double* x, double* y, const double* z, int64_t len, D8 c, D8 s, double* out) {
  D8 acc0 = d8_zero(), acc1 = d8_zero();
  int64_t i = 0;
  for (; i + 16 <= len; i += 16) {
    acc0 = d8_fma(rotate8(x + i, y + i, c, s), d8_load(z + i), acc0);
    acc1 = d8_fma(rotate8(x + i + 8, y + i + 8, c, s), d8_load(z + i + 8), acc1);
  }
  if (i < len) acc0 = d8_fma(rotate8(x + i, y + i, c, s), d8_load(z + i), acc0);
  fold<L>(d8_add(acc0, acc1), out);
}

// Column i of x rotated against each of the columns js[0..count) in turn, coefficients
// coef[2·q], coef[2·q + 1] for js[q]: row chunks outer, so x_i is loaded and stored once per chunk
// instead of once per pair (the pass is bound by its stores). U chunks at a time: each step of a
// chain waits for the previous one's FMA, U independent chains fill the pipeline.
template <int U>
void rotate_chain_rows(double* xi_col, double* x, int64_t len, int64_t r, const int64_t* js, int64_t count, const D8* coef) {
  D8 xi[U];
  for (int u = 0; u < U; ++u) xi[u] = d8_load(xi_col + r + 8 * u);
  for (int64_t q = 0; q < count; ++q) {
    double* xj = x + js[q] * len + r;
    const D8 c = coef[2 * q], s = coef[2 * q + 1];
    for (int u = 0; u < U; ++u) {
      const D8 yj = d8_load(xj + 8 * u);
      d8_store(xj + 8 * u, d8_fma(s, xi[u], d8_mul(c, yj)));
      xi[u] = d8_fms(c, xi[u], d8_mul(s, yj));
    }
  }
  for (int u = 0; u < U; ++u) d8_store(xi_col + r + 8 * u, xi[u]);
}

void rotate_chain(double* x, int64_t len, int64_t i, const int64_t* js, int64_t count, const D8* coef) {
  int64_t r = 0;
  for (; r + 32 <= len; r += 32) rotate_chain_rows<4>(x + i * len, x, len, r, js, count, coef);
  for (; r < len; r += 8) rotate_chain_rows<1>(x + i * len, x, len, r, js, count, coef);
}

// L lanes repeated over a D8 (lane l in elements l, l + L, …) and back.
template <int L>
D8 lanes_load(const double* p) {
  if constexpr (L == 8) return d8_load(p);
  alignas(64) double t[8];
  for (int k = 0; k < 8; ++k) t[k] = p[k % L];
  return d8_load(t);
}

template <int L>
void lanes_store(double* p, D8 v) {
  alignas(64) double t[8];
  d8_store(t, v);
  for (int l = 0; l < L; ++l) p[l] = t[l];
}

// The rotation of pair (i, j) per lane from γ = w_iᵀw_j and the norms α_i, α_j (updated in place):
// Rutishauser's ζ = (α_j − α_i)/(2γ), t = sign(ζ)/(|ζ| + sqrt(1 + ζ²)), c = 1/sqrt(1 + t²), s = c·t,
// α_i −= t·γ, α_j += t·γ; c = 1, s = 0 where |γ| ≤ tol·sqrt(α_i·α_j) (compared squared, no root:
// float32 data keeps α, β within 2^±300, so the squares stay in range). Vector selects over the
// lanes (one matrix: its lane repeated 8 times), so no branch per lane and no errno-bound sqrt.
// Returns the mask of the lanes that rotate; cv, sv as lane_rotate takes them.
template <int L>
unsigned rotation(const double* gp, double* ai, double* aj, double tol2, D8& cv, D8& sv) {
  const D8 g = lanes_load<L>(gp), a = lanes_load<L>(ai), b = lanes_load<L>(aj), one = d8_set1(1.0);
  const M8 rotate = d8_greater(d8_mul(g, g), d8_mul(d8_set1(tol2), d8_mul(a, b)));
  const unsigned bits = m8_bits(rotate) & ((1u << L) - 1);
  if (!bits) return 0;
  const D8 zeta = d8_div(d8_sub(b, a), d8_add(g, g));
  const D8 t = d8_div(d8_sign(zeta), d8_add(d8_abs(zeta), d8_sqrt(d8_fma(zeta, zeta, one))));
  const D8 c = d8_div(one, d8_sqrt(d8_fma(t, t, one))), step = d8_mul(t, g);
  cv = d8_select(rotate, c, one);
  sv = d8_select(rotate, d8_mul(c, t), d8_zero());
  lanes_store<L>(ai, d8_select(rotate, d8_sub(a, step), a));
  lanes_store<L>(aj, d8_select(rotate, d8_add(b, step), b));
  return bits;
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
  // X's rotations of one i, applied after the j loop in one pass (rotate_chain).
  D8* coef = reinterpret_cast<D8*>(doubles(SvdBuffer::Coef, 16 * cols));
  thread_local std::vector<int64_t> js;
  js.resize(static_cast<size_t>(cols));
  const double tol2 = tol * tol;
  unsigned pending = (1u << L) - 1;
  for (int sweep = 1; sweep <= max_sweeps && pending; ++sweep) {
    for (int64_t j = 0; j < cols; ++j) lane_dots<L>(w + j * wlen, w + j * wlen, wlen, norms + j * L);
    unsigned rotated = 0;
    for (int64_t i = 0; i + 1 < cols; ++i) {
      double* wi = w + i * wlen;
      alignas(64) double g[L];
      lane_dots<L>(wi, wi + wlen, wlen, g);
      int64_t chain = 0;
      for (int64_t j = i + 1; j < cols; ++j) {
        double* wj = w + j * wlen;
        D8& c = coef[2 * chain];
        D8& s = coef[2 * chain + 1];
        const unsigned mask = rotation<L>(g, norms + i * L, norms + j * L, tol2, c, s);
        rotated |= mask;
        const bool last = j + 1 == cols;
        if (mask) {
          if (last) lane_rotate(wi, wj, wlen, c, s);
          else lane_rotate_dot<L>(wi, wj, wj + wlen, wlen, c, s, g);
          js[chain++] = j;
        } else if (!last) {
          lane_dots<L>(wi, wj + wlen, wlen, g);
        }
      }
      if (x && chain) rotate_chain(x, xlen, i, js.data(), chain, coef);
    }
    for (int l = 0; l < L; ++l)
      if ((pending >> l & 1) && !(rotated >> l & 1)) {
        sweeps[l] = sweep;
        pending &= ~(1u << l);
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
  bool full, vectors, qr_first;
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
  int64_t lda, ldj;  // cols rounded up to kAcc: the row-major A's rows, J's and X's columns (× lanes)
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
  plan.qr_first = plan.rows > plan.cols;
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
  plan.lda = round_up(std::max<int64_t>(plan.cols, 1), kAcc);
  plan.ldj = round_up(std::max<int64_t>(plan.cols, 1), kAcc);
  // The blocked Jacobi streams ~48 columns of J and X at once: with a column stride that is a
  // multiple of 4 KiB (cols = 512, 1024 …) row r of every column maps to the same L1 set (Zen 4:
  // 64 sets × 12 ways), so the 48 columns evict each other. An odd number of cache lines spreads
  // them over the sets: measured 1024² economy U, V 1.15 → 1.12 s, 512² 215 → 208 ms, graded 512²
  // 140 → 124 ms (2 shared cores).
  if (plan.cols > kUnblockedMaxCols && plan.ldj / kAcc % 2 == 0) plan.ldj += kAcc;
  return plan;
}

// col (rows long) into output column j of matrix b.
void store_column(float* base, const View& v, int64_t b, int64_t j, const double* col, int64_t rows) {
  float* out = base + b * v.bs + j * v.cs;
  for (int64_t i = 0; i < rows; ++i) out[i * v.rs] = static_cast<float>(col[i]);
}

// The rows × width row-major e (lde) into output columns [j0, j0 + width) of matrix b.
void store_rows(float* base, const View& v, int64_t b, int64_t j0, const double* e, int64_t lde, int64_t rows, int64_t width) {
  float* out = base + b * v.bs + j0 * v.cs;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < width; ++j) out[i * v.rs + j * v.cs] = static_cast<float>(e[i * lde + j]);
}

int64_t left_cols(const Plan& p) { return p.full ? p.rows : p.keep; }
int64_t right_cols(const Plan& p) { return p.full ? p.cols : p.keep; }

// Matrix b into `a` (rows × lda, row-major), QR'd when p.qr_first, and J (Rᵀ or A) into
// j[(col·ldj + row)·lanes], zero when a value is not finite. Returns whether all were finite.
bool prepare(const Plan& p, int64_t b, double* a, double* tau, double* j, int lanes) {
  const float* src = p.a + b * p.a_view.bs;
  bool finite = true;
  for (int64_t r = 0; r < p.rows; ++r)
    for (int64_t c = 0; c < p.cols; ++c) {
      const float v = src[r * p.a_view.rs + c * p.a_view.cs];
      finite = finite && std::isfinite(v);
      a[r * p.lda + c] = v;
    }
  if (finite && p.qr_first) householder_qr(a, p.lda, p.rows, p.cols, tau, doubles(SvdBuffer::Column, p.lda));
  for (int64_t c = 0; c < p.cols; ++c)
    for (int64_t r = 0; r < p.ldj; ++r) {
      // QR first: J (r, c) = R (c, r), nonzero for c ≤ r < cols.
      const double v = !finite || r >= p.cols ? 0 : p.qr_first ? (c <= r ? a[c * p.lda + r] : 0) : a[r * p.lda + c];
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
  if (std::find(flagged.begin(), flagged.end(), 1) != flagged.end())
    complete_basis(u, p.ldj, n, flagged, doubles(SvdBuffer::Column, n));

  // J = A: U = Ũ, V = X. J = Rᵀ: U = Q·X (Q·diag(X, I) for full_matrices), V = Ũ.
  const double* right_src = p.qr_first ? u : x;
  for (int64_t j = 0; j < right_cols(p); ++j)
    store_column(p.right, p.right_view, b, j, right_src + (p.qr_first ? j : order[j]) * p.ldj, n);
  if (!p.qr_first) {
    for (int64_t j = 0; j < left_cols(p); ++j) store_column(p.left, p.left_view, b, j, u + j * p.ldj, n);
    return;
  }
  q_times(
      SvdBuffer::E, SvdBuffer::Column, a, p.lda, p.rows, n, tau, left_cols(p),
      [&](double* e, int64_t lde, int64_t j0, int64_t width) {
        for (int64_t jj = 0; jj < width; ++jj) {
          const int64_t j = j0 + jj;
          if (j >= n) e[j * lde + jj] = 1;
          else
            for (int64_t r = 0; r < n; ++r) e[r * lde + jj] = x[order[j] * p.ldj + r];
        }
      },
      [&](const double* e, int64_t lde, int64_t j0, int64_t width) { store_rows(p.left, p.left_view, b, j0, e, lde, p.rows, width); });
}

// Matrix b alone: vectors over rows, or blocked (then called outside any parallel region: the
// blocked Jacobi runs its own).
void svd_one(const Plan& p, int64_t b, bool blocked) {
  double* a = doubles(SvdBuffer::A, p.rows * p.lda);
  double* tau = doubles(SvdBuffer::Tau, std::max<int64_t>(p.cols, 1));
  double* j = doubles(SvdBuffer::J, p.ldj * std::max<int64_t>(p.cols, 1));
  // The blocked Jacobi needs V even for values only: its preconditioner is one (and with it the
  // values of a random 512² took 1 sweep and ~40 ms, against 7 sweeps and 171 ms without).
  double* x = p.vectors || blocked ? doubles(SvdBuffer::X, p.ldj * std::max<int64_t>(p.cols, 1)) : nullptr;
  if (!prepare(p, b, a, tau, j, 1)) {
    p.sweeps[b] = -1;
    return write_nan(p, b);
  }
  if (blocked) {
    const int64_t size = p.ldj * p.cols;
    double* w = doubles(SvdBuffer::W, size);
    p.sweeps[b] = jacobi_blocked_preconditioned(j, p.cols, p.cols, p.ldj, w, x, doubles(SvdBuffer::Gram, p.cols * p.cols),
                                                p.max_sweeps, p.tol);
    return finish(p, b, a, tau, w, x);
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
  double* a = doubles(SvdBuffer::A, kGroup * p.rows * p.lda);
  double* tau = doubles(SvdBuffer::Tau, kGroup * p.cols);
  double* gj = doubles(SvdBuffer::GroupJ, kGroup * jsize);
  double* gx = p.vectors ? doubles(SvdBuffer::GroupX, kGroup * jsize) : nullptr;
  bool finite[kGroup] = {};
  for (int l = 0; l < kGroup; ++l) {
    if (l < count) finite[l] = prepare(p, first + l, a + l * p.rows * p.lda, tau + l * p.cols, gj + l, kGroup);
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
    finish(p, b, a + l * p.rows * p.lda, tau + l * p.cols, w, x);
  }
}

// ---- QR ----------------------------------------------------------------------------------------

void qr_one(const QrParams& p, int64_t b) {
  const int64_t m = p.m, n = p.n, k = std::min(m, n), lda = round_up(std::max<int64_t>(n, 1), kAcc);
  double* a = doubles(QrBuffer::A, m * lda);
  double* tau = doubles(QrBuffer::Tau, std::max<int64_t>(k, 1));
  const float* src = p.a + b * p.a_layout.batch_stride;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < n; ++c) a[r * lda + c] = src[r * p.a_layout.row_stride + c * p.a_layout.col_stride];
  householder_qr(a, lda, m, n, tau, doubles(QrBuffer::Column, lda));
  // diag(R) ≥ 0: row i of R and column i of Q change sign together when R_ii < 0.
  auto sign = [&](int64_t i) { return a[i * lda + i] < 0 ? -1.0 : 1.0; };
  if (p.r) {
    float* r = p.r + b * p.r_layout.batch_stride;
    for (int64_t i = 0; i < k; ++i)
      for (int64_t c = 0; c < n; ++c)
        r[i * p.r_layout.row_stride + c * p.r_layout.col_stride] = c < i ? 0.0f : static_cast<float>(sign(i) * a[i * lda + c]);
  }
  const View q_view{p.q_layout.batch_stride, p.q_layout.row_stride, p.q_layout.col_stride};
  q_times(
      QrBuffer::E, QrBuffer::Column, a, lda, m, k, tau, k,
      [&](double* e, int64_t lde, int64_t j0, int64_t width) {
        for (int64_t jj = 0; jj < width; ++jj) e[(j0 + jj) * lde + jj] = sign(j0 + jj);
      },
      [&](const double* e, int64_t lde, int64_t j0, int64_t width) { store_rows(p.q, q_view, b, j0, e, lde, m, width); });
}

}  // namespace

void svd(const SvdParams& params) {
  const Plan p = make_plan(params);
  if (p.batch >= kGroup && p.cols <= kLaneMaxCols) {
    parallel_for(ceil_div(p.batch, kGroup), [&](int64_t group, int) { svd_group(p, group * kGroup); });
    return;
  }
  if (p.cols > kUnblockedMaxCols) {
    for (int64_t b = 0; b < p.batch; ++b) svd_one(p, b, true);
    return;
  }
  parallel_for(p.batch, [&](int64_t b, int) { svd_one(p, b, false); });
}

void qr(const QrParams& params) {
  parallel_for(params.batch, [&](int64_t b, int) { qr_one(params, b); });
}

}  // namespace lk::cpu::LK_SIMD_NS
