// linalg.svd and linalg.qr on CUDA (semantics: csrc/ops/linalg.h). One thread block per matrix:
// the whole factorization of a matrix (load, Householder QR, Jacobi sweeps, sort, completion of U,
// back-transformation) is one launch, with the block's barriers as the only synchronization.
// An SVD with more than kBlockedMinCols = 128 working columns runs its sweeps as blocked Jacobi
// instead, a launch per round over all SMs (see "blocked Jacobi" below); load and epilogue stay.
//
// SVD, one-sided Jacobi (Hestenes) on the canonical X = A (m ≥ n) or X = Aᵀ (m < n; the operand
// strides are swapped on the host, and u / vh trade places: A = V' Σ U'ᵀ when Aᵀ = U' Σ V'ᵀ):
//   * X is M × N with M ≥ N. A tall X is first reduced by Householder QR to its N × N R (the
//     reflectors stay in the block's buffer); U = Q·U_R is applied at the end, reflector by
//     reflector, onto U_R written straight into the output. Jacobi then always works on N × N.
//   * The working matrix W and V are column-major with an odd leading dimension (N | 1): the
//     lanes of a warp walk a column (consecutive words), and the transposing load / store, which
//     walks a row, hits 32 different banks.
//   * Parallel ordering: the round-robin tournament (circle method). N columns (one dummy when N
//     is odd) meet in N − 1 rounds of N / 2 disjoint pairs; a warp takes a pair, so a round needs
//     no barrier inside it, one at its end. Per pair: α = ‖x‖², β = ‖y‖², γ = xᵀy accumulated in
//     float64 and reduced over the warp (the xor butterfly leaves bit-identical sums in every lane,
//     so every lane takes the same branch); rotate when |γ| > tol·√(αβ) with Rutishauser's
//     t = sign(ζ) / (|ζ| + √(1 + ζ²)), ζ = (β − α) / 2γ, applied in float64 to x, y and V's pair.
//     A sweep without a rotation ends the iteration. tol defaults to ε_float32, not LAPACK's
//     √N·ε: the test bounds every off-diagonal of UᵀU, and at √N·ε ‖UᵀU − I‖_F measured 1.5e-5
//     for 64² (ε: 2e-6, one sweep more at most); the rounding noise a rotation leaves in a pair
//     is ~ε/√N relative, below it. V is kept in float64: accumulated in float32 its ~N·sweeps
//     rotations per column left ‖VᵀV − I‖_F at 1.5e-5 for 130² (float64: 4e-7, the final rounding).
//   * A column whose norm is ≤ ε² of its partner's is left alone: it is below the ε·σ₁ at which
//     U's column is replaced anyway, and rotating noise against a large column would only spin.
//   * Singular values = column norms, ranked by counting (deterministic, ties by index); U's
//     column = W's column / σ; a column with σ ≤ ε·σ₁ (zero, or rounding noise of a rank-deficient
//     input) is replaced by the unit vector e_k least represented in the columns before it (the
//     smallest row norm of that basis: ≤ r/N, so its residual is ≥ 1/N) orthogonalized twice
//     (classical Gram-Schmidt, then once more), so UᵀU = I always.
//   * A NaN or infinity anywhere in X: sweeps = −1 and NaN outputs, without iterating.
//   Where: the buffer (W, V, the reflectors, σ, the ranking) lives in shared memory when it fits
//   (3·N·(N+1)·4 bytes: 13 KiB at 32², 50 KiB at 64², 198 KiB at 128², the H200 allows 227 KiB),
//   else (a tall X with many rows, or the blocked path) in a global workspace per matrix.
//   Napkin math, 64 × 128²: 127 rounds × ~9 sweeps ≈ 1150 rounds of one barrier plus, per warp,
//   two pairs of 4 rows per lane (3 float64 FMAs, 3 reductions of 10 shuffles, 8 float64
//   rotations); ~1.5 µs a round → ~2 ms with the 64 matrices on 64 SMs at once (estimated, not
//   measured: no GPU was available when this was written).
// QR: the same Householder factorization (one block per matrix, columns in sequence, a block-wide
// float64 reduction for the reflector's norm, a warp per trailing column for its update), then Q
// formed by applying the reflectors in reverse to [I; 0] in the output. The reflector is chosen so
// that H·x = +‖x‖·e₁ (Golub & Van Loan's v₁ = −σ / (α + ‖x‖) when α > 0): diag(R) ≥ 0 directly.
#include <cfloat>
#include <climits>
#include <cmath>
#include <memory>
#include <string>

#include "common.cuh"
#include "linalg.cuh"

