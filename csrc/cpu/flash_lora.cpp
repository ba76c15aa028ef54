// Flash-LoRA-Attention on the CPU (compiled once per SIMD level into lk::cpu::LK_SIMD_NS); the
// semantics are in ops/flash_lora.h.
//
// Everything is float32 inside: tiles are widened from the dtype once per task, products run
// through one register-tiled micro-kernel (C[MR × NV·kLanes] (+)= A·B, a broadcast of A per row
// and NV vector loads of B per step, MR·NV FMAs: AVX-512 6×4 / 8×3 / 4×5 / 12×2, AVX2 6×2), and
// the low-rank paths are folded into the same products by concatenation, never expanded:
//   S    = [Qs | Qr] · [Kᵀ ; k_low_rankᵀ]      (K dim D + r_k; Qr = Qs·k_lora_bᵀ once per task)
//   [O | O_r] += P · [V | v_low_rank]         (N dim D + r_v, one online-softmax rescale for both)
//   out  = (O + O_r·v_lora_b) / l             (once per task)
// so the low-rank work is exactly r/D of the base products (r padded to kLanes on the value side).
//
// Forward: a task is (batch b, KV head g, query block) with the G = Hq/Hk query heads of g's
// group stacked as G·BM rows (BM = 128/G), so each 64-key K/V tile, widened (K transposed through
// registers) once, serves the whole group. Online softmax in base 2 (log2(e)·scale folded into Qs;
// exp2 by a Cephes polynomial, ≤ 2 ulp), lse = ln2·m + ln l. Causal tiles past the block's last
// row are never visited; only the diagonal tiles are masked. Few tasks (decode) → the keys are
// split into chunks whose (O, m, l) partials are combined by lse (flash-decoding); 1-3 rows use
// dot products on row-major K instead of the transposed tile.
// Napkin (B=1, H=32, S=1024, D=128, float32, non-causal): 4·S²·D·H = 17.2 GFLOP of FMAs; a Zen4
// core sustains ~100 GFLOP/s in this micro-kernel, so ~90 ms on 2 cores + ~10% for the softmax
// (32 M exp2, ~20 instructions per 16) and the tile widening; causal visits ~half the tiles.
// torch's naive path does the same FLOPs plus a 128 MiB score tensor written and read 3-4 times.
// Measured (busy shared Zen4, per-thread CPU time, float32, B=1 H=32 S=1024 D=128): forward
// non-causal 106 ms (162 GFLOP/s over 2 cores), +r_v=16 114 ms (+7%, r/D = 12.5%); causal 63 ms,
// +r_v=16 66-68 ms; backward causal 139 ms (r=0), 148 ms (r_v=16). Profile: ~60% micro-kernel,
// ~9% K-tile transpose, the rest softmax and widening. Decode (B=4, Sq=1, Sk=4096, Hq/Hk=32/8)
// 15 ms: memory bound (~8.5 GB/s of float32 K/V).
//
// Backward: pass 0 (per b, h, query block) computes D_i = Σ dO·O, dO_r = dO·v_lora_bᵀ and
// Qr = scale·q·k_lora_bᵀ once. Pass 1: a task is (b, g, chunk of 64-key blocks); per key block it
// widens K, V (transposed) and the low-rank rows, then for every query head of the group and query
// block it recomputes S = [Qs|Qr]·[Kᵀ;k_lrᵀ], P = exp(S − lse), dP = [dO|dO_r]·[Vᵀ;v_lrᵀ],
// dS = P⊙(dP − D), and accumulates dV += Pᵀ·dO, dK += dSᵀ·Qs (the task owns these keys: no
// atomics) and [dQ | dQ_r] += dS·[K | k_lr] into a float32 buffer of the task (or of the thread when
// every task covers all keys). dK, dV are rounded once per key block; their low-rank projections
// go to float32 per-(b, g) / per-task partials. Pass 2 sums the dQ partials in chunk order, adds
// dQ_r·k_lora_b and rounds; pass 3 sums the low-rank partials in a fixed order. Deterministic.
// Cost: 5 products of S·S·D per head (vs 2 forward) + r/D for the low-rank parts.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/parallel.h"
#include "cpu/dispatch/kernels.h"
#include "cpu/packed_gemm.h"  // ceil_div, round_up
#include "cpu/vec.h"

