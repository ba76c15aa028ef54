// Fused LoRA linear forward on CUDA: y = x·Wᵀ + bias + scale·((x ⊙ mask)·Aᵀ)·Bᵀ.
//
//   x [m, k], W [n, k], A [r, k], B [n, r], y [m, n], bias [n]; explicit row strides (elements);
//   every operand in p.dtype (float32, or float16 / bfloat16 as raw 16-bit); float32 accumulation.
//
// Layout of this file (ggml-cuda style): kernels → launchers → op entry.
//
// 1. lora_down_kernel: T = scale·(x ⊙ mask)·Aᵀ, [m, r] in float32, in a scratch buffer.
//    16 rows × 16 ranks per 256-thread block, k staged through shared memory in slices of 32.
//    This is 2·m·k·r FLOPs, 0.4% of the base GEMM for r = 16, k = n. When m·r gives too few blocks
//    to fill the GPU (decode), k is split over grid.z into partial sums [splits][m, r] that the
//    epilogue adds in a fixed order (deterministic, no atomics).
// 2. The main GEMM computes one C tile of x·Wᵀ in registers / tensor-core accumulators, then its
//    epilogue adds T·Bᵀ (float32 FMA, r in slices of 16 through shared memory) and the bias to the
//    same tile and stores y once. x·Wᵀ is never written out and re-read.
//    With per-row adapters (lora_forward_per_row, for lora.forwardMulti) the caller supplies T and
//    each row adds T·B[id]ᵀ with its own adapter's B instead (per_row_low_rank).
//    * lora_sgemm_kernel: exact float32 FMA, register-blocked shared-memory SGEMM.
//      BM×BN = 64×64 (256 threads, 4×4 per thread) or 128×128 (256 threads, 8×8), BK = 16.
//      Also the fallback for bfloat16 on GPUs without bf16 tensor cores (sm_75): elements are
//      converted to float32 as they are staged.
//    * lora_wmma_kernel: tensor cores through nvcuda::wmma with float accumulators: float16 and
//      bfloat16 (16×16×16) and, only when p.allow_tf32, float32 as TF32 (16×16×8, sm_80+).
//      BM×BN = 64×64 (4 warps) or 128×64 (8 warps); each warp owns 32×32 (2×2 fragments);
//      BK = 32; accumulators are staged through shared memory for the epilogue.
//    Both use 16-byte vector loads when rows are 16-byte aligned, scalar loads with zero fill at
//    the m / n / k edges otherwise, so any size works.
//
// Thread mapping shared by both epilogues: 16 threads along n (coalesced stores), NT/16 along m;
// thread (ty, tx) owns rows ty + i·NT/16 and columns tx + j·16 of the tile.
#include <algorithm>
#include <climits>
#include <memory>
#include <string>
#include <type_traits>

#include "common.cuh"
#include "gemv.cuh"
#include "lora_linear.cuh"