namespace lk::cuda_ops {
namespace {

constexpr int kMaxThreads = 1024;

// An operand [batch, rows, cols] through element strides, and one matrix of it.
template <class T>
struct Batched {
  T* p;
  long long bs, rs, cs;
};
template <class T>
struct Mat {
  T* p;
  long long rs, cs;
  __device__ T& operator()(long long i, long long j) const { return p[i * rs + j * cs]; }
};
// Matrix `b` of an operand (a null operand stays null: no arithmetic on a null pointer).
template <class T>
__host__ __device__ inline Mat<T> matrix_of(const Batched<T>& o, long long b) {
  return Mat<T>{o.p ? o.p + b * o.bs : nullptr, o.rs, o.cs};
}

// Offsets (in floats) of one matrix's SVD buffer; the same arithmetic on the host (sizes) and on
// the device (pointers). h / tau: the reflectors and their scalars (tall X only); w: N × N floats
// with leading dimension ldw; v: N × N doubles, same ldw; sig: σ; perm: the ranking (ints); coef:
// Gram-Schmidt coefficients.
struct SvdLayout {
  long long ldh, ldw, h, tau, w, v, sig, perm, coef, total;
};

__host__ __device__ inline long long odd_ld(long long rows) { return rows | 1; }

__host__ __device__ inline SvdLayout svd_layout(long long M, long long N, bool with_v) {
  SvdLayout l{};
  l.ldh = odd_ld(M);
  l.ldw = odd_ld(N);
  const bool qr = M > N;
  l.h = 0;
  l.tau = qr ? l.ldh * N : 0;
  l.w = qr ? l.tau + N : 0;
  l.v = (l.w + l.ldw * N + 1) / 2 * 2;  // doubles: 8-byte aligned
  l.sig = l.v + (with_v ? 2 * l.ldw * N : 0);
  l.perm = l.sig + N;
  l.coef = l.perm + N;
  l.total = (l.coef + N + 1) / 2 * 2;  // even: the next matrix's doubles stay aligned
  return l;
}

struct SvdArgs {
  Batched<const float> x;  // canonical X, M × N, M ≥ N
  int M, N, keep;
  int ucols, vcols;  // U: M × ucols, V: N × vcols (keep, or M / N for full_matrices)
  int max_sweeps;
  double tol;
  float* s;             // [batch, keep]
  Batched<float> u, v;  // canonical U (M × ucols) and V (N × vcols); p null: not wanted
  int32_t* sweeps;
  float* ws;  // global buffer (ws_floats per matrix), or null: the buffer is in shared memory
  long long ws_floats;
};

struct QrArgs {
  Batched<const float> a;  // m × n
  int m, n;
  Batched<float> q, r;  // q: m × k; r: k × n (p null: not wanted)
  float* ws;
  long long ws_floats;
};

#if defined(SIMT_DEVICE_PATH)
__device__ __forceinline__ int lane_id() { return threadIdx.x % 32; }
__device__ __forceinline__ int warp_id() { return threadIdx.x / 32; }
__device__ __forceinline__ int warp_count() { return blockDim.x / 32; }

// op over the 32 lanes by an xor butterfly: every lane combines the same two values at every
// level, so all lanes end with bit-identical results (and take the same branches on them).
template <class T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o >= 1; o /= 2) v = op(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
  return warp_reduce(v, [](double a, double b) { return a + b; });
}

// op over the block, the same value in every thread; every thread must call it. `red` holds one
// value per warp (shared); the leading barrier protects it from the previous call's readers.
template <class T, class Op>
__device__ T block_reduce(T v, T* red, Op op) {
  v = warp_reduce(v, op);
  __syncthreads();
  if (lane_id() == 0) red[warp_id()] = v;
  __syncthreads();
  T r = red[0];
  for (int w = 1; w < warp_count(); ++w) r = op(r, red[w]);
  return r;
}

__device__ __forceinline__ double block_sum(double v, double* red) {
  return block_reduce(v, red, [](double a, double b) { return a + b; });
}

// f(i, j) over a rows × cols grid, the block's threads on consecutive j when `cols_fastest`
// (the global side's unit stride is its column stride), else on consecutive i.
template <class F>
__device__ void for_each_element(long long rows, long long cols, bool cols_fastest, F&& f) {
  const long long total = rows * cols;
  for (long long e = threadIdx.x; e < total; e += blockDim.x) {
    if (cols_fastest) f(e / cols, e % cols);
    else f(e % rows, e / rows);
  }
}

__device__ __forceinline__ bool cols_fastest(long long rs, long long cs) { return (cs < 0 ? -cs : cs) < (rs < 0 ? -rs : rs); }

// Householder QR in place of the column-major rows × cols H (leading dimension ld): R on and
// above the diagonal, reflector k's v below it (v_k = 1 implied), its τ in tau[k];
// H_k = I − τ v vᵀ maps the column onto +‖x‖·e_k. Per column: one block reduction, two barriers.
__device__ void householder_qr(float* H, long long ld, int rows, int cols, float* tau, double* red) {
  const int steps = rows < cols ? rows : cols;
  const int lane = lane_id(), warp = warp_id(), warps = warp_count();
  for (int k = 0; k < steps; ++k) {
    float* x = H + k * ld;
    double part = 0;
    for (int i = k + 1 + threadIdx.x; i < rows; i += blockDim.x) part += static_cast<double>(x[i]) * x[i];
    const double sigma = block_sum(part, red);
    const double alpha = x[k];
    const double norm = sqrt(alpha * alpha + sigma);
    // x already +‖x‖·e_k: H = I. Otherwise v₁ = α − ‖x‖ without cancellation (−σ / (α + ‖x‖) when α > 0).
    const bool identity = sigma == 0 && alpha >= 0;
    const double v1 = identity ? 1 : alpha <= 0 ? alpha - norm : -sigma / (alpha + norm);
    const double t = identity ? 0 : 2 * v1 * v1 / (sigma + v1 * v1);
    __syncthreads();  // every thread has read x[k]
    const double inv = 1 / v1;
    for (int i = k + 1 + threadIdx.x; i < rows; i += blockDim.x) x[i] = static_cast<float>(x[i] * inv);
    if (threadIdx.x == 0) {
      x[k] = static_cast<float>(norm);
      tau[k] = static_cast<float>(t);
    }
    __syncthreads();
    for (int j = k + 1 + warp; j < cols; j += warps) {
      float* y = H + j * ld;
      const double yk = y[k];
      double w = 0;
      for (int i = k + 1 + lane; i < rows; i += 32) w += static_cast<double>(x[i]) * y[i];
      const double tw = t * (warp_sum(w) + yk);  // the warp collective orders the reads of y[k] before its write
      for (int i = k + 1 + lane; i < rows; i += 32) y[i] = static_cast<float>(y[i] - tw * x[i]);
      if (lane == 0) y[k] = static_cast<float>(yk - tw);
    }
    __syncthreads();
  }
}

// Y ← H_0 ⋯ H_{steps−1} · Y for the reflectors of householder_qr, applied last first; Y is rows ×
// ycols (global, strided). `from_identity`: Y started as [I; 0], so column c is still e_c when
// H_k (k > c) comes and stays untouched (LAPACK's xORGQR saving).
__device__ void apply_q(const float* H, long long ld, int rows, int steps, const float* tau, Mat<float> Y, int ycols,
                        bool from_identity) {
  const int lane = lane_id(), warp = warp_id(), warps = warp_count();
  for (int k = steps - 1; k >= 0; --k) {
    const float* x = H + k * ld;
    const double t = tau[k];
    if (t != 0) {
      for (int c = (from_identity ? k : 0) + warp; c < ycols; c += warps) {
        const double yk = Y(k, c);
        double w = 0;
        for (int i = k + 1 + lane; i < rows; i += 32) w += static_cast<double>(x[i]) * Y(i, c);
        const double tw = t * (warp_sum(w) + yk);
        for (int i = k + 1 + lane; i < rows; i += 32) Y(i, c) = static_cast<float>(Y(i, c) - tw * x[i]);
        if (lane == 0) Y(k, c) = static_cast<float>(yk - tw);
      }
    }
    __syncthreads();
  }
}

// Pair q of round `round` of the round-robin tournament (circle method) among `players` (even):
// player `players − 1` is fixed and meets `round`; the others meet mirrored. Returns i < j.
__device__ __forceinline__ void tournament_pair(int players, int round, int q, int& i, int& j) {
  const int rounds = players - 1;
  i = q == 0 ? players - 1 : (round + q) % rounds;
  j = q == 0 ? round : (round - q + rounds) % rounds;
  if (i > j) {
    const int tmp = i;
    i = j;
    j = tmp;
  }
}

// Whether the pair with squared norms a, b and inner product g needs a rotation: not orthogonal to
// the relative tolerance, and the smaller column not negligible next to the larger (≤ ε² of it,
// see the top: ratio² = ε⁴). Shared by the one-block sweeps, the blocked path's convergence test
// and its small eigensolve, so all three stop on the same pairs.
__device__ __forceinline__ bool needs_rotation(double a, double b, double g, double tol) {
  constexpr double kNegligible = static_cast<double>(FLT_EPSILON) * FLT_EPSILON * FLT_EPSILON * FLT_EPSILON;
  if (!(fabs(g) > tol * sqrt(a) * sqrt(b))) return false;
  return fmin(a, b) > kNegligible * fmax(a, b);
}

// Rutishauser's rotation zeroing g: x' = c·x − s·y, y' = s·x + c·y.
__device__ __forceinline__ void rutishauser(double a, double b, double g, double& c, double& s) {
  const double zeta = (b - a) / (2 * g);
  const double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1 + zeta * zeta));
  c = 1 / sqrt(1 + t * t);
  s = c * t;
}

