// linalg.svd and linalg.qr on CUDA (semantics: csrc/ops/linalg.h). One thread block per matrix:
// the whole factorization of a matrix (load, Householder QR, Jacobi sweeps, sort, completion of U,
// back-transformation) is one launch, with the block's barriers as the only synchronization.
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
//   else in a global workspace per matrix (L2-resident up to ~1000², correct at any size).
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

// The sweeps of one-sided Jacobi on the N × N column-major W (and V, when not null); returns the
// sweeps taken (the last one rotated nothing) or −1. `flags`: three shared ints, zero on entry.
// Sweep s raises flags[s % 3] and clears flags[(s + 1) % 3], which was last read at the end of
// sweep s − 2 and is next raised in sweep s + 1: a barrier separates each pair of accesses.
__device__ int jacobi_sweeps(float* W, double* V, long long ld, int N, int max_sweeps, double tol, int* flags) {
  // A pair whose smaller column is ≤ ε² of the larger one is not rotated (see the top): ratio² = ε⁴.
  constexpr double kNegligible = static_cast<double>(FLT_EPSILON) * FLT_EPSILON * FLT_EPSILON * FLT_EPSILON;
  const int lane = lane_id(), warp = warp_id(), warps = warp_count();
  const int players = N + (N & 1), rounds = players - 1, pairs = players / 2;
  for (int sweep = 1; sweep <= max_sweeps; ++sweep) {
    if (threadIdx.x == 0) flags[(sweep + 1) % 3] = 0;
    for (int round = 0; round < rounds; ++round) {
      for (int q = warp; q < pairs; q += warps) {
        // Circle method: player `players − 1` is fixed and meets `round`; the others meet mirrored.
        int i = q == 0 ? players - 1 : (round + q) % rounds;
        int j = q == 0 ? round : (round - q + rounds) % rounds;
        if (i > j) {
          const int tmp = i;
          i = j;
          j = tmp;
        }
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
        if (!(fabs(g) > tol * sqrt(a) * sqrt(b))) continue;
        if (fmin(a, b) <= kNegligible * fmax(a, b)) continue;
        const double zeta = (b - a) / (2 * g);
        const double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1 + zeta * zeta));
        const double c = 1 / sqrt(1 + t * t), s = c * t;
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
        if (lane == 0) flags[sweep % 3] = 1;
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

__global__ void __launch_bounds__(kMaxThreads) svd_kernel(SvdArgs a) {
#if defined(SIMT_DEVICE_PATH)
  __shared__ double red[32];
  __shared__ unsigned long long red_key[32];
  __shared__ int flags[3];
  __shared__ int bad;
  SIMT_DYNAMIC_SHARED(float, smem);
  const long long b = blockIdx.x;
  const int M = a.M, N = a.N;
  const bool qr = M > N;
  const SvdLayout L = svd_layout(M, N, a.v.p != nullptr);
  float* buf = a.ws ? a.ws + b * a.ws_floats : smem;
  float* H = buf + L.h;
  float* tau = buf + L.tau;
  float* W = buf + L.w;
  double* V = a.v.p ? reinterpret_cast<double*>(buf + L.v) : nullptr;
  float* sig = buf + L.sig;
  int* perm = reinterpret_cast<int*>(buf + L.perm);
  float* coef = buf + L.coef;
  const Mat<const float> X = matrix_of(a.x, b);
  const Mat<float> U = matrix_of(a.u, b), Vo = matrix_of(a.v, b);
  float* s = a.s + b * a.keep;

  if (threadIdx.x == 0) {
    bad = 0;
    flags[0] = flags[1] = flags[2] = 0;
  }
  __syncthreads();
  {
    float* dst = qr ? H : W;
    const long long ld = qr ? L.ldh : L.ldw;
    int nonfinite = 0;
    for_each_element(M, N, cols_fastest(X.rs, X.cs), [&](long long i, long long j) {
      const float v = X(i, j);
      nonfinite |= !(fabsf(v) <= FLT_MAX);
      dst[j * ld + i] = v;
    });
    if (nonfinite) atomicMax(&bad, 1);
  }
  __syncthreads();
  if (bad) {
    const float nan = __int_as_float(0x7fc00000);
    for (int t = threadIdx.x; t < a.keep; t += blockDim.x) s[t] = nan;
    if (a.u.p) for_each_element(M, a.ucols, cols_fastest(U.rs, U.cs), [&](long long i, long long j) { U(i, j) = nan; });
    if (a.v.p) for_each_element(N, a.vcols, cols_fastest(Vo.rs, Vo.cs), [&](long long i, long long j) { Vo(i, j) = nan; });
    if (threadIdx.x == 0) a.sweeps[b] = -1;
    return;
  }
  if (qr) {
    householder_qr(H, L.ldh, M, N, tau, red);
    for_each_element(N, N, false, [&](long long i, long long j) { W[j * L.ldw + i] = i <= j ? H[j * L.ldh + i] : 0.f; });
  }
  if (V) for_each_element(N, N, false, [&](long long i, long long j) { V[j * L.ldw + i] = i == j ? 1 : 0; });
  __syncthreads();

  const int sweeps = jacobi_sweeps(W, V, L.ldw, N, a.max_sweeps, a.tol, flags);
  if (threadIdx.x == 0) a.sweeps[b] = sweeps;

  for (int j = warp_id(); j < N; j += warp_count()) {
    double sq = 0;
    for (int i = lane_id(); i < N; i += 32) sq += static_cast<double>(W[j * L.ldw + i]) * W[j * L.ldw + i];
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
  if (V) for_each_element(N, a.vcols, cols_fastest(Vo.rs, Vo.cs), [&](long long c, long long t) { Vo(c, t) = static_cast<float>(V[perm[t] * L.ldw + c]); });
  if (!a.u.p) return;

  // U_R's columns: W's divided by σ, the negligible ones (a suffix of the ranking) completed.
  const int ucols_r = a.ucols < N ? a.ucols : N;
  const float negligible = sig[perm[0]] * FLT_EPSILON;
  int kept = 0;
  while (kept < ucols_r && sig[perm[kept]] > negligible) ++kept;
  for_each_element(N, kept, false, [&](long long i, long long t) {
    const int j = perm[t];
    W[j * L.ldw + i] = static_cast<float>(W[j * L.ldw + i] / static_cast<double>(sig[j]));
  });
  __syncthreads();
  for (int t = kept; t < ucols_r; ++t) complete_column(W, L.ldw, N, perm, t, coef, red, red_key);

  if (!qr) {
    for_each_element(M, a.ucols, cols_fastest(U.rs, U.cs), [&](long long i, long long t) { U(i, t) = W[perm[t] * L.ldw + i]; });
    return;
  }
  // U = H_0 ⋯ H_{N−1} · [U_R 0; 0 I], built in the output.
  for_each_element(M, a.ucols, cols_fastest(U.rs, U.cs), [&](long long i, long long t) {
    U(i, t) = t < N ? (i < N ? W[perm[t] * L.ldw + i] : 0.f) : (i == t ? 1.f : 0.f);
  });
  __syncthreads();
  apply_q(H, L.ldh, M, N, tau, U, a.ucols, false);
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