namespace lk::cuda_ops {
namespace {

// ---- kernel parameters (plain structs, passed by value) --------------------------------------
struct DownArgs {
  const void* x;
  long long x_stride;
  const void* mask;  // like x, or null
  long long mask_stride;
  const void* a;     // [r, k]
  long long a_stride;
  float* t;          // [splits][m, r] contiguous partial sums
  long long m;
  int k, r;
  int k_per_split;   // split-K: blockIdx.z covers k in [z·k_per_split, (z+1)·k_per_split)
  float scale;
};

struct GemmArgs {
  const void* x;
  long long x_stride;
  const void* w;
  long long w_stride;
  const void* bias;  // [n] or null
  const float* column_scale;  // [n] float32 multipliers applied before the bias, or null
  const void* b;     // [n, r] (when r > 0)
  long long b_stride;
  // Per-row adapters (lora.forwardMulti), or null: row i adds T[i]·B[id]ᵀ with B[id] at
  // b + id·b_adapter_stride, over its first adapter_rank[id] ranks (null: r); id -1: nothing.
  const int* row_adapter;
  const int* adapter_rank;
  long long b_adapter_stride;
  const float* t;    // [t_splits][m, r]: Σ over splits = scale·(x ⊙ mask)·Aᵀ (when r > 0)
  int t_splits;
  void* y;
  long long y_stride;
  long long m;
  int k, n, r;
  bool vec;          // x and w rows are 16-byte aligned: 16-byte loads allowed
};

constexpr int kRankSlice = 16;  // r handled per epilogue step

template <class E>
__device__ __forceinline__ float load_f(const void* base, long long i) {
  return E::to_float(static_cast<const typename E::storage*>(base)[i]);
}

#if defined(SIMT_DEVICE_PATH)
// ---- tile loaders ------------------------------------------------------------------------------
// Rows [row0, row0 + ROWS) × columns [k0, k0 + BK) of a row-major matrix with `rows` rows and `k`
// columns, zero outside. Raw copy into smem rows of length LD (same element type).
template <int ROWS, int BK, int LD, int NT, class S>
__device__ __forceinline__ void load_tile_raw(const S* g, long long stride, long long row0, long long rows, int k0, int k,
                                              bool vec, S* s) {
  constexpr int VEC = 16 / sizeof(S);
  constexpr int CHUNKS = BK / VEC;
  static_assert(BK % VEC == 0, "tile width");
  for (int e = threadIdx.x; e < ROWS * CHUNKS; e += NT) {
    const int r = e / CHUNKS, c = (e % CHUNKS) * VEC;
    const long long gr = row0 + r;
    const int gk = k0 + c;
    S* dst = s + r * LD + c;
    if (gr < rows && vec && gk + VEC <= k) {
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(g + gr * stride + gk);
    } else {
#pragma unroll
      for (int v = 0; v < VEC; ++v) dst[v] = (gr < rows && gk + v < k) ? g[gr * stride + gk + v] : S(0);
    }
  }
}

// Same tile, converted to float and stored transposed: s[c * LD + r].
template <int ROWS, int BK, int LD, int NT, class E>
__device__ __forceinline__ void load_tile_t(const typename E::storage* g, long long stride, long long row0, long long rows,
                                            int k0, int k, bool vec, float* s) {
  using S = typename E::storage;
  constexpr int VEC = 16 / sizeof(S);
  constexpr int CHUNKS = BK / VEC;
  static_assert(BK % VEC == 0, "tile width");
  for (int e = threadIdx.x; e < ROWS * CHUNKS; e += NT) {
    const int r = e / CHUNKS, c = (e % CHUNKS) * VEC;
    const long long gr = row0 + r;
    const int gk = k0 + c;
    if (gr < rows && vec && gk + VEC <= k) {
      const uint4 u = *reinterpret_cast<const uint4*>(g + gr * stride + gk);
      const S* v = reinterpret_cast<const S*>(&u);
#pragma unroll
      for (int i = 0; i < VEC; ++i) s[(c + i) * LD + r] = E::to_float(v[i]);
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i) s[(c + i) * LD + r] = (gr < rows && gk + i < k) ? E::to_float(g[gr * stride + gk + i]) : 0.f;
    }
  }
}

// ---- the shared epilogue: + T·Bᵀ (float32), ⊙ column_scale, + bias, one store -------------------
template <int BM, int BN, int NT>
struct EpilogueShape {
  static constexpr int TY = NT / 16, TM = BM / TY, TN = BN / 16, LDR = kRankSlice + 1;
  static constexpr size_t smem_bytes = static_cast<size_t>(BM + BN) * LDR * sizeof(float);
  static_assert(BM % TY == 0 && BN % 16 == 0, "epilogue mapping");
};

// Per-row adapters: c[i][j] += Σ_rr T[row][r0 + rr]·B[id][col][r0 + rr] over the row's own rank.
// B differs per row, so each thread reads its rows' values (contiguous over the rank, L1-cached);
// the padding past a row's rank is never read.
template <class E, int TY, int TM, int TN, int LDR>
__device__ __forceinline__ void per_row_low_rank(const GemmArgs& p, float (&c)[TM][TN], const float* Ts, long long m0, int n0,
                                                 int r0) {
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < TM; ++i) {
    const long long gm = m0 + ty + i * TY;
    const int id = gm < p.m ? p.row_adapter[gm] : -1;
    if (id < 0) continue;
    const int rank = p.adapter_rank ? p.adapter_rank[id] : p.r;
    const int slice = rank - r0 < kRankSlice ? rank - r0 : kRankSlice;
    const long long b0 = id * p.b_adapter_stride + r0;
#pragma unroll
    for (int j = 0; j < TN; ++j) {
      const int gn = n0 + tx + j * 16;
      if (gn >= p.n) continue;
      for (int rr = 0; rr < slice; ++rr)
        c[i][j] = fmaf(Ts[(ty + i * TY) * LDR + rr], load_f<E>(p.b, b0 + gn * p.b_stride + rr), c[i][j]);
    }
  }
}