// The sweeps of one-sided Jacobi on the N × N column-major W (and V, when not null); returns the
// sweeps taken (the last one rotated nothing) or −1. `flags`: three shared ints, zero on entry.
// Sweep s raises flags[s % 3] and clears flags[(s + 1) % 3], which was last read at the end of
// sweep s − 2 and is next raised in sweep s + 1: a barrier separates each pair of accesses.
__device__ int jacobi_sweeps(float* W, double* V, long long ld, int N, int max_sweeps, double tol, int* flags) {
  const int lane = lane_id(), warp = warp_id(), warps = warp_count();
  const int players = N + (N & 1), rounds = players - 1, pairs = players / 2;
  for (int sweep = 1; sweep <= max_sweeps; ++sweep) {
    if (threadIdx.x == 0) flags[(sweep + 1) % 3] = 0;
    for (int round = 0; round < rounds; ++round) {
      for (int q = warp; q < pairs; q += warps) {
        int i, j;
        tournament_pair(players, round, q, i, j);
        if (j >= N) continue;  // the dummy of an odd N
        float* x = W + i * ld;
        float* y = W + j * ld;
        double a = 0, b = 0, g = 0;
        for (int r = lane; r < N; r += 32) {
          const double xr = x[r], yr = y[r];
          a += xr * xr;
          b += yr * yr;
          g += xr * yr;
        }
        a = warp_sum(a);
        b = warp_sum(b);
        g = warp_sum(g);
        if (!needs_rotation(a, b, g, tol)) continue;
        double c, s;
        rutishauser(a, b, g, c, s);
        for (int r = lane; r < N; r += 32) {
          const double xr = x[r], yr = y[r];
          x[r] = static_cast<float>(c * xr - s * yr);
          y[r] = static_cast<float>(s * xr + c * yr);
        }
        if (V) {
          double* vx = V + i * ld;
          double* vy = V + j * ld;
          for (int r = lane; r < N; r += 32) {
            const double xr = vx[r], yr = vy[r];
            vx[r] = c * xr - s * yr;
            vy[r] = s * xr + c * yr;
          }
        }
        if (lane == 0) atomicExch(&flags[sweep % 3], 1);  // many warps raise it: an atomic, not a racing store
      }
      __syncthreads();
    }
    if (flags[sweep % 3] == 0) return sweep;
  }
  return -1;
}

// Replaces column perm[t] of W (N × N, ld) by a unit vector orthogonal to columns perm[0 .. t).
// The candidate e_k: the smallest row norm of that orthonormal basis (the key packs the float
// square, whose bits order like the value, above the row index: ties go to the smaller k).
__device__ void complete_column(float* W, long long ld, int N, const int* perm, int t, float* coef, double* red,
                                unsigned long long* red_key) {
  const int lane = lane_id(), warp = warp_id(), warps = warp_count();
  unsigned long long key = ~0ull;
  for (int i = threadIdx.x; i < N; i += blockDim.x) {
    double sq = 0;
    for (int q = 0; q < t; ++q) {
      const double w = W[perm[q] * ld + i];
      sq += w * w;
    }
    const unsigned long long candidate = static_cast<unsigned long long>(__float_as_uint(static_cast<float>(sq))) << 32 | static_cast<unsigned>(i);
    key = candidate < key ? candidate : key;
  }
  key = block_reduce(key, red_key, [](unsigned long long a, unsigned long long b) { return a < b ? a : b; });
  const int k = static_cast<int>(key & 0xffffffffu);
  float* u = W + perm[t] * ld;
  // First pass: the coefficients of e_k on the basis are the basis' row k.
  for (int i = threadIdx.x; i < N; i += blockDim.x) {
    double v = i == k ? 1 : 0;
    for (int q = 0; q < t; ++q) v -= static_cast<double>(W[perm[q] * ld + k]) * W[perm[q] * ld + i];
    u[i] = static_cast<float>(v);
  }
  __syncthreads();
  for (int q = warp; q < t; q += warps) {
    const float* b = W + perm[q] * ld;
    double d = 0;
    for (int i = lane; i < N; i += 32) d += static_cast<double>(b[i]) * u[i];
    d = warp_sum(d);
    if (lane == 0) coef[q] = static_cast<float>(d);
  }
  __syncthreads();
  double sq = 0;
  for (int i = threadIdx.x; i < N; i += blockDim.x) {
    double v = u[i];
    for (int q = 0; q < t; ++q) v -= static_cast<double>(coef[q]) * W[perm[q] * ld + i];
    u[i] = static_cast<float>(v);
    sq += v * v;
  }
  const double inv = 1 / sqrt(block_sum(sq, red));
  for (int i = threadIdx.x; i < N; i += blockDim.x) u[i] = static_cast<float>(u[i] * inv);
  __syncthreads();
}
#endif