namespace lk::cpu::LK_SIMD_NS {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kInf = std::numeric_limits<float>::infinity();

constexpr int64_t kKeyTile = 64;     // keys per tile (forward and backward)
constexpr int64_t kRowsTarget = 128;  // query rows (all heads of a group) per forward task
constexpr int64_t kBwdRows = 64;     // query rows per backward block
constexpr int64_t kDirectRows = 4;   // fewer rows: dot products against row-major K

// ---- the register-tiled micro-kernel ------------------------------------------------------------
// C[M × N] (+)= A·B with A(i, k) = A[i·ars + k·acs] (row-major A, or a transposed view of one),
// B row-major with row stride ldb, C row-major, N a multiple of kLanes. Columns go in panels of
// NV vectors, rows in blocks of MR: each k step is NV loads, MR broadcasts and MR·NV FMAs.
#if defined(LK_SIMD_AVX512)
constexpr int kMaxNV = 5;  // 32 zmm: MR·NV accumulators + NV + 1 ≤ 30
constexpr int mr_for(int nv) { return nv == 5 ? 4 : nv == 4 ? 6 : nv == 3 ? 8 : 12; }
#elif defined(LK_SIMD_AVX2)
constexpr int kMaxNV = 2;  // 16 ymm: 6×2 + 2 + 1 = 15
constexpr int mr_for(int nv) { return nv == 2 ? 6 : 12; }
#elif defined(LK_SIMD_NEON)
constexpr int kMaxNV = 4;  // 32 q: 6×4 + 4 + 1 = 29
constexpr int mr_for(int nv) { return nv == 4 ? 6 : nv == 3 ? 8 : 12; }
#else
constexpr int kMaxNV = 2;
constexpr int mr_for(int) { return 4; }
#endif

template <int MR, int NV>
void micro(int64_t K, const float* __restrict A, int64_t ars, int64_t acs, const float* __restrict B, int64_t ldb,
           float* __restrict C, int64_t ldc, bool accumulate) {
  Vec acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = accumulate ? vload(C + i * ldc + v * kLanes) : vzero();
  for (int64_t k = 0; k < K; ++k) {
    Vec bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = vload(B + k * ldb + v * kLanes);
    const float* a = A + k * acs;
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const Vec ai = vset1(a[i * ars]);
      for (int v = 0; v < NV; ++v) acc[i][v] = vfma(ai, bv[v], acc[i][v]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) vstore(C + i * ldc + v * kLanes, acc[i][v]);
}

template <int NV, int MR>
void micro_tail(int64_t rows, int64_t K, const float* A, int64_t ars, int64_t acs, const float* B, int64_t ldb, float* C,
                int64_t ldc, bool accumulate) {
  if constexpr (MR > 0) {
    if (rows == MR) micro<MR, NV>(K, A, ars, acs, B, ldb, C, ldc, accumulate);
    else micro_tail<NV, MR - 1>(rows, K, A, ars, acs, B, ldb, C, ldc, accumulate);
  }
}

template <int NV>
void gemm_panel(int64_t M, int64_t K, const float* A, int64_t ars, int64_t acs, const float* B, int64_t ldb, float* C,
                int64_t ldc, bool accumulate) {
  constexpr int MR = mr_for(NV);
  int64_t i = 0;
  for (; i + MR <= M; i += MR) micro<MR, NV>(K, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, accumulate);
  if (i < M) micro_tail<NV, MR - 1>(M - i, K, A + i * ars, ars, acs, B, ldb, C + i * ldc, ldc, accumulate);
}

template <int NV>
void gemm_dispatch(int nv, int64_t M, int64_t K, const float* A, int64_t ars, int64_t acs, const float* B, int64_t ldb,
                   float* C, int64_t ldc, bool accumulate) {
  if (nv == NV) gemm_panel<NV>(M, K, A, ars, acs, B, ldb, C, ldc, accumulate);
  else if constexpr (NV > 1) gemm_dispatch<NV - 1>(nv, M, K, A, ars, acs, B, ldb, C, ldc, accumulate);
}

void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t ars, int64_t acs, const float* B, int64_t ldb,
          float* C, int64_t ldc, bool accumulate) {
  const int64_t nvec = N / kLanes;
  for (int64_t c = 0; c < nvec;) {
    const int64_t rem = nvec - c;
    int nv = 0;  // the widest panel that divides what is left, else the widest that fits
    for (int cand = kMaxNV; cand >= 2 && nv == 0; --cand)
      if (rem % cand == 0) nv = cand;
    if (nv == 0) nv = static_cast<int>(std::min<int64_t>(rem, kMaxNV));
    gemm_dispatch<kMaxNV>(nv, M, K, A, ars, acs, B + c * kLanes, ldb, C + c * kLanes, ldc, accumulate);
    c += nv;
  }
}

// ---- small vector helpers -------------------------------------------------------------------------
inline float dot(const float* a, const float* b, int64_t n) {  // n a multiple of kLanes
  Vec s0 = vzero(), s1 = vzero();
  int64_t k = 0;
  for (; k + 2 * kLanes <= n; k += 2 * kLanes) {
    s0 = vfma(vload(a + k), vload(b + k), s0);
    s1 = vfma(vload(a + k + kLanes), vload(b + k + kLanes), s1);
  }
  for (; k < n; k += kLanes) s0 = vfma(vload(a + k), vload(b + k), s0);
  return vsum(vadd(s0, s1));
}

inline void scale_row(float* x, int64_t n, float s) {  // n a multiple of kLanes
  const Vec sv = vset1(s);
  for (int64_t k = 0; k < n; k += kLanes) vstore(x + k, vmul(vload(x + k), sv));
}

inline void zero(float* x, int64_t n) { std::fill(x, x + n, 0.0f); }

// dst[0, n) ← base[i, i+n) widened, then zeros up to n_pad.
template <DType T>
inline void widen_pad(const void* base, int64_t i, int64_t n, int64_t n_pad, float* dst) {
  widen_row<T>(base, i, n, dst);
  std::fill(dst + n, dst + n_pad, 0.0f);
}

// base[i, i+n) ← s·src rounded to T.
template <DType T>
inline void store_row(void* base, int64_t i, const float* src, int64_t n, float s) {
  const Vec sv = vset1(s);
  int64_t k = 0;
  for (; k + kLanes <= n; k += kLanes) vstore_from_float<T>(base, i + k, vmul(vload(src + k), sv));
  for (; k < n; ++k) store_from_float<T>(base, i + k, s * src[k]);
}

// dst[d·ldd + n] = row n of the source (offset off0 + n·row_stride, D elements), widened, for
// n < rows; zero for rows ≤ n < n_pad. kLanes×kLanes blocks transposed in registers; n_pad and D
// multiples of kLanes.
template <DType T>
void load_transposed(const void* base, int64_t off0, int64_t row_stride, int64_t rows, int64_t n_pad, int64_t D,
                     float* dst, int64_t ldd) {
  for (int64_t n0 = 0; n0 < n_pad; n0 += kLanes)
    for (int64_t d0 = 0; d0 < D; d0 += kLanes) {
      Vec t[kLanes];
      for (int l = 0; l < kLanes; ++l)
        t[l] = n0 + l < rows ? vload_as_float<T>(base, off0 + (n0 + l) * row_stride + d0) : vzero();
      vtranspose(t);
      for (int c = 0; c < kLanes; ++c) vstore(dst + (d0 + c) * ldd + n0, t[c]);
    }
}

// dst[t·ldd + n] = low-rank row n element t (t < r), zero for rows ≤ n < n_pad.
template <DType T>
void load_lowrank_transposed(const AttnTensor& lr, int64_t b, int64_t j0, int64_t rows, int64_t n_pad, int64_t r,
                             float* dst, int64_t ldd) {
  for (int64_t n = 0; n < n_pad; ++n) {
    if (n < rows) {
      const int64_t off = b * lr.batch_stride + (j0 + n) * lr.seq_stride;
      for (int64_t t = 0; t < r; ++t) dst[t * ldd + n] = load_as_float<T>(lr.data, off + t);
    } else {
      for (int64_t t = 0; t < r; ++t) dst[t * ldd + n] = 0.0f;
    }
  }
}

// B factor [r, D] of adapter ℓ, KV head g (contiguous [L, Hk, r, D]) as float32: row-major [r, D]
// or transposed [D, r_pad] (zero columns r ≤ t < r_pad).
template <DType T>
void load_factor(const void* f, int64_t heads_k, int64_t id, int64_t g, int64_t r, int64_t D, float* dst) {
  widen_row<T>(f, (id * heads_k + g) * r * D, r * D, dst);
}
template <DType T>
void load_factor_transposed(const void* f, int64_t heads_k, int64_t id, int64_t g, int64_t r, int64_t r_pad, int64_t D,
                            float* dst) {
  const int64_t base = (id * heads_k + g) * r * D;
  for (int64_t d = 0; d < D; ++d) {
    for (int64_t t = 0; t < r; ++t) dst[d * r_pad + t] = load_as_float<T>(f, base + t * D + d);
    for (int64_t t = r; t < r_pad; ++t) dst[d * r_pad + t] = 0.0f;
  }
}

int64_t adapter_of(const FlashLoraParams& p, int64_t b) {
  const int64_t id = p.adapter_ids ? p.adapter_ids[b] : 0;
  return id >= 0 && id < p.adapters ? id : -1;
}

inline int64_t off4(const AttnTensor& t, int64_t b, int64_t s, int64_t h) {
  return b * t.batch_stride + s * t.seq_stride + h * t.head_stride;
}
inline int64_t off4(const AttnOutTensor& t, int64_t b, int64_t s, int64_t h) {
  return b * t.batch_stride + s * t.seq_stride + h * t.head_stride;
}

// ==================================================================================================
// Forward
// ==================================================================================================

struct FwdShape {
  int64_t G, BM, nqb, D, rkp, rvp, ldq, ldv, rows_max, splits, part_floats;
};

// One (b, g, query block [i0, i1), keys [kbeg, kend)) through the online softmax. Writes out/lse
// when part is null, else the unnormalized O (with the value low-rank term), m (base 2) and l.
template <DType T>
void forward_block(const FlashLoraParams& p, const FwdShape& sh, float* scratch, int64_t b, int64_t g, int64_t i0,
                   int64_t i1, int64_t kbeg, int64_t kend, float* part) {
  const int64_t D = p.head_dim, G = sh.G, nq = i1 - i0, R = G * nq, off = p.seq_k - p.seq_q;
  const int64_t id = adapter_of(p, b);
  const bool kpath = p.k_rank > 0 && id >= 0, vpath = p.v_rank > 0 && id >= 0;
  const int64_t rk = kpath ? p.k_rank : 0, rv = vpath ? p.v_rank : 0;
  const int64_t ldq = sh.ldq, ldv = sh.ldv;  // Qx row stride D + rk_pad, Ox/Vx row stride D + rv_pad
  const int64_t Dv = D + (vpath ? sh.rvp : 0);
  const bool direct = R < kDirectRows;

  float* Qx = scratch;                             // [R, ldq]   scale·log2e·q | Qr
  float* Kx = Qx + sh.rows_max * ldq;              // [D + rk, 64] transposed, or [64, ldq]
  float* Vx = Kx + ldq * kKeyTile;                 // [64, ldv]  V | v_low_rank
  float* S = Vx + kKeyTile * ldv;                  // [R, 64]
  float* Ox = S + sh.rows_max * kKeyTile;          // [R, ldv]   O | O_r
  float* m = Ox + sh.rows_max * ldv;               // [R]
  float* l = m + sh.rows_max;                      // [R]
  float* fac = l + sh.rows_max;                    // k_lora_bᵀ [D, rk_pad] or v_lora_b [rv, D]

  const float qscale = p.softmax_scale * kLog2e;
  for (int64_t hh = 0; hh < G; ++hh)
    for (int64_t ii = 0; ii < nq; ++ii) {
      float* row = Qx + (hh * nq + ii) * ldq;
      widen_row<T>(p.q.data, off4(p.q, b, i0 + ii, g * G + hh), D, row);
      scale_row(row, D, qscale);
      std::fill(row + D, row + ldq, 0.0f);
    }
  if (kpath) {  // Qr = Qs·k_lora_bᵀ into columns D.. (R·D·r FMAs, once per task)
    load_factor_transposed<T>(p.k_lora_b, p.heads_k, id, g, rk, sh.rkp, D, fac);
    gemm(R, sh.rkp, D, Qx, ldq, 1, fac, sh.rkp, Qx + D, ldq, false);
  }
  std::fill(m, m + R, -kInf);
  std::fill(l, l + R, 0.0f);
  std::fill(Ox, Ox + R * ldv, 0.0f);

  for (int64_t j0 = kbeg; j0 < kend; j0 += kKeyTile) {
    const int64_t j1 = std::min(j0 + kKeyTile, kend), nk = j1 - j0;
    // S = [Qs | Qr]·[K | k_lr]ᵀ: R·64·(D + rk) FMAs.
    if (!direct) {
      load_transposed<T>(p.k_base.data, off4(p.k_base, b, j0, g), p.k_base.seq_stride, nk, kKeyTile, D, Kx, kKeyTile);
      if (kpath) load_lowrank_transposed<T>(p.k_low_rank, b, j0, nk, kKeyTile, rk, Kx + D * kKeyTile, kKeyTile);
      gemm(R, kKeyTile, D + rk, Qx, ldq, 1, Kx, kKeyTile, S, kKeyTile, false);
    } else {
      for (int64_t n = 0; n < nk; ++n) {
        float* row = Kx + n * ldq;
        widen_row<T>(p.k_base.data, off4(p.k_base, b, j0 + n, g), D, row);
        if (kpath) widen_pad<T>(p.k_low_rank.data, b * p.k_low_rank.batch_stride + (j0 + n) * p.k_low_rank.seq_stride, rk,
                                ldq - D, row + D);
        else std::fill(row + D, row + ldq, 0.0f);
      }
      for (int64_t r = 0; r < R; ++r)
        for (int64_t n = 0; n < nk; ++n) S[r * kKeyTile + n] = dot(Qx + r * ldq, Kx + n * ldq, ldq);
    }
    // [V | v_lr] rows, widened.
    for (int64_t n = 0; n < nk; ++n) {
      float* row = Vx + n * ldv;
      widen_row<T>(p.v_base.data, off4(p.v_base, b, j0 + n, g), D, row);
      if (vpath) widen_pad<T>(p.v_low_rank.data, b * p.v_low_rank.batch_stride + (j0 + n) * p.v_low_rank.seq_stride, rv,
                              sh.rvp, row + D);
    }
    // Mask (padding keys, and the causal diagonal), then the online softmax per row.
    const bool diagonal = p.causal && j1 - 1 > i0 + off;
    for (int64_t r = 0; r < R; ++r) {
      float* s = S + r * kKeyTile;
      int64_t lim = nk;
      if (diagonal) lim = std::max<int64_t>(0, std::min(lim, i0 + r % nq + off - j0 + 1));
      for (int64_t n = lim; n < kKeyTile; ++n) s[n] = -kInf;
      Vec mx = vload(s);
      for (int64_t n = kLanes; n < kKeyTile; n += kLanes) mx = vmax(mx, vload(s + n));
      const float m_new = std::max(m[r], vmax_lanes(mx));
      if (m_new == -kInf) {  // nothing visible yet: P = 0
        zero(s, kKeyTile);
        continue;
      }
      const float alpha = std::exp2(m[r] - m_new);
      const Vec mv = vset1(m_new);
      Vec sum = vzero();
      for (int64_t n = 0; n < kKeyTile; n += kLanes) {
        const Vec e = vexp2(vsub(vload(s + n), mv));
        vstore(s + n, e);
        sum = vadd(sum, e);
      }
      l[r] = l[r] * alpha + vsum(sum);
      m[r] = m_new;
      if (alpha != 1.0f) scale_row(Ox + r * ldv, Dv, alpha);
    }
    // [O | O_r] += P·[V | v_lr]: R·nk·(D + rv_pad) FMAs.
    gemm(R, Dv, nk, S, kKeyTile, 1, Vx, ldv, Ox, ldv, true);
  }

  if (vpath) {  // O += O_r·v_lora_b (R·r·D FMAs)
    load_factor<T>(p.v_lora_b, p.heads_k, id, g, rv, D, fac);
    gemm(R, D, rv, Ox + D, ldv, 1, fac, D, Ox, ldv, true);
  }
  if (part) {  // [rows_max, D] O, then m, l
    for (int64_t r = 0; r < R; ++r) std::copy(Ox + r * ldv, Ox + r * ldv + D, part + r * D);
    std::copy(m, m + R, part + sh.rows_max * D);
    std::copy(l, l + R, part + sh.rows_max * D + sh.rows_max);
    return;
  }
  for (int64_t hh = 0; hh < G; ++hh)
    for (int64_t ii = 0; ii < nq; ++ii) {
      const int64_t r = hh * nq + ii, h = g * G + hh, i = i0 + ii;
      const bool none = l[r] == 0.0f;
      store_row<T>(p.out.data, off4(p.out, b, i, h), Ox + r * ldv, D, none ? 0.0f : 1.0f / l[r]);
      p.lse[(b * p.heads_q + h) * p.seq_q + i] = none ? -kInf : m[r] * kLn2 + std::log(l[r]);
    }
}

// The keys query rows [i0, i1) can see.
int64_t visible_keys(const FlashLoraParams& p, int64_t i1) {
  if (!p.causal) return p.seq_k;
  return std::clamp<int64_t>(i1 - 1 + p.seq_k - p.seq_q + 1, 0, p.seq_k);
}

FwdShape forward_shape(const FlashLoraParams& p) {
  FwdShape sh{};
  sh.G = p.heads_q / p.heads_k;
  sh.BM = std::max<int64_t>(1, std::min(p.seq_q, std::max<int64_t>(1, kRowsTarget / sh.G)));
  sh.nqb = ceil_div(p.seq_q, sh.BM);
  sh.D = p.head_dim;
  sh.rkp = round_up(p.k_rank, kLanes);
  sh.rvp = round_up(p.v_rank, kLanes);
  sh.ldq = sh.D + sh.rkp;
  sh.ldv = sh.D + sh.rvp;
  sh.rows_max = sh.G * sh.BM;
  sh.splits = 1;
  sh.part_floats = sh.rows_max * sh.D + 2 * sh.rows_max;
  return sh;
}

int64_t forward_scratch_floats(const FwdShape& sh, const FlashLoraParams& p) {
  const int64_t fac_floats = std::max(sh.D * sh.rkp, p.v_rank * sh.D);
  return sh.rows_max * sh.ldq + sh.ldq * kKeyTile + kKeyTile * sh.ldv + sh.rows_max * kKeyTile + sh.rows_max * sh.ldv +
         2 * sh.rows_max + fac_floats + 64;
}

template <DType T>
void forward(const FlashLoraParams& p) {
  const int64_t B = p.batch, Hk = p.heads_k, D = p.head_dim;
  if (B == 0 || p.seq_q == 0 || p.heads_q == 0) return;
  FwdShape sh = forward_shape(p);

  // Few (b, g, query block) tasks for the threads (decode): split the keys (≥ 256 per chunk).
  const int64_t threads = num_threads(), tasks0 = B * Hk * sh.nqb;
  sh.splits = 1;
  if (tasks0 < 2 * threads && p.seq_k >= 512)
    sh.splits = std::min(ceil_div(4 * threads, tasks0), p.seq_k / 256);
  const int64_t scratch_floats = forward_scratch_floats(sh, p);
  std::vector<std::vector<float>> scratch(static_cast<size_t>(threads));
  std::vector<float> parts(sh.splits > 1 ? static_cast<size_t>(tasks0 * sh.splits * sh.part_floats) : 0);

  // Task order: the largest query blocks (most visible keys under causal) first.
  auto decode_task = [&](int64_t t0, int64_t& b, int64_t& g, int64_t& i0, int64_t& i1) {
    const int64_t qb = sh.nqb - 1 - t0 % sh.nqb;
    const int64_t bg = t0 / sh.nqb;
    b = bg / Hk;
    g = bg % Hk;
    i0 = qb * sh.BM;
    i1 = std::min(p.seq_q, i0 + sh.BM);
  };
  parallel_for(tasks0 * sh.splits, [&](int64_t task, int thread) {
    auto& buf = scratch[static_cast<size_t>(thread)];
    if (buf.empty()) buf.resize(static_cast<size_t>(scratch_floats));
    const int64_t t0 = task / sh.splits, s = task % sh.splits;
    int64_t b, g, i0, i1;
    decode_task(t0, b, g, i0, i1);
    const int64_t kend = visible_keys(p, i1);
    if (sh.splits == 1) {
      forward_block<T>(p, sh, buf.data(), b, g, i0, i1, 0, kend, nullptr);
    } else {
      const int64_t chunk = round_up(ceil_div(kend, sh.splits), kKeyTile);
      const int64_t k0 = std::min(kend, s * chunk), k1 = std::min(kend, k0 + chunk);
      forward_block<T>(p, sh, buf.data(), b, g, i0, i1, k0, k1, parts.data() + task * sh.part_floats);
    }
  });
  if (sh.splits == 1) return;

  // Combine the splits by their maxima: O = Σ 2^(m_s − m)·O_s / Σ 2^(m_s − m)·l_s.
  parallel_for(tasks0, [&](int64_t t0, int) {
    int64_t b, g, i0, i1;
    decode_task(t0, b, g, i0, i1);
    const int64_t nq = i1 - i0;
    std::vector<float> acc(static_cast<size_t>(D));
    for (int64_t hh = 0; hh < sh.G; ++hh)
      for (int64_t ii = 0; ii < nq; ++ii) {
        const int64_t r = hh * nq + ii, h = g * sh.G + hh, i = i0 + ii;
        float mmax = -kInf;
        for (int64_t s = 0; s < sh.splits; ++s) {
          const float* part = parts.data() + (t0 * sh.splits + s) * sh.part_floats;
          mmax = std::max(mmax, part[sh.rows_max * D + r]);
        }
        float lsum = 0.0f;
        zero(acc.data(), D);
        if (mmax != -kInf)
          for (int64_t s = 0; s < sh.splits; ++s) {
            const float* part = parts.data() + (t0 * sh.splits + s) * sh.part_floats;
            const float ms = part[sh.rows_max * D + r];
            if (ms == -kInf) continue;
            const float w = std::exp2(ms - mmax);
            lsum += w * part[sh.rows_max * D + sh.rows_max + r];
            const Vec wv = vset1(w);
            for (int64_t d = 0; d < D; d += kLanes) vstore(acc.data() + d, vfma(wv, vload(part + r * D + d), vload(acc.data() + d)));
          }
        const bool none = lsum == 0.0f;
        store_row<T>(p.out.data, off4(p.out, b, i, h), acc.data(), D, none ? 0.0f : 1.0f / lsum);
        p.lse[(b * p.heads_q + h) * p.seq_q + i] = none ? -kInf : mmax * kLn2 + std::log(lsum);
      }
  });
}

// ==================================================================================================
// Backward
// ==================================================================================================

template <DType T>
void backward(const FlashLoraBackwardParams& bp) {
  const FlashLoraParams& p = bp.fwd;
  const int64_t B = p.batch, Sq = p.seq_q, Sk = p.seq_k, Hq = p.heads_q, Hk = p.heads_k, D = p.head_dim;
  const int64_t G = Hq / Hk, off = Sk - Sq, L = p.adapters;
  const int64_t rk = p.k_rank, rv = p.v_rank, rkp = round_up(rk, kLanes), rvp = round_up(rv, kLanes);
  const int64_t ldq = D + rkp, ldo = D + rvp;  // [Qs | Qr], [dQ | dQr], [K | k_lr] / [dO | dO_r]
  const float scale = p.softmax_scale;
  const int64_t threads = num_threads();
  const int64_t nqb = ceil_div(Sq, kBwdRows), nkb = ceil_div(Sk, kKeyTile);

  std::vector<int64_t> ids(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) ids[static_cast<size_t>(b)] = adapter_of(p, b);
  auto kpath_of = [&](int64_t b) { return rk > 0 && ids[static_cast<size_t>(b)] >= 0; };
  auto vpath_of = [&](int64_t b) { return rv > 0 && ids[static_cast<size_t>(b)] >= 0; };

  // ---- pass 0: D_i, dO_r = dO·v_lora_bᵀ, Qr = scale·q·k_lora_bᵀ per (b, h, query block) -----------
  std::vector<float> Di(static_cast<size_t>(B * Hq * Sq));
  // D_i = dO·out from the forward's stored (rounded) out, as FlashAttention and torch do: the
  // reference takes the same out, so rounding out to float16 / bfloat16 is part of the definition.
  std::vector<float> dOr(rv > 0 ? static_cast<size_t>(B * Hq * Sq * rvp) : 0);
  std::vector<float> Qr(rk > 0 ? static_cast<size_t>(B * Hq * Sq * rkp) : 0);
  parallel_for(B * Hq * nqb, [&](int64_t task, int) {
    const int64_t qb = task % nqb, bh = task / nqb, b = bh / Hq, h = bh % Hq, g = h / G;
    const int64_t i0 = qb * kBwdRows, i1 = std::min(Sq, i0 + kBwdRows), nq = i1 - i0;
    std::vector<float> a(static_cast<size_t>(kBwdRows * D)), o(static_cast<size_t>(D)),
        fac(static_cast<size_t>(D * std::max(rkp, rvp)));
    for (int64_t ii = 0; ii < nq; ++ii) {
      widen_row<T>(bp.grad_out.data, off4(bp.grad_out, b, i0 + ii, h), D, a.data() + ii * D);
      widen_row<T>(p.out.data, off4(p.out, b, i0 + ii, h), D, o.data());
      Di[static_cast<size_t>(bh * Sq + i0 + ii)] = dot(a.data() + ii * D, o.data(), D);
    }
    const int64_t id = ids[static_cast<size_t>(b)];
    if (vpath_of(b)) {
      load_factor_transposed<T>(p.v_lora_b, Hk, id, g, rv, rvp, D, fac.data());
      gemm(nq, rvp, D, a.data(), D, 1, fac.data(), rvp, dOr.data() + (bh * Sq + i0) * rvp, rvp, false);
    }
    if (kpath_of(b)) {
      for (int64_t ii = 0; ii < nq; ++ii) {
        widen_row<T>(p.q.data, off4(p.q, b, i0 + ii, h), D, a.data() + ii * D);
        scale_row(a.data() + ii * D, D, scale);
      }
      load_factor_transposed<T>(p.k_lora_b, Hk, id, g, rk, rkp, D, fac.data());
      gemm(nq, rkp, D, a.data(), D, 1, fac.data(), rkp, Qr.data() + (bh * Sq + i0) * rkp, rkp, false);
    }
  });

  // ---- pass 1: (b, g, chunk of key blocks) -------------------------------------------------------
  // Enough tasks for the threads: with few (b, g), chunks of key blocks balanced by causal work.
  const int64_t C = B == 0 || B * Hk >= 2 * threads ? 1 : std::max<int64_t>(1, std::min(nkb, ceil_div(4 * threads, B * Hk)));
  std::vector<int64_t> chunk_begin(static_cast<size_t>(C + 1), nkb);
  {
    std::vector<double> work(static_cast<size_t>(nkb));
    double total = 0;
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const int64_t first = p.causal ? std::clamp<int64_t>(kb * kKeyTile - off, 0, Sq) : 0;
      work[static_cast<size_t>(kb)] = static_cast<double>(Sq - first) + 1.0;
      total += work[static_cast<size_t>(kb)];
    }
    chunk_begin[0] = 0;
    double cum = 0;
    int64_t c = 1;
    for (int64_t kb = 0; kb < nkb && c < C; ++kb) {
      cum += work[static_cast<size_t>(kb)];
      while (c < C && cum >= total * static_cast<double>(c) / static_cast<double>(C)) chunk_begin[static_cast<size_t>(c++)] = kb + 1;
    }
    for (; c <= C; ++c) chunk_begin[static_cast<size_t>(c)] = nkb;
  }
  const int64_t ntasks = B * Hk * C;
  const int64_t dq_floats = G * Sq * ldq;
  const int64_t nslots = C == 1 ? threads : ntasks;
  std::vector<std::vector<float>> dq_slots(static_cast<size_t>(nslots));
  std::vector<float> GV(rv > 0 ? static_cast<size_t>(B * Hk * Sk * rvp) : 0);
  std::vector<float> GK(rk > 0 ? static_cast<size_t>(B * Hk * Sk * rkp) : 0);
  std::vector<float> gvB(rv > 0 ? static_cast<size_t>(ntasks * rv * D) : 0);
  std::vector<float> gkB(rk > 0 ? static_cast<size_t>(ntasks * rk * D) : 0);