template <class E, int BM, int BN, int NT>
__device__ __forceinline__ void lora_epilogue(const GemmArgs& p, float (&c)[EpilogueShape<BM, BN, NT>::TM][EpilogueShape<BM, BN, NT>::TN],
                                              unsigned char* smem, long long m0, int n0) {
  using Sh = EpilogueShape<BM, BN, NT>;
  constexpr int TY = Sh::TY, TM = Sh::TM, TN = Sh::TN, LDR = Sh::LDR;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float* Ts = reinterpret_cast<float*>(smem);  // [BM][LDR]
  float* Bt = Ts + BM * LDR;                   // [BN][LDR]
  for (int r0 = 0; r0 < p.r; r0 += kRankSlice) {
    for (int e = threadIdx.x; e < BM * kRankSlice; e += NT) {
      const int row = e / kRankSlice, rr = e % kRankSlice;
      const long long gm = m0 + row;
      float v = 0.f;
      if (gm < p.m && r0 + rr < p.r) {
        const float* src = p.t + gm * p.r + r0 + rr;
        const long long split_stride = p.m * p.r;
        for (int s = 0; s < p.t_splits; ++s) v += src[s * split_stride];  // fixed order: deterministic
      }
      Ts[row * LDR + rr] = v;
    }
    // One B for every row: staged in Bt. Per-row adapters (lora.forwardMulti) skip Bt and the
    // shared-B loop and add each row's own term instead (per_row_low_rank).
    const bool shared_b = !p.row_adapter;
    for (int e = threadIdx.x; e < (shared_b ? BN * kRankSlice : 0); e += NT) {
      const int col = e / kRankSlice, rr = e % kRankSlice;
      const int gn = n0 + col;
      Bt[col * LDR + rr] = (gn < p.n && r0 + rr < p.r) ? load_f<E>(p.b, gn * p.b_stride + r0 + rr) : 0.f;
    }
    __syncthreads();
    if (!shared_b) per_row_low_rank<E, TY, TM, TN, LDR>(p, c, Ts, m0, n0, r0);
#pragma unroll 4
    for (int rr = 0; rr < (shared_b ? kRankSlice : 0); ++rr) {
      float tv[TM], bv[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) tv[i] = Ts[(ty + i * TY) * LDR + rr];
#pragma unroll
      for (int j = 0; j < TN; ++j) bv[j] = Bt[(tx + j * 16) * LDR + rr];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) c[i][j] = fmaf(tv[i], bv[j], c[i][j]);
    }
    __syncthreads();
  }
  using S = typename E::storage;
  S* y = static_cast<S*>(p.y);
#pragma unroll
  for (int j = 0; j < TN; ++j) {
    const int gn = n0 + tx + j * 16;
    if (gn >= p.n) continue;
    const float bias = p.bias ? load_f<E>(p.bias, gn) : 0.f;
    const float column_scale = p.column_scale ? p.column_scale[gn] : 1.f;  // ·1 + bias: exactly c + bias
#pragma unroll
    for (int i = 0; i < TM; ++i) {
      const long long gm = m0 + ty + i * TY;
      if (gm < p.m) y[gm * p.y_stride + gn] = E::from_float(fmaf(c[i][j], column_scale, bias));
    }
  }
}