#if defined(SIMT_DEVICE_PATH)
// One matrix's SVD buffer (see SvdLayout), in shared memory or its slice of the global workspace.
struct SvdBuffer {
  SvdLayout L;
  float *H, *tau, *W;
  double* V;  // null: V not wanted
  float* sig;
  int* perm;
  float* coef;
};

// Matrix b's buffer base: its slice of the global workspace, or the block's shared memory.
__device__ __forceinline__ float* svd_base(const SvdArgs& a, float* smem, long long b) { return a.ws ? a.ws + b * a.ws_floats : smem; }

// The pointers are recomputed from the base where needed rather than kept live across the sweeps
// (kept, they cost the 64-register one-block kernel a spill).
__device__ SvdBuffer svd_buffer(const SvdArgs& a, float* buf) {
  SvdBuffer B;
  B.L = svd_layout(a.M, a.N, a.v.p != nullptr);
  B.H = buf + B.L.h;
  B.tau = buf + B.L.tau;
  B.W = buf + B.L.w;
  B.V = a.v.p ? reinterpret_cast<double*>(buf + B.L.v) : nullptr;
  B.sig = buf + B.L.sig;
  B.perm = reinterpret_cast<int*>(buf + B.L.perm);
  B.coef = buf + B.L.coef;
  return B;
}

// Loads X, reduces a tall one by QR, sets W = X (or R) and V = I. A NaN or infinity anywhere:
// writes the NaN outputs and sweeps = −1 and returns false (every thread, without iterating).
// `bad`: a shared int.
__device__ bool svd_prepare(const SvdArgs& a, float* buf, long long b, double* red, int* bad) {
  const SvdBuffer B = svd_buffer(a, buf);
  const int M = a.M, N = a.N;
  const bool qr = M > N;
  const Mat<const float> X = matrix_of(a.x, b);
  if (threadIdx.x == 0) *bad = 0;
  __syncthreads();
  {
    float* dst = qr ? B.H : B.W;
    const long long ld = qr ? B.L.ldh : B.L.ldw;
    int nonfinite = 0;
    for_each_element(M, N, cols_fastest(X.rs, X.cs), [&](long long i, long long j) {
      const float v = X(i, j);
      nonfinite |= !(fabsf(v) <= FLT_MAX);
      dst[j * ld + i] = v;
    });
    if (nonfinite) atomicMax(bad, 1);
  }
  __syncthreads();
  if (*bad) {
    const Mat<float> U = matrix_of(a.u, b), Vo = matrix_of(a.v, b);
    float* s = a.s + b * a.keep;
    const float nan = __int_as_float(0x7fc00000);
    for (int t = threadIdx.x; t < a.keep; t += blockDim.x) s[t] = nan;
    if (a.u.p) for_each_element(M, a.ucols, cols_fastest(U.rs, U.cs), [&](long long i, long long j) { U(i, j) = nan; });
    if (a.v.p) for_each_element(N, a.vcols, cols_fastest(Vo.rs, Vo.cs), [&](long long i, long long j) { Vo(i, j) = nan; });
    if (threadIdx.x == 0) a.sweeps[b] = -1;
    return false;
  }
  if (qr) {
    householder_qr(B.H, B.L.ldh, M, N, B.tau, red);
    for_each_element(N, N, false, [&](long long i, long long j) { B.W[j * B.L.ldw + i] = i <= j ? B.H[j * B.L.ldh + i] : 0.f; });
  }
  if (B.V) for_each_element(N, N, false, [&](long long i, long long j) { B.V[j * B.L.ldw + i] = i == j ? 1 : 0; });
  __syncthreads();
  return true;
}