  const int64_t rpmax = std::max(rkp, rvp);
  const int64_t s_Kx = ldq * kKeyTile, s_Kf = kKeyTile * ldq, s_Vx = ldo * kKeyTile, s_dKV = kKeyTile * D,
                s_Qx = kBwdRows * ldq, s_dO = kBwdRows * ldo, s_S = kBwdRows * kKeyTile, s_fac = D * rpmax;
  const int64_t scratch_floats = s_Kx + s_Kf + s_Vx + 2 * s_dKV + s_Qx + s_dO + 2 * s_S + 2 * kBwdRows + 3 * s_fac + 64;
  std::vector<std::vector<float>> scratch(static_cast<size_t>(threads));

  // dQ rows [row0, row0 + rows) of the [G·Sq, ldq] rows of (b, g), at dq → grad_q:
  // dQ += dQ_r·k_lora_b, times scale, rounded.
  auto finish_dq = [&](float* dq, int64_t b, int64_t g, int64_t row0, int64_t rows, const float* kBf) {
    if (kpath_of(b)) gemm(rows, D, rk, dq + D, ldq, 1, kBf, D, dq, ldq, true);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t hh = (row0 + r) / Sq, i = (row0 + r) % Sq;
      store_row<T>(bp.grad_q.data, off4(bp.grad_q, b, i, g * G + hh), dq + r * ldq, D, scale);
    }
  };

  parallel_for(ntasks, [&](int64_t task, int thread) {
    const int64_t c = task % C, bg = task / C, b = bg / Hk, g = bg % Hk;
    const int64_t id = ids[static_cast<size_t>(b)];
    const bool kpath = kpath_of(b), vpath = vpath_of(b);
    const int64_t rke = kpath ? rk : 0, rve = vpath ? rv : 0;
    auto& buf = scratch[static_cast<size_t>(thread)];
    if (buf.empty()) buf.resize(static_cast<size_t>(scratch_floats));
    float* Kx = buf.data();      // [D + rk, 64]  Kᵀ ; k_lrᵀ
    float* Kf = Kx + s_Kx;       // [64, ldq]     K | k_lr
    float* Vx = Kf + s_Kf;       // [D + rv, 64]  Vᵀ ; v_lrᵀ
    float* dK = Vx + s_Vx;       // [64, D]
    float* dV = dK + s_dKV;      // [64, D]
    float* Qx = dV + s_dKV;      // [64, ldq]     scale·q | Qr
    float* dOx = Qx + s_Qx;      // [64, ldo]     dO | dO_r
    float* S = dOx + s_dO;       // [64, 64]      S → P
    float* dP = S + s_S;         // [64, 64]      dP → dS
    float* lse = dP + s_S;       // [64]
    float* dd = lse + kBwdRows;  // [64]
    float* kBT = dd + kBwdRows;  // [D, rk_pad]
    float* vBT = kBT + s_fac;    // [D, rv_pad]
    float* kBf = vBT + s_fac;    // [rk, D]
    auto& slot = dq_slots[static_cast<size_t>(C == 1 ? thread : task)];
    if (slot.empty()) slot.resize(static_cast<size_t>(dq_floats));
    float* dq = slot.data();
    zero(dq, dq_floats);
    float* gvb = vpath ? gvB.data() + task * rv * D : nullptr;
    float* gkb = kpath ? gkB.data() + task * rk * D : nullptr;
    if (rv > 0) zero(gvB.data() + task * rv * D, rv * D);
    if (rk > 0) zero(gkB.data() + task * rk * D, rk * D);
    if (vpath) load_factor_transposed<T>(p.v_lora_b, Hk, id, g, rv, rvp, D, vBT);
    if (kpath) {
      load_factor_transposed<T>(p.k_lora_b, Hk, id, g, rk, rkp, D, kBT);
      load_factor<T>(p.k_lora_b, Hk, id, g, rk, D, kBf);
    }
    const int64_t ncq = D + (kpath ? rkp : 0);  // columns of [dQ | dQ_r]

    for (int64_t kb = chunk_begin[static_cast<size_t>(c)]; kb < chunk_begin[static_cast<size_t>(c + 1)]; ++kb) {
      const int64_t j0 = kb * kKeyTile, j1 = std::min(Sk, j0 + kKeyTile), nk = j1 - j0;
      load_transposed<T>(p.k_base.data, off4(p.k_base, b, j0, g), p.k_base.seq_stride, nk, kKeyTile, D, Kx, kKeyTile);
      load_transposed<T>(p.v_base.data, off4(p.v_base, b, j0, g), p.v_base.seq_stride, nk, kKeyTile, D, Vx, kKeyTile);
      if (kpath) load_lowrank_transposed<T>(p.k_low_rank, b, j0, nk, kKeyTile, rk, Kx + D * kKeyTile, kKeyTile);
      if (vpath) load_lowrank_transposed<T>(p.v_low_rank, b, j0, nk, kKeyTile, rv, Vx + D * kKeyTile, kKeyTile);
      for (int64_t n = 0; n < nk; ++n) {
        widen_row<T>(p.k_base.data, off4(p.k_base, b, j0 + n, g), D, Kf + n * ldq);
        if (kpath) widen_pad<T>(p.k_low_rank.data, b * p.k_low_rank.batch_stride + (j0 + n) * p.k_low_rank.seq_stride, rk,
                                rkp, Kf + n * ldq + D);
      }
      zero(dK, s_dKV);
      zero(dV, s_dKV);
      const int64_t i_first = p.causal ? std::max<int64_t>(0, j0 - off) : 0;
      for (int64_t hh = 0; hh < G && i_first < Sq; ++hh) {
        const int64_t h = g * G + hh, bh = b * Hq + h;
        for (int64_t i0 = i_first / kBwdRows * kBwdRows; i0 < Sq; i0 += kBwdRows) {
          const int64_t i1 = std::min(Sq, i0 + kBwdRows), nq = i1 - i0;
          for (int64_t ii = 0; ii < nq; ++ii) {
            float* qrow = Qx + ii * ldq;
            widen_row<T>(p.q.data, off4(p.q, b, i0 + ii, h), D, qrow);
            scale_row(qrow, D, scale);
            if (kpath) std::copy_n(Qr.data() + (bh * Sq + i0 + ii) * rkp, rk, qrow + D);
            float* orow = dOx + ii * ldo;
            widen_row<T>(bp.grad_out.data, off4(bp.grad_out, b, i0 + ii, h), D, orow);
            if (vpath) std::copy_n(dOr.data() + (bh * Sq + i0 + ii) * rvp, rv, orow + D);
            const float lv = p.lse[bh * Sq + i0 + ii];
            lse[ii] = (lv == -kInf ? kInf : lv) * kLog2e;
            dd[ii] = Di[static_cast<size_t>(bh * Sq + i0 + ii)];
          }
          // S = [Qs | Qr]·[K ; k_lr]ᵀ and dP = [dO | dO_r]·[V ; v_lr]ᵀ: nq·64·(2D + rk + rv) FMAs.
          gemm(nq, kKeyTile, D + rke, Qx, ldq, 1, Kx, kKeyTile, S, kKeyTile, false);
          gemm(nq, kKeyTile, D + rve, dOx, ldo, 1, Vx, kKeyTile, dP, kKeyTile, false);
          const bool masked = nk < kKeyTile || (p.causal && j1 - 1 > i0 + off);
          for (int64_t ii = 0; ii < nq; ++ii) {
            float* s = S + ii * kKeyTile;
            float* ds = dP + ii * kKeyTile;
            const Vec lv = vset1(lse[ii]), dv = vset1(dd[ii]), l2e = vset1(kLog2e);
            for (int64_t n = 0; n < kKeyTile; n += kLanes) {
              const Vec pv = vexp2(vsub(vmul(vload(s + n), l2e), lv));
              vstore(s + n, pv);
              vstore(ds + n, vmul(pv, vsub(vload(ds + n), dv)));
            }
            if (masked) {
              int64_t lim = nk;
              if (p.causal) lim = std::max<int64_t>(0, std::min(lim, i0 + ii + off - j0 + 1));
              for (int64_t n = lim; n < kKeyTile; ++n) s[n] = ds[n] = 0.0f;
            }
          }
          // dV += Pᵀ·dO, dK += dSᵀ·Qs, [dQ | dQ_r] += dS·[K | k_lr]: 64·nq·(3D + rk) FMAs.
          gemm(nk, D, nq, S, 1, kKeyTile, dOx, ldo, dV, D, true);
          gemm(nk, D, nq, dP, 1, kKeyTile, Qx, ldq, dK, D, true);
          gemm(nq, ncq, nk, dP, kKeyTile, 1, Kf, ldq, dq + (hh * Sq + i0) * ldq, ldq, true);
        }
      }
      for (int64_t n = 0; n < nk; ++n) {
        store_row<T>(bp.grad_k_base.data, off4(bp.grad_k_base, b, j0 + n, g), dK + n * D, D, 1.0f);
        store_row<T>(bp.grad_v_base.data, off4(bp.grad_v_base, b, j0 + n, g), dV + n * D, D, 1.0f);
      }
      if (vpath) {  // dV·v_lora_bᵀ (summed over g in pass 3) and v_lrᵀ·dV (summed over b, chunks)
        gemm(nk, rvp, D, dV, D, 1, vBT, rvp, GV.data() + (bg * Sk + j0) * rvp, rvp, false);
        gemm(rv, D, nk, Vx + D * kKeyTile, kKeyTile, 1, dV, D, gvb, D, true);
      }
      if (kpath) {
        gemm(nk, rkp, D, dK, D, 1, kBT, rkp, GK.data() + (bg * Sk + j0) * rkp, rkp, false);
        gemm(rk, D, nk, Kx + D * kKeyTile, kKeyTile, 1, dK, D, gkb, D, true);
      }
    }
    if (C == 1) {
      for (int64_t r0 = 0; r0 < G * Sq; r0 += kBwdRows) finish_dq(dq + r0 * ldq, b, g, r0, std::min(kBwdRows, G * Sq - r0), kBf);
    }
  });

  // ---- pass 2: dQ partials of the chunks, summed in chunk order ---------------------------------
  if (C > 1) {
    const int64_t nrb = ceil_div(G * Sq, kBwdRows);
    parallel_for(B * Hk * nrb, [&](int64_t task, int) {
      const int64_t rb = task % nrb, bg = task / nrb, b = bg / Hk, g = bg % Hk;
      const int64_t r0 = rb * kBwdRows, rows = std::min(kBwdRows, G * Sq - r0);
      std::vector<float> sum(static_cast<size_t>(kBwdRows * ldq)), kBf;
      for (int64_t c = 0; c < C; ++c) {
        const float* src = dq_slots[static_cast<size_t>(bg * C + c)].data() + r0 * ldq;
        for (int64_t k = 0; k < rows * ldq; ++k) sum[static_cast<size_t>(k)] += src[k];
      }
      if (kpath_of(b)) {
        kBf.resize(static_cast<size_t>(rk * D));
        load_factor<T>(p.k_lora_b, Hk, ids[static_cast<size_t>(b)], g, rk, D, kBf.data());
      }
      finish_dq(sum.data(), b, g, r0, rows, kBf.data());
    });
  }

  // ---- pass 3: the low-rank gradients ------------------------------------------------------------
  // grad_{v,k}_low_rank[b, j] = Σ_g (dV_g·B_gᵀ)[j] (zero for a sequence without adapter), and
  // grad_{v,k}_lora_b[ℓ, g] = Σ_{b: id = ℓ} Σ_chunks (low_rankᵀ·dV_g) (zero for an unused adapter).
  struct LowRankPath {
    int64_t r, rp;
    const std::vector<float>* rows;
    const std::vector<float>* factor;
    const AttnOutTensor* grad_rows;
    void* grad_factor;
  };
  const LowRankPath paths[2] = {{rv, rvp, &GV, &gvB, &bp.grad_v_low_rank, bp.grad_v_lora_b},
                                {rk, rkp, &GK, &gkB, &bp.grad_k_low_rank, bp.grad_k_lora_b}};
  for (const LowRankPath& lp : paths) {
    if (lp.r == 0) continue;
    const int64_t r = lp.r, rp = lp.rp;
    if (lp.grad_rows->data) {
      parallel_for(B * nkb, [&](int64_t task, int) {
        const int64_t b = task / nkb, j0 = (task % nkb) * kKeyTile, j1 = std::min(Sk, j0 + kKeyTile);
        const bool active = ids[static_cast<size_t>(b)] >= 0;
        std::vector<float> sum(static_cast<size_t>(rp));
        for (int64_t j = j0; j < j1; ++j) {
          std::fill(sum.begin(), sum.end(), 0.0f);
          if (active)
            for (int64_t g = 0; g < Hk; ++g) {
              const float* src = lp.rows->data() + ((b * Hk + g) * Sk + j) * rp;
              for (int64_t t = 0; t < r; ++t) sum[static_cast<size_t>(t)] += src[t];
            }
          store_row<T>(lp.grad_rows->data, b * lp.grad_rows->batch_stride + j * lp.grad_rows->seq_stride, sum.data(), r, 1.0f);
        }
      });
    }
    if (lp.grad_factor) {
      parallel_for(L * Hk, [&](int64_t task, int) {
        const int64_t ell = task / Hk, g = task % Hk;
        std::vector<float> sum(static_cast<size_t>(r * D), 0.0f);
        for (int64_t b = 0; b < B; ++b) {
          if (ids[static_cast<size_t>(b)] != ell) continue;
          for (int64_t c = 0; c < C; ++c) {
            const float* src = lp.factor->data() + ((b * Hk + g) * C + c) * r * D;
            for (int64_t k = 0; k < r * D; ++k) sum[static_cast<size_t>(k)] += src[k];
          }
        }
        store_row<T>(lp.grad_factor, (ell * Hk + g) * r * D, sum.data(), r * D, 1.0f);
      });
    }
  }
}

}  // namespace

void flash_lora_forward(const FlashLoraParams& p) {
  with_float_dtype(p.dtype, [&](auto tag) { forward<decltype(tag)::value>(p); });
}

void flash_lora_backward(const FlashLoraBackwardParams& p) {
  with_float_dtype(p.fwd.dtype, [&](auto tag) { backward<decltype(tag)::value>(p); });
}

}  // namespace lk::cpu::LK_SIMD_NS