// ---- tensor-core element traits ------------------------------------------------------------------
// frag: the WMMA element type; WK: fragment depth; PAD: smem row padding (16 bytes) so that rows
// of the staged tile start in different banks while keeping ldm a multiple of 16 bytes.
template <class E> struct TcTraits;
template <> struct TcTraits<F16> {
  using frag = __half;
  static constexpr int WK = 16, PAD = 8;
};
#if SIMT_CUDA_ARCH >= 800 || SIMT_CUDA_ARCH == 0
template <> struct TcTraits<BF16> {
  using frag = __nv_bfloat16;
  static constexpr int WK = 16, PAD = 8;
};
template <> struct TcTraits<F32> {
  using frag = nvcuda::wmma::precision::tf32;
  static constexpr int WK = 8, PAD = 4;
};
#endif
// Round a float32 fragment element to TF32 (required before a tf32 mma; sm_80+ only).
template <class T>
__device__ __forceinline__ T round_tf32(T v) {
#if SIMT_CUDA_ARCH >= 800
  return nvcuda::wmma::__float_to_tf32(v);
#else
  return v;
#endif
}
template <class E> constexpr int tc_min_arch() {
  return std::is_same_v<E, F16> ? 700 : 800;
}

template <class E, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void wmma_gemm_body(const GemmArgs& p) {
  using namespace nvcuda;
  using TT = TcTraits<E>;
  using S = typename E::storage;
  using FragT = typename TT::frag;
  using SmemT = std::conditional_t<std::is_same_v<S, float>, float, FragT>;
  constexpr int NT = WM * WN * 32, BK = 32, WK = TT::WK, LDA = BK + TT::PAD;
  constexpr int FM = BM / (16 * WM), FN = BN / (16 * WN), LDC = BN + 4;
  static_assert(FM * 16 * WM == BM && FN * 16 * WN == BN, "warp tiling");
  using Sh = EpilogueShape<BM, BN, NT>;
  constexpr size_t kAB = static_cast<size_t>(BM + BN) * LDA * sizeof(S);
  constexpr size_t kC = static_cast<size_t>(BM) * LDC * sizeof(float);
  constexpr size_t kBytes = kAB > kC ? (kAB > Sh::smem_bytes ? kAB : Sh::smem_bytes) : (kC > Sh::smem_bytes ? kC : Sh::smem_bytes);
  __shared__ __align__(128) unsigned char smem[kBytes];
  S* As = reinterpret_cast<S*>(smem);  // [BM][LDA]
  S* Bs = As + BM * LDA;               // [BN][LDA]: W rows = columns of Wᵀ → matrix_b col_major
  float* Cs = reinterpret_cast<float*>(smem);

  const int warp = threadIdx.x / 32, wm = warp / WN, wn = warp % WN;
  const long long m0 = static_cast<long long>(blockIdx.x) * BM;
  const int n0 = blockIdx.y * BN;
  wmma::fragment<wmma::accumulator, 16, 16, WK, float> acc[FM][FN];
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int k0 = 0; k0 < p.k; k0 += BK) {
    load_tile_raw<BM, BK, LDA, NT>(static_cast<const S*>(p.x), p.x_stride, m0, p.m, k0, p.k, p.vec, As);
    load_tile_raw<BN, BK, LDA, NT>(static_cast<const S*>(p.w), p.w_stride, n0, p.n, k0, p.k, p.vec, Bs);
    __syncthreads();
#pragma unroll
    for (int ks = 0; ks < BK; ks += WK) {
      wmma::fragment<wmma::matrix_a, 16, 16, WK, FragT, wmma::row_major> fa[FM];
      wmma::fragment<wmma::matrix_b, 16, 16, WK, FragT, wmma::col_major> fb[FN];
#pragma unroll
      for (int i = 0; i < FM; ++i) {
        wmma::load_matrix_sync(fa[i], reinterpret_cast<const SmemT*>(As + (wm * FM * 16 + i * 16) * LDA + ks), LDA);
        if constexpr (std::is_same_v<S, float>)
          for (int t = 0; t < fa[i].num_elements; ++t) fa[i].x[t] = round_tf32(fa[i].x[t]);
      }
#pragma unroll
      for (int j = 0; j < FN; ++j) {
        wmma::load_matrix_sync(fb[j], reinterpret_cast<const SmemT*>(Bs + (wn * FN * 16 + j * 16) * LDA + ks), LDA);
        if constexpr (std::is_same_v<S, float>)
          for (int t = 0; t < fb[j].num_elements; ++t) fb[j].x[t] = round_tf32(fb[j].x[t]);
      }
#pragma unroll
      for (int i = 0; i < FM; ++i)
#pragma unroll
        for (int j = 0; j < FN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
  // Stage the accumulators (their lane layout is opaque) and pick up this thread's elements.
#pragma unroll
  for (int i = 0; i < FM; ++i)
#pragma unroll
    for (int j = 0; j < FN; ++j)
      wmma::store_matrix_sync(Cs + (wm * FM * 16 + i * 16) * LDC + wn * FN * 16 + j * 16, acc[i][j], LDC, wmma::mem_row_major);
  __syncthreads();
  float c[Sh::TM][Sh::TN];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < Sh::TM; ++i)
#pragma unroll
    for (int j = 0; j < Sh::TN; ++j) c[i][j] = Cs[(ty + i * Sh::TY) * LDC + tx + j * 16];
  __syncthreads();
  lora_epilogue<E, BM, BN, NT>(p, c, smem, m0, n0);
}
#endif  // SIMT_DEVICE_PATH

// ---- kernels -------------------------------------------------------------------------------------
template <class E>
__global__ void __launch_bounds__(256) lora_down_kernel(DownArgs p) {
#if defined(SIMT_DEVICE_PATH)
  constexpr int TR = 16, BK = 32, LD = BK + 1;
  __shared__ float Xs[16 * LD];
  __shared__ float As[TR * LD];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // tx: rank, ty: row
  const long long m0 = static_cast<long long>(blockIdx.x) * 16;
  const int r0 = blockIdx.y * TR;
  const int k_begin = blockIdx.z * p.k_per_split;
  const long long k_stop = static_cast<long long>(k_begin) + p.k_per_split;
  const int k_end = k_stop < p.k ? static_cast<int>(k_stop) : p.k;
  float acc = 0.f;
  for (int k0 = k_begin; k0 < k_end; k0 += BK) {
    for (int e = threadIdx.x; e < 16 * BK; e += 256) {
      const int row = e / BK, kk = e % BK;
      const long long gm = m0 + row;
      const int gk = k0 + kk;
      float v = 0.f;
      if (gm < p.m && gk < k_end) {
        v = load_f<E>(p.x, gm * p.x_stride + gk);
        if (p.mask) v *= load_f<E>(p.mask, gm * p.mask_stride + gk);
      }
      Xs[row * LD + kk] = v;
      const int gr = r0 + row;
      As[row * LD + kk] = (gr < p.r && gk < k_end) ? load_f<E>(p.a, static_cast<long long>(gr) * p.a_stride + gk) : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < BK; ++kk) acc = fmaf(Xs[ty * LD + kk], As[tx * LD + kk], acc);
    __syncthreads();
  }
  const long long gm = m0 + ty;
  if (gm < p.m && r0 + tx < p.r) p.t[blockIdx.z * p.m * p.r + gm * p.r + r0 + tx] = p.scale * acc;
#endif
}

template <class E, int BM, int BN, int NT>
__global__ void __launch_bounds__(NT) lora_sgemm_kernel(GemmArgs p) {
#if defined(SIMT_DEVICE_PATH)
  using Sh = EpilogueShape<BM, BN, NT>;
  constexpr int BK = 16, LDA = BM + 4, LDB = BN + 4, TY = Sh::TY, TM = Sh::TM, TN = Sh::TN;
  constexpr size_t kAB = static_cast<size_t>(BK) * (LDA + LDB) * sizeof(float);
  __shared__ __align__(128) unsigned char smem[kAB > Sh::smem_bytes ? kAB : Sh::smem_bytes];
  float* As = reinterpret_cast<float*>(smem);  // [BK][LDA]: x tile, transposed
  float* Bs = As + BK * LDA;                   // [BK][LDB]: W tile, transposed
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const long long m0 = static_cast<long long>(blockIdx.x) * BM;
  const int n0 = blockIdx.y * BN;
  float c[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) c[i][j] = 0.f;
  using S = typename E::storage;
  for (int k0 = 0; k0 < p.k; k0 += BK) {
    load_tile_t<BM, BK, LDA, NT, E>(static_cast<const S*>(p.x), p.x_stride, m0, p.m, k0, p.k, p.vec, As);
    load_tile_t<BN, BK, LDB, NT, E>(static_cast<const S*>(p.w), p.w_stride, n0, p.n, k0, p.k, p.vec, Bs);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float av[TM], bv[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) av[i] = As[kk * LDA + ty + i * TY];
#pragma unroll
      for (int j = 0; j < TN; ++j) bv[j] = Bs[kk * LDB + tx + j * 16];
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) c[i][j] = fmaf(av[i], bv[j], c[i][j]);
    }
    __syncthreads();
  }
  lora_epilogue<E, BM, BN, NT>(p, c, smem, m0, n0);