// After the sweeps: σ = W's column norms ranked descending, V's columns in that order, U_R = W / σ
// completed to an orthonormal set, U = Q·U_R for a tall X.
__device__ void svd_finish(const SvdArgs& a, float* buf, long long b, double* red, unsigned long long* red_key) {
  const SvdBuffer B = svd_buffer(a, buf);
  const int M = a.M, N = a.N;
  const long long ldw = B.L.ldw;
  float* W = B.W;
  float* sig = B.sig;
  int* perm = B.perm;
  const Mat<float> U = matrix_of(a.u, b), Vo = matrix_of(a.v, b);
  float* s = a.s + b * a.keep;
  for (int j = warp_id(); j < N; j += warp_count()) {
    double sq = 0;
    for (int i = lane_id(); i < N; i += 32) sq += static_cast<double>(W[j * ldw + i]) * W[j * ldw + i];
    sq = warp_sum(sq);
    if (lane_id() == 0) sig[j] = static_cast<float>(sqrt(sq));
  }
  __syncthreads();
  for (int j = threadIdx.x; j < N; j += blockDim.x) {
    const float sj = sig[j];
    int rank = 0;
    for (int l = 0; l < N; ++l) rank += sig[l] > sj || (sig[l] == sj && l < j);
    perm[rank] = j;
  }
  __syncthreads();
  for (int t = threadIdx.x; t < a.keep; t += blockDim.x) s[t] = sig[perm[t]];
  if (B.V) for_each_element(N, a.vcols, cols_fastest(Vo.rs, Vo.cs), [&](long long c, long long t) { Vo(c, t) = static_cast<float>(B.V[perm[t] * ldw + c]); });
  if (!a.u.p) return;

  // U_R's columns: W's divided by σ, the negligible ones (a suffix of the ranking) completed.
  const int ucols_r = a.ucols < N ? a.ucols : N;
  const float negligible = sig[perm[0]] * FLT_EPSILON;
  int kept = 0;
  while (kept < ucols_r && sig[perm[kept]] > negligible) ++kept;
  for_each_element(N, kept, false, [&](long long i, long long t) {
    const int j = perm[t];
    W[j * ldw + i] = static_cast<float>(W[j * ldw + i] / static_cast<double>(sig[j]));
  });
  __syncthreads();
  for (int t = kept; t < ucols_r; ++t) complete_column(W, ldw, N, perm, t, B.coef, red, red_key);

  if (M == N) {
    for_each_element(M, a.ucols, cols_fastest(U.rs, U.cs), [&](long long i, long long t) { U(i, t) = W[perm[t] * ldw + i]; });
    return;
  }
  // U = H_0 ⋯ H_{N−1} · [U_R 0; 0 I], built in the output.
  for_each_element(M, a.ucols, cols_fastest(U.rs, U.cs), [&](long long i, long long t) {
    U(i, t) = t < N ? (i < N ? W[perm[t] * ldw + i] : 0.f) : (i == t ? 1.f : 0.f);
  });
  __syncthreads();
  apply_q(B.H, B.L.ldh, M, N, B.tau, U, a.ucols, false);
}
#endif

__global__ void __launch_bounds__(kMaxThreads) svd_kernel(SvdArgs a) {
#if defined(SIMT_DEVICE_PATH)
  __shared__ double red[32];
  __shared__ unsigned long long red_key[32];
  __shared__ int flags[3];
  __shared__ int bad;
  SIMT_DYNAMIC_SHARED(float, smem);
  const long long b = blockIdx.x;
  float* buf = svd_base(a, smem, b);
  if (threadIdx.x == 0) flags[0] = flags[1] = flags[2] = 0;
  if (!svd_prepare(a, buf, b, red, &bad)) return;
  {
    const SvdBuffer B = svd_buffer(a, buf);
    const int sweeps = jacobi_sweeps(B.W, B.V, B.L.ldw, a.N, a.max_sweeps, a.tol, flags);
    if (threadIdx.x == 0) a.sweeps[b] = sweeps;
  }
  svd_finish(a, buf, b, red, red_key);
#endif
}

// ---- blocked Jacobi: the path of N > kBlockedMinCols ---------------------------------------
// One block per matrix leaves all but `batch` SMs idle, and its ~N rounds × sweeps barriers
// serialize (1024²: 1023 rounds × ~8 sweeps of 512 warps' pairs on one SM). Above
// kBlockedMinCols the columns are cut into blocks of kBlockCols and the round-robin tournament
// runs over the blocks instead: per round one launch with a CUDA block per disjoint block pair
// (all matrices of the batch in the same launch), each owning its pair's 2b = kPairCols columns
// of W and V over all N rows, so a round needs no other synchronization. Per block pair:
//   1. Gram G = [w_I w_J]ᵀ[w_I w_J] (2b × 2b), float64 accumulation over row tiles in shared memory;
//   2. the convergence test on G: a pair of its columns with |G_ij| > tol·√(G_ii G_jj) (and not
//      negligible, the one-block rule) marks the matrix's sweep as rotating; none: nothing to do;
//   3. two-sided parallel Jacobi of G in shared memory (float64, circle-method rounds, the same
//      Rutishauser rotation, stopping at tol·2⁻¹⁰), accumulating the orthogonal Q = J₁J₂⋯;
//   4. [w_I w_J] ← [w_I w_J]·Q and [v_I v_J] ← [v_I v_J]·Q, a row tile at a time (float64 FMAs,
//      W rounded once to float32 per sweep and pair, V kept in float64 as in the one-block kernel).
// G is computed afresh from the float32 W in every test, so the stopping rule checks the actual
// columns, not the eigensolve's model of them. A sweep-end launch turns "no pair rotated" into
// the sweep count; every launch of a converged (or non-finite) matrix returns at once, so the
// whole iteration (max_sweeps × (rounds + 1) launches) is enqueued without a host round trip.
// Load (Householder QR of a tall X) and the epilogue are the one-block kernel's (svd_prepare /
// svd_finish), one block per matrix over the global buffer.
// Napkin math, 1024²: 64 blocks, 32 pairs × 63 rounds per sweep; a pair reads its 32 columns of W
// (128 KiB) and V (256 KiB) and writes them once: ~400 KiB × 32 pairs ≈ 12.5 MiB a round, L2
// resident; ~2·1024·32²·2 ≈ 4 MFLOP float64 per pair for Gram + updates → 32 SMs busy, ~10 µs a
// round, ~8 sweeps ≈ 5 ms (estimated, not measured: no GPU was available when this was written).
constexpr int kBlockedMinCols = 128;
constexpr int kBlockCols = 16;
constexpr int kPairCols = 2 * kBlockCols;
constexpr int kPairThreads = 256;
constexpr int kTileRows = 32;
constexpr int kInnerMaxSweeps = 20;
static_assert(kTileRows * kPairCols % kPairThreads == 0 && kPairCols * kPairCols % kPairThreads == 0,
              "the tile and Gram loops give every thread the same number of entries");

// Per matrix: 0 iterating, 1 done (converged or out of sweeps), 2 non-finite (outputs written).
struct BlockedState {
  int done, rotated;
};

__global__ void __launch_bounds__(kMaxThreads) svd_blocked_prepare_kernel(SvdArgs a, BlockedState* state) {
#if defined(SIMT_DEVICE_PATH)
  __shared__ double red[32];
  __shared__ int bad;
  const long long b = blockIdx.x;
  const bool finite = svd_prepare(a, svd_base(a, nullptr, b), b, red, &bad);
  if (threadIdx.x == 0) {
    state[b] = BlockedState{finite ? 0 : 2, 0};
    a.sweeps[b] = -1;  // until a sweep without rotation
  }
#endif
}