#endif
}

template <class E, int BM, int BN, int WM, int WN>
__global__ void __launch_bounds__(WM * WN * 32) lora_wmma_kernel(GemmArgs p) {
#if defined(SIMT_DEVICE_PATH)
  if constexpr (tc_min_arch<E>() <= SIMT_CUDA_ARCH) {
    wmma_gemm_body<E, BM, BN, WM, WN>(p);
  } else {
    simt_trap();  // the launcher never picks this kernel for this architecture
  }
#endif
}

// ---- launchers -------------------------------------------------------------------------------------
template <class E>
void launch_down(const DownArgs& a, cudaStream_t st) {
  const dim3 grid(static_cast<unsigned>(ceil_div<long long>(a.m, 16)), static_cast<unsigned>(ceil_div(a.r, 16)),
                  static_cast<unsigned>(ceil_div(a.k, a.k_per_split)));
  simt_launch(lora_down_kernel<E>, grid, dim3(256), 0, st, a);
  LK_CUDA_CHECK_LAUNCH("lora_down_kernel launch");
}

template <class E, int BM, int BN, int NT>
void launch_sgemm(const GemmArgs& a, cudaStream_t st) {
  const dim3 grid(static_cast<unsigned>(ceil_div<long long>(a.m, BM)), static_cast<unsigned>(ceil_div(a.n, BN)));
  simt_launch(lora_sgemm_kernel<E, BM, BN, NT>, grid, dim3(NT), 0, st, a);
  LK_CUDA_CHECK_LAUNCH("lora_sgemm_kernel launch");
}

template <class E, int BM, int BN, int WM, int WN>
void launch_wmma(const GemmArgs& a, cudaStream_t st) {
  const dim3 grid(static_cast<unsigned>(ceil_div<long long>(a.m, BM)), static_cast<unsigned>(ceil_div(a.n, BN)));
  simt_launch(lora_wmma_kernel<E, BM, BN, WM, WN>, grid, dim3(WM * WN * 32), 0, st, a);
  LK_CUDA_CHECK_LAUNCH("lora_wmma_kernel launch");
}

enum class Path { Sgemm = 0, Wmma = 1 };
enum class Tile { Small = 0, Large = 1 };

constexpr int plan_key(DType d, Path p, Tile t) {
  return static_cast<int>(d) * 4 + static_cast<int>(p) * 2 + static_cast<int>(t);
}

// The one place where runtime values become template constants.
void launch_main(DType dtype, Path path, Tile tile, const GemmArgs& a, cudaStream_t st) {
  switch (plan_key(dtype, path, tile)) {
    case plan_key(DType::Float32, Path::Sgemm, Tile::Small): return launch_sgemm<F32, 64, 64, 256>(a, st);
    case plan_key(DType::Float32, Path::Sgemm, Tile::Large): return launch_sgemm<F32, 128, 128, 256>(a, st);
    case plan_key(DType::Float16, Path::Sgemm, Tile::Small): return launch_sgemm<F16, 64, 64, 256>(a, st);
    case plan_key(DType::Float16, Path::Sgemm, Tile::Large): return launch_sgemm<F16, 128, 128, 256>(a, st);
    case plan_key(DType::BFloat16, Path::Sgemm, Tile::Small): return launch_sgemm<BF16, 64, 64, 256>(a, st);
    case plan_key(DType::BFloat16, Path::Sgemm, Tile::Large): return launch_sgemm<BF16, 128, 128, 256>(a, st);
    case plan_key(DType::Float32, Path::Wmma, Tile::Small): return launch_wmma<F32, 64, 64, 2, 2>(a, st);
    case plan_key(DType::Float32, Path::Wmma, Tile::Large): return launch_wmma<F32, 128, 64, 4, 2>(a, st);
    case plan_key(DType::Float16, Path::Wmma, Tile::Small): return launch_wmma<F16, 64, 64, 2, 2>(a, st);
    case plan_key(DType::Float16, Path::Wmma, Tile::Large): return launch_wmma<F16, 128, 64, 4, 2>(a, st);
    case plan_key(DType::BFloat16, Path::Wmma, Tile::Small): return launch_wmma<BF16, 64, 64, 2, 2>(a, st);
    case plan_key(DType::BFloat16, Path::Wmma, Tile::Large): return launch_wmma<BF16, 128, 64, 4, 2>(a, st);
    default: break;
  }
  throw Error(ErrorCode::Unsupported, std::string("lora.forward (cuda): no kernel for dtype=") + dtype_name(dtype) +
                                          " path=" + (path == Path::Wmma ? "wmma" : "sgemm") +
                                          " tile=" + (tile == Tile::Large ? "large" : "small"));
}