#if defined(SIMT_DEVICE_PATH)
// The kTileRows × kPairCols tile of rows [r0, r0 + kTileRows) of the pair's columns (col[k] < 0:
// absent, read as zero), as doubles; the threads walk down the columns (coalesced).
template <class T>
__device__ void load_pair_tile(const T* src, long long ld, int rows, int r0, const int* col, double (*tile)[kPairCols + 1]) {
  for (int e = threadIdx.x; e < kTileRows * kPairCols; e += blockDim.x) {
    const int rr = e % kTileRows, k = e / kTileRows, r = r0 + rr;
    tile[rr][k] = col[k] >= 0 && r < rows ? static_cast<double>(src[col[k] * ld + r]) : 0.0;
  }
}

// X ← X·Q on the pair's columns of the rows × · column-major X, a row tile at a time.
template <class T>
__device__ void rotate_pair_columns(T* X, long long ld, int rows, const int* col, const double (*Q)[kPairCols + 1],
                                    double (*tile)[kPairCols + 1]) {
  constexpr int kPerThread = kTileRows * kPairCols / kPairThreads;
  for (int r0 = 0; r0 < rows; r0 += kTileRows) {
    __syncthreads();  // the previous tile's readers are done
    load_pair_tile(X, ld, rows, r0, col, tile);
    __syncthreads();
    double out[kPerThread];
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) {
      const int e = threadIdx.x + m * kPairThreads, rr = e % kTileRows, j = e / kTileRows;
      double acc = 0;
#pragma unroll 8
      for (int k = 0; k < kPairCols; ++k) acc = fma(tile[rr][k], Q[k][j], acc);
      out[m] = acc;
    }
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) {
      const int e = threadIdx.x + m * kPairThreads, rr = e % kTileRows, j = e / kTileRows, r = r0 + rr;
      if (col[j] >= 0 && r < rows) X[col[j] * ld + r] = static_cast<T>(out[m]);
    }
  }
}
#endif

// One round of the block tournament: CUDA block x handles block pair x % pairs of matrix x / pairs.
__global__ void __launch_bounds__(kPairThreads) svd_blocked_round_kernel(SvdArgs a, BlockedState* state, int round) {
#if defined(SIMT_DEVICE_PATH)
  constexpr int kPerThread = kPairCols * kPairCols / kPairThreads;
  __shared__ double G[kPairCols][kPairCols + 1];
  __shared__ double Q[kPairCols][kPairCols + 1];
  __shared__ double tile[kTileRows][kPairCols + 1];
  __shared__ double rot_c[kPairCols / 2], rot_s[kPairCols / 2];
  __shared__ int rot_i[kPairCols / 2], rot_j[kPairCols / 2];
  __shared__ int col[kPairCols];
  __shared__ int rotate, inner;
  const int N = a.N;
  const int nblocks = (N + kBlockCols - 1) / kBlockCols;
  const int players = nblocks + (nblocks & 1), pairs = players / 2;
  const long long b = blockIdx.x / pairs;
  if (state[b].done) return;
  int I, J;
  tournament_pair(players, round, static_cast<int>(blockIdx.x % pairs), I, J);
  if (J >= nblocks) return;  // the dummy of an odd block count
  const SvdBuffer B = svd_buffer(a, svd_base(a, nullptr, b));
  const long long ld = B.L.ldw;
  if (threadIdx.x < kPairCols) {
    const int k = threadIdx.x;
    const int c = (k < kBlockCols ? I : J) * kBlockCols + k % kBlockCols;
    col[k] = c < N ? c : -1;
  }
  if (threadIdx.x == 0) rotate = 0;

  // 1. Gram: thread t owns entries t, t + 256, … of the row-major 32 × 32 G.
  double g[kPerThread] = {};
  for (int r0 = 0; r0 < N; r0 += kTileRows) {
    __syncthreads();
    load_pair_tile(B.W, ld, N, r0, col, tile);
    __syncthreads();
#pragma unroll
    for (int m = 0; m < kPerThread; ++m) {
      const int e = threadIdx.x + m * kPairThreads, i = e / kPairCols, j = e % kPairCols;
#pragma unroll 8
      for (int rr = 0; rr < kTileRows; ++rr) g[m] = fma(tile[rr][i], tile[rr][j], g[m]);
    }
  }
#pragma unroll
  for (int m = 0; m < kPerThread; ++m) {
    const int e = threadIdx.x + m * kPairThreads;
    G[e / kPairCols][e % kPairCols] = g[m];
    Q[e / kPairCols][e % kPairCols] = e / kPairCols == e % kPairCols ? 1.0 : 0.0;
  }
  __syncthreads();

  // 2. Convergence test on the actual columns.
#pragma unroll
  for (int m = 0; m < kPerThread; ++m) {
    const int e = threadIdx.x + m * kPairThreads, i = e / kPairCols, j = e % kPairCols;
    if (i < j && needs_rotation(G[i][i], G[j][j], G[i][j], a.tol)) atomicExch(&rotate, 1);
  }
  __syncthreads();
  if (!rotate) return;
  if (threadIdx.x == 0) atomicExch(&state[b].rotated, 1);  // every pair block of matrix b may raise it

  // 3. Parallel two-sided Jacobi on G (absent columns are zero: never rotated).
  const double inner_tol = a.tol * (1.0 / 1024);
  for (int sweep = 0; sweep < kInnerMaxSweeps; ++sweep) {
    if (threadIdx.x == 0) inner = 0;
    for (int round_g = 0; round_g < kPairCols - 1; ++round_g) {
      __syncthreads();
      if (threadIdx.x < kPairCols / 2) {
        const int q = threadIdx.x;
        int i, j;
        tournament_pair(kPairCols, round_g, q, i, j);
        double c = 1, s = 0;
        if (needs_rotation(G[i][i], G[j][j], G[i][j], inner_tol)) {
          rutishauser(G[i][i], G[j][j], G[i][j], c, s);
          atomicExch(&inner, 1);
        }
        rot_i[q] = i;
        rot_j[q] = j;
        rot_c[q] = c;
        rot_s[q] = s;
      }
      __syncthreads();
      // G ← G·J and Q ← Q·J (columns i, j), then G ← Jᵀ·G (rows i, j): disjoint pairs, no conflicts.
      for (int e = threadIdx.x; e < kPairCols * kPairCols / 2; e += blockDim.x) {
        const int r = e % kPairCols, q = e / kPairCols, i = rot_i[q], j = rot_j[q];
        const double c = rot_c[q], s = rot_s[q];
        const double gi = G[r][i], gj = G[r][j], qi = Q[r][i], qj = Q[r][j];
        G[r][i] = c * gi - s * gj;
        G[r][j] = s * gi + c * gj;
        Q[r][i] = c * qi - s * qj;
        Q[r][j] = s * qi + c * qj;
      }
      __syncthreads();
      for (int e = threadIdx.x; e < kPairCols * kPairCols / 2; e += blockDim.x) {
        const int r = e % kPairCols, q = e / kPairCols, i = rot_i[q], j = rot_j[q];
        const double c = rot_c[q], s = rot_s[q];
        const double gi = G[i][r], gj = G[j][r];
        G[i][r] = c * gi - s * gj;
        G[j][r] = s * gi + c * gj;
      }
    }
    __syncthreads();
    const bool more = inner;
    __syncthreads();  // every thread has read `inner` before the next sweep clears it
    if (!more) break;
  }

  // 4. The updates.
  rotate_pair_columns(B.W, ld, N, col, Q, tile);
  if (B.V) rotate_pair_columns(B.V, ld, N, col, Q, tile);
#endif
}