void launch_down_for(DType dtype, const DownArgs& a, cudaStream_t st) {
  switch (dtype) {
    case DType::Float32: return launch_down<F32>(a, st);
    case DType::Float16: return launch_down<F16>(a, st);
    case DType::BFloat16: return launch_down<BF16>(a, st);
    default: break;
  }
  throw Error(ErrorCode::Unsupported, std::string("lora.forward (cuda): no low-rank kernel for dtype=") + dtype_name(dtype));
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

// Sizes the launch grid and the int-typed kernel arguments can cover.
void check_launch_sizes(const LoraForwardParams& p) {
  auto unsupported = [&](const std::string& why) {
    throw Error(ErrorCode::Unsupported, "lora.forward (cuda): " + why + " (m=" + std::to_string(p.m) + ", k=" +
                                            std::to_string(p.k) + ", n=" + std::to_string(p.n) + ", r=" + std::to_string(p.r) + ")");
  };
  constexpr long long kMaxInt = INT_MAX - 256;
  if (p.k > kMaxInt || p.n > kMaxInt || p.r > kMaxInt) unsupported("k, n and r must be below 2^31 - 256");
  if (ceil_div<long long>(p.n, 64) > 65535) unsupported("n must be at most 65535·64 (grid.y limit)");
  if (ceil_div<long long>(p.r, 16) > 65535) unsupported("r must be at most 65535·16 (grid.y limit)");
  if (ceil_div<long long>(p.m, 16) > INT_MAX) unsupported("m is too large for the launch grid");
}

// The main GEMM: x·Wᵀ + (Σ of the `splits` partials of T)·Bᵀ (per-row B when rows.ids) + bias,
// one store of y; synchronous.
void run_main(const LoraForwardParams& p, const float* t, int splits, const PerRowAdapters& rows, const DeviceProps& props,
              cudaStream_t st) {
  const int cc = props.cc;
  Path path = Path::Sgemm;
  switch (p.dtype) {
    case DType::Float32: path = p.allow_tf32 && cc >= 80 ? Path::Wmma : Path::Sgemm; break;
    case DType::Float16: path = cc >= 70 ? Path::Wmma : Path::Sgemm; break;
    case DType::BFloat16: path = cc >= 80 ? Path::Wmma : Path::Sgemm; break;  // sm_75: float32 path
    default: break;
  }
  // Large tiles once they still give every SM at least one block.
  const long long large_bm = 128, large_bn = path == Path::Wmma ? 64 : 128;
  const long long large_blocks = ceil_div<long long>(p.m, large_bm) * ceil_div<long long>(p.n, large_bn);
  const Tile tile = (p.m >= large_bm && large_blocks >= props.sm_count) ? Tile::Large : Tile::Small;

  const long long vec_elems = 16 / static_cast<long long>(dtype_size(p.dtype));
  GemmArgs g{};
  g.x = p.x;
  g.x_stride = p.x_stride;
  g.w = p.weight;
  g.w_stride = p.weight_stride;
  g.bias = p.bias;
  g.column_scale = p.column_scale;
  g.b = p.b;
  g.b_stride = p.b_stride;
  g.row_adapter = rows.ids;
  g.adapter_rank = rows.ranks;
  g.b_adapter_stride = rows.b_adapter_stride;
  g.t = t;
  g.t_splits = splits;
  g.y = p.y;
  g.y_stride = p.y_stride;
  g.m = p.m;
  g.k = static_cast<int>(p.k);
  g.n = static_cast<int>(p.n);
  g.r = static_cast<int>(p.r);
  g.vec = aligned16(p.x) && aligned16(p.weight) && p.x_stride % vec_elems == 0 && p.weight_stride % vec_elems == 0;
  launch_main(p.dtype, path, tile, g, st);
}

}  // namespace

void lora_forward(const LoraForwardParams& p, int device) {
  if (p.m == 0) return;
  const cudaStream_t st = begin_op(device, "lora.forward");
  if (p.m <= kGemvMaxRows) return lora_forward_decode(p, device, st);  // decode: cuda/gemv.cu
  const DeviceProps props = device_props(device);
  check_launch_sizes(p);

  // T = scale·(x ⊙ mask)·Aᵀ. With few row tiles (decode, small m) the k loop is split over
  // grid.z so that the GPU is filled; the epilogue sums the partials in a fixed order.
  float* t = nullptr;
  int splits = 1;
  std::unique_ptr<DeviceScratch> t_buffer;
  if (p.r > 0) {
    const long long tiles = ceil_div<long long>(p.m, 16) * ceil_div<long long>(p.r, 16);
    const long long want = ceil_div<long long>(2LL * props.sm_count, tiles);
    const long long most = std::max<long long>(1, std::min<long long>(64, p.k / 256));  // ≥ 256 k per split
    splits = static_cast<int>(std::max<long long>(1, std::min(want, most)));
    int k_per_split = static_cast<int>(ceil_div<long long>(ceil_div<long long>(p.k, splits), 32) * 32);
    splits = static_cast<int>(ceil_div<long long>(p.k, k_per_split));
    const size_t elems = static_cast<size_t>(splits) * static_cast<size_t>(p.m) * static_cast<size_t>(p.r);
    t_buffer = std::make_unique<DeviceScratch>(device, elems * sizeof(float));
    t = t_buffer->as<float>();
    DownArgs d{p.x, p.x_stride, p.dropout_mask, p.mask_stride, p.a, p.a_stride, t, p.m,
               static_cast<int>(p.k), static_cast<int>(p.r), k_per_split, p.scale};
    launch_down_for(p.dtype, d, st);
  }
  run_main(p, t, splits, PerRowAdapters{}, props, st);
}

void lora_forward_per_row(const LoraForwardParams& p, const float* t, const PerRowAdapters& rows, int device) {
  if (p.m == 0) return;
  const cudaStream_t st = begin_op(device, "lora.forwardMulti");
  const DeviceProps props = device_props(device);
  check_launch_sizes(p);
  run_main(p, t, 1, rows, props, st);
}

}  // namespace lk::cuda_ops