// The end of sweep `sweep`: a matrix none of whose block pairs rotated has converged in it.
__global__ void svd_blocked_sweep_end_kernel(BlockedState* state, int32_t* sweeps, long long batch, int sweep, int max_sweeps) {
#if defined(SIMT_DEVICE_PATH)
  const long long b = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= batch || state[b].done) return;
  if (!state[b].rotated) {
    state[b].done = 1;
    sweeps[b] = sweep;
  } else if (sweep == max_sweeps) {
    state[b].done = 1;  // sweeps[b] stays −1
  }
  state[b].rotated = 0;
#endif
}

__global__ void __launch_bounds__(kMaxThreads) svd_blocked_finish_kernel(SvdArgs a, const BlockedState* state) {
#if defined(SIMT_DEVICE_PATH)
  __shared__ double red[32];
  __shared__ unsigned long long red_key[32];
  const long long b = blockIdx.x;
  if (state[b].done == 2) return;
  svd_finish(a, svd_base(a, nullptr, b), b, red, red_key);
#endif
}

__global__ void __launch_bounds__(kMaxThreads) qr_kernel(QrArgs a) {
#if defined(SIMT_DEVICE_PATH)
  __shared__ double red[32];
  SIMT_DYNAMIC_SHARED(float, smem);
  const long long b = blockIdx.x;
  const int m = a.m, n = a.n, k = m < n ? m : n;
  const long long ld = odd_ld(m);
  float* H = a.ws ? a.ws + b * a.ws_floats : smem;
  float* tau = H + ld * n;
  const Mat<const float> A = matrix_of(a.a, b);
  const Mat<float> Q = matrix_of(a.q, b), R = matrix_of(a.r, b);
  for_each_element(m, n, cols_fastest(A.rs, A.cs), [&](long long i, long long j) { H[j * ld + i] = A(i, j); });
  __syncthreads();
  householder_qr(H, ld, m, n, tau, red);
  if (a.r.p) for_each_element(k, n, cols_fastest(R.rs, R.cs), [&](long long i, long long j) { R(i, j) = i <= j ? H[j * ld + i] : 0.f; });
  if (!a.q.p) return;
  for_each_element(m, k, cols_fastest(Q.rs, Q.cs), [&](long long i, long long c) { Q(i, c) = i == c ? 1.f : 0.f; });
  __syncthreads();
  apply_q(H, ld, m, k, tau, Q, k, true);
#endif
}

// Threads per block: a warp per Jacobi pair (N / 2 of them) up to 1024; at least 4 warps for the
// reductions over the rows of a tall, narrow matrix.
int block_threads(long long cols) {
  const long long t = 32 * ((cols + 1) / 2);
  return static_cast<int>(t < 128 ? 128 : t > kMaxThreads ? kMaxThreads : t);
}

// Where one matrix's buffer lives: shared memory when it fits the device's per-block opt-in limit
// (less the kernels' static shared arrays), else a global workspace of batch × floats.
struct BufferPlan {
  int smem_bytes;  // 0: global workspace
  std::unique_ptr<DeviceScratch> ws;
};

template <class K>
BufferPlan place_buffer(K* kernel, long long floats, long long batch, int device) {
  constexpr int kStaticSmem = 1024;
  int optin = 0;
  LK_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  BufferPlan plan{0, nullptr};
  const long long bytes = floats * static_cast<long long>(sizeof(float));
  if (bytes <= optin - kStaticSmem) {
    plan.smem_bytes = static_cast<int>(bytes);
    if (bytes > 48 * 1024) LK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, plan.smem_bytes));
  } else {
    plan.ws = std::make_unique<DeviceScratch>(device, static_cast<size_t>(bytes * batch));
  }
  return plan;
}

void check_dims(long long rows, long long cols, const char* op) {
  if (rows > INT_MAX || cols > INT_MAX)
    throw Error(ErrorCode::Unsupported, std::string(op) + " (cuda): a " + std::to_string(rows) + " × " + std::to_string(cols) +
                                            " matrix exceeds the kernels' int dimensions");
}

std::string shape_text(long long rows, long long cols, long long batch) {
  return std::to_string(rows) + "x" + std::to_string(cols) + " batch " + std::to_string(batch);
}

// The blocked path: prepare, max_sweeps × (the block tournament's rounds + a sweep end), finish,
// all enqueued on `st` (see the blocked kernels).
void svd_blocked(SvdArgs a, long long batch, const SvdLayout& layout, cudaStream_t st, int device, bool wide) {
  constexpr const char* op = "linalg.svd";
  DeviceScratch ws(device, static_cast<size_t>(layout.total * batch) * sizeof(float));
  DeviceScratch state(device, static_cast<size_t>(batch) * sizeof(BlockedState));
  a.ws = ws.as<float>();
  a.ws_floats = layout.total;
  BlockedState* s = state.as<BlockedState>();
  const int threads = block_threads(a.N);
  const dim3 grid = grid_for(batch, 1, op);
  simt_launch(svd_blocked_prepare_kernel, grid, dim3(threads), 0, st, a, s);
  LK_CUDA_CHECK_LAUNCH("svd_blocked_prepare_kernel launch");
  const int nblocks = (a.N + kBlockCols - 1) / kBlockCols;
  const int players = nblocks + (nblocks & 1);
  const dim3 round_grid = grid_for(batch * (players / 2), 1, op);
  const dim3 end_grid = grid_for(batch, 256, op);
  for (int sweep = 1; sweep <= a.max_sweeps; ++sweep) {
    for (int round = 0; round < players - 1; ++round) {
      simt_launch(svd_blocked_round_kernel, round_grid, dim3(kPairThreads), 0, st, a, s, round);
      LK_CUDA_CHECK_LAUNCH("svd_blocked_round_kernel launch");
    }
    simt_launch(svd_blocked_sweep_end_kernel, end_grid, dim3(256), 0, st, s, a.sweeps, batch, sweep, a.max_sweeps);
    LK_CUDA_CHECK_LAUNCH("svd_blocked_sweep_end_kernel launch");
  }
  simt_launch(svd_blocked_finish_kernel, grid, dim3(threads), 0, st, a, static_cast<const BlockedState*>(s));
  LK_CUDA_CHECK_LAUNCH("svd_blocked_finish_kernel launch");
  note_plan(std::string(a.M > a.N ? "householder qr + " : "") + "blocked jacobi " + std::to_string(kPairCols) + "-col pairs global " +
            shape_text(a.M, a.N, batch) + (wide ? " transposed" : ""));
}

}  // namespace

void svd(const SvdParams& p, int device) {
  constexpr const char* op = "linalg.svd";
  const cudaStream_t st = begin_op(device, op);
  if (p.batch == 0) return;
  const bool wide = p.m < p.n;
  const long long M = wide ? p.n : p.m, N = wide ? p.m : p.n;
  check_dims(M, N, op);
  const MatrixArg& al = p.a_layout;
  const Batched<float> u{p.u, p.u_layout.batch_stride, p.u_layout.row_stride, p.u_layout.col_stride};
  const Batched<float> vh_t{p.vh, p.vh_layout.batch_stride, p.vh_layout.col_stride, p.vh_layout.row_stride};
  SvdArgs a{};
  a.x = wide ? Batched<const float>{p.a, al.batch_stride, al.col_stride, al.row_stride}
             : Batched<const float>{p.a, al.batch_stride, al.row_stride, al.col_stride};
  a.M = static_cast<int>(M);
  a.N = static_cast<int>(N);
  a.keep = static_cast<int>(p.keep);
  a.ucols = static_cast<int>(p.full_matrices ? M : p.keep);
  a.vcols = static_cast<int>(p.full_matrices ? N : p.keep);
  a.max_sweeps = p.max_sweeps;
  a.tol = p.tol > 0 ? p.tol : FLT_EPSILON;
  a.s = p.s;
  a.u = wide ? vh_t : u;
  a.v = wide ? u : vh_t;
  a.sweeps = p.sweeps;
  const SvdLayout layout = svd_layout(M, N, a.v.p != nullptr);
  if (N > kBlockedMinCols) return svd_blocked(a, p.batch, layout, st, device, wide);
  BufferPlan buffer = place_buffer(svd_kernel, layout.total, p.batch, device);
  a.ws = buffer.ws ? buffer.ws->as<float>() : nullptr;
  a.ws_floats = layout.total;
  const int threads = block_threads(N);
  simt_launch(svd_kernel, grid_for(p.batch, 1, op), dim3(threads), buffer.smem_bytes, st, a);
  LK_CUDA_CHECK_LAUNCH("svd_kernel launch");
  note_plan(std::string(M > N ? "householder qr + jacobi " : "jacobi ") + (buffer.ws ? "global " : "smem ") + shape_text(M, N, p.batch) +
            (wide ? " transposed" : "") + ", " + std::to_string(threads) + " threads");
}

void qr(const QrParams& p, int device) {
  constexpr const char* op = "linalg.qr";
  const cudaStream_t st = begin_op(device, op);
  if (p.batch == 0) return;
  check_dims(p.m, p.n, op);
  const MatrixArg& al = p.a_layout;
  QrArgs a{};
  a.a = Batched<const float>{p.a, al.batch_stride, al.row_stride, al.col_stride};
  a.m = static_cast<int>(p.m);
  a.n = static_cast<int>(p.n);
  a.q = Batched<float>{p.q, p.q_layout.batch_stride, p.q_layout.row_stride, p.q_layout.col_stride};
  a.r = Batched<float>{p.r, p.r_layout.batch_stride, p.r_layout.row_stride, p.r_layout.col_stride};
  const long long floats = odd_ld(p.m) * p.n + (p.m < p.n ? p.m : p.n);
  BufferPlan buffer = place_buffer(qr_kernel, floats, p.batch, device);
  a.ws = buffer.ws ? buffer.ws->as<float>() : nullptr;
  a.ws_floats = floats;
  const int threads = block_threads(p.n);
  simt_launch(qr_kernel, grid_for(p.batch, 1, op), dim3(threads), buffer.smem_bytes, st, a);
  LK_CUDA_CHECK_LAUNCH("qr_kernel launch");
  note_plan(std::string("householder ") + (buffer.ws ? "global " : "smem ") + shape_text(p.m, p.n, p.batch) + ", " +
            std::to_string(threads) + " threads");
}

}  // namespace lk::cuda_ops
