// The decode path (M ≤ 16) as a bandwidth-bound GEMV family (declarations and the math:
// cuda/gemv.cuh). Layout (ggml-cuda style): kernels → launchers → entries.
//
// Napkin math, H200 (132 SMs, ~4.3 TB/s copy bandwidth, 67 TFLOP/s float32 FMA at 1.98 GHz),
// K = N = 4096, bfloat16:
// * W is 32 MiB: ~7.8 µs at bandwidth (float32: 64 MiB, ~15.6 µs). x (M·K·2 ≤ 128 KiB), T, B and
//   the bias are small and stay in L1 / L2. Everything else is overhead to hide.
// * Bytes in flight: 4.3 TB/s × ~700 ns of DRAM latency / 132 SMs ≈ 23 KB per SM must be loading
//   at all times. A warp owns 4 W rows (kRowsPerWarp) and keeps U 16-byte loads per row per lane
//   in flight, double-buffered (the next step's loads are issued before the current step's FMAs):
//   32 lanes × 4 rows × U × 16 B = 4 KiB (U = 2, M ≥ 4) or 8 KiB (U = 4, M ≤ 2) per warp. N = 4096
//   gives 1024 warps, ~7.8 per SM: 31 KB (U = 2) to 62 KB (U = 4) in flight per SM.
// * FMA throughput: every W element takes 2·M FLOPs. At M = 16 that is 2·16·4096² = 0.54 GFLOP,
//   8 µs at peak: for 16-bit W the FMA pipe, not DRAM, is the roofline. Every instruction takes an
//   issue slot, so the x conversions (one per x element per 4 W rows: 1/kRowsPerWarp = 25% of the
//   FMAs) and the W conversions (1/M) cost ~30% more: ~10-11 µs at M = 16 for bfloat16 / float16,
//   DRAM-bound (~8 µs) at M ≤ 8 and for float32 at every M (16 µs of DRAM vs 8 µs of FMAs).
//   Tensor cores (mma, M = 16 fills their m dimension) would remove that; not done here.
// * x traffic: per 16-byte W load a lane reads M 16-byte x chunks, shared by its 4 W rows: M/4 ×
//   the W bytes from L1 (4× at M = 16: ~17 TB/s of the ~33 TB/s the L1s deliver). x is read in its
//   own dtype (half the bytes of staging it as float32 in shared memory, and no barriers). That
//   only works if x stays in L1 (16·4096·2 = 128 KiB at M = 16, of ~250 KB): W and A, read once,
//   are loaded with ld.global.cg (L2 only) so that their stream does not evict it. Measured on an
//   H200 before that (W through L1, and a branch around every load for the element fallback):
//   M = 16 took 94 µs for bfloat16 K = N = 4096, every x chunk a serialized L2 round trip.
// * Reductions: a lane ends with M·4 partial sums; a reduce-scatter over the warp (each butterfly
//   step keeps half of the values: 32 + 16 + 8 + 4 + 2 = 62 shuffles for 64 values instead of
//   5·64) leaves each sum on one lane, which stores it. Fixed order: deterministic.
// * The low-rank term is extra k-steps: lane j adds T[i][j]·B[n][j] for its rank j to the same
//   partial sums before the warp reduction (T staged once per block in shared memory, 32 ranks at a
//   time), so y is stored once. B rows are read coalesced, once per distinct adapter in the block.
// * Split-K, shrink: T has only m·r_max ≤ 16·128 dot products of length K, too few to keep 132
//   SMs busy if each were one unit, so K is split over blocks into float32 partial slices
//   [splits][m][r_max]. The GEMV sums them in slice order as it stages T (deterministic, no
//   atomics, no third launch); their size is capped (kMaxShrinkPartials floats) because every GEMV
//   block reads all of them.
// * Split-K, GEMV: when N / 16 rows per block leaves SMs without a block (N < 16·132 = 2112), K is
//   split over blockIdx.y (to ~2 blocks per SM) into float32 partials [splits][m][n] and a second
//   kernel sums them in split order and applies the epilogue (column scale, bias, dtype). Partials
//   cost 2·4·M·splits·N bytes, ≤ 2·4·16/512/2 = 6% of W's bytes for 16-bit W (≥ 512 K per split).
//   A launch costs a few µs on its own: N = 4096 (256 blocks) is not split.
// So decode is two launches (shrink, GEMV; three when N is small): ~2-3 µs for the shrink plus
// ~8-11 µs of streaming for K = N = 4096.
//
// Loads are 16 bytes, branch-free, when every operand's base and row stride are 16-byte aligned
// and K is a multiple of the chunk (the kernels' VECTOR instances); otherwise (odd K, views) the
// same chunks are gathered element by element with zero fill, by one row bucket (16) per dtype:
// correct for any layout, not tuned.
//
// Quantized W (quant.matmul's decode): the same kernel with another W source (PackedRows): a
// 16-byte chunk holds 32 NF4 or 64 ternary codes instead of 4-8 dtype values, decoded through a
// 16-word table in shared memory (cuda/quant_decode.cuh) one x chunk's worth (a "piece") at a time
// so that the decoded values need no more registers than a dense chunk. NF4's absmax (one per
// chunk: blocks are ≥ 32 aligned elements; a double-quantized one decoded inline, two roundings)
// is loaded with the codes, so it is in flight with them. Napkin math, K = N = 4096, H200: NF4 is
// 8 MiB of codes + 1 MiB of absmax (block 64), ~2.2 µs at 4.3 TB/s; ternary 4 MiB, ~1 µs. Bytes in
// flight per warp are those of the dense kernel (4 rows × U chunks × 32 lanes × 16 B), so N = 4096
// keeps 31-62 KB loading per SM, above the ~23 KB the latency needs. Issue: per code a
// shift-and-mask, an LDS and an FMUL by absmax (once per W row, shared by the M rows of x), then M
// FMAs; at M = 1 ~4 slots per code, 16.7 M codes / (132 SMs × 4 schedulers × 32 lanes) at 1.98 GHz
// ≈ 2 µs: as long as the DRAM time, so M = 1 lands at ~2.5-3 µs unless the two overlap fully (not
// measured: no GPU in this round). At M = 16 the FMAs (0.54 GFLOP, ~8 µs) dominate, as for dense W.
// The low-rank term and its per-output gate (low_rank_scale) join the same output pass.
#include <algorithm>
#include <climits>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "gemv.cuh"
#include "quant_decode.cuh"

namespace lk::cuda_ops {
namespace {

constexpr int kWarpSize = 32;

constexpr int kRowsPerWarp = 4;  // W rows per warp: x chunks are reused 4×, 4·M partial sums per lane
constexpr int kGemvWarps = 4;
constexpr int kGemvThreads = kGemvWarps * kWarpSize;
constexpr int kGemvRowsPerBlock = kGemvWarps * kRowsPerWarp;
constexpr int kRankSlice = kWarpSize;    // low-rank extra k-steps: one rank per lane per slice
constexpr int kMinGemvKPerSplit = 512;   // keeps the partials ≤ ~6% of W's bytes (see above)

constexpr int kShrinkRanksPerWarp = 4;
constexpr int kShrinkWarps = 4;
constexpr int kShrinkThreads = kShrinkWarps * kWarpSize;
constexpr int kShrinkRanksPerBlock = kShrinkWarps * kShrinkRanksPerWarp;
constexpr int kMaxShrinkRowsPerBlock = 4;  // A chunks reused across 4 rows; more row tiles for the grid
constexpr long long kMaxShrinkPartials = 2048;  // floats every GEMV block sums: 8 KiB from L2

constexpr int kReduceThreads = 256;

// 16-byte loads in flight per W row per lane (double-buffered): more at M ≤ 2, where the FMAs are
// few and only loads in flight set the speed; 2 at M ≥ 4, where the partial sums (4·M registers)
// need the registers.
constexpr int gemv_chunks_per_lane(int rows) { return rows <= 2 ? 4 : 2; }

template <class E>
constexpr int kVec = 16 / static_cast<int>(sizeof(typename E::storage));  // elements per 16-byte chunk

// ---- kernel parameters (plain structs, passed by value) ----------------------------------------
struct ShrinkArgs {
  const void* x;
  long long x_stride;
  const void* mask;  // like x, or null
  long long mask_stride;
  const void* a;
  long long a_stride, a_group_stride;
  const int* row_group;
  const int* group_rank;
  const float* group_scale;
  float scale;
  float* t;  // [gridDim.y][m][r_max]
  long long m;
  int k, r_max, k_per_split;
};

struct GemvArgs {
  const void* x;
  long long x_stride;
  const void* w;
  long long w_stride;
  const float* t;  // [t_splits][m][r_max], or null: no low-rank term
  int t_splits, r_max;
  const void* b;
  long long b_stride, b_group_stride;
  const int* row_group;
  const int* group_rank;
  const float* low_rank_scale;
  const float* column_scale;
  const void* bias;
  bool bias_f32;  // bias is float32 (else the dtype)
  void* y;
  long long y_stride;
  float* partial;  // [gridDim.y][m][n] when K is split over blockIdx.y, else null
  int m, k, n, k_per_split;
  QuantWeight quant;  // PackedRows sources
  int quant_shift;    // NF4: block of flattened element e = e >> quant_shift
};

#if defined(SIMT_DEVICE_PATH)
// ---- device helpers --------------------------------------------------------------------------------
// The kVec elements p[0 .. kVec) as raw storage, zero past `valid`. VECTOR (every operand's base
// and row stride 16-byte aligned, K a multiple of kVec, so chunks are whole or past the end): one
// predicated 16-byte load, no branch, so the compiler can issue a step's loads back to back.
// Otherwise element by element. STREAMED operands (W, A: read once) bypass L1 (ld.global.cg) so
// that they do not evict x, which every warp of the SM re-reads; x goes through the read-only
// cache (__ldg).
template <class E, bool VECTOR, bool STREAMED>
__device__ __forceinline__ uint4 load_chunk(const typename E::storage* p, int valid) {
  using S = typename E::storage;
  if constexpr (VECTOR) {
    const uint4* chunk = reinterpret_cast<const uint4*>(p);
    if (valid <= 0) return uint4{};
    if constexpr (!STREAMED) return __ldg(chunk);
#if defined(SIMT_EMU)
    return *chunk;  // the emulator has no cache operators
#else
    return __ldcg(chunk);
#endif
  } else {
    union {
      uint4 raw;
      S elems[kVec<E>];
    } c{};
#pragma unroll
    for (int v = 0; v < kVec<E>; ++v) c.elems[v] = v < valid ? p[v] : S(0);
    return c.raw;
  }
}

template <class E>
__device__ __forceinline__ void unpack(uint4 raw, float (&f)[kVec<E>]) {
  union {
    uint4 raw;
    typename E::storage elems[kVec<E>];
  } c{raw};
#pragma unroll
  for (int v = 0; v < kVec<E>; ++v) f[v] = E::to_float(c.elems[v]);
}

// Sums each of the V values over the warp's 32 lanes. Each butterfly step (lane distance OFFSET)
// hands half of a lane's values to its partner and keeps the other half, adding the partner's
// copy: V/2 + V/4 + … shuffles. Afterwards lane l holds the sum of value (l·V)/32 + j in v[j],
// j < max(1, V/32); with V < 32 that sum sits, bitwise identical, on 32/V neighbouring lanes.
template <int COUNT, int OFFSET, int V>
__device__ __forceinline__ void reduce_scatter_step(float (&v)[V], int lane) {
  if constexpr (OFFSET >= 1) {
    if constexpr (COUNT >= 2) {
      constexpr int HALF = COUNT / 2;
      const bool upper = (lane & OFFSET) != 0;
#pragma unroll
      for (int j = 0; j < HALF; ++j) {
        const float give = upper ? v[j] : v[j + HALF];
        const float keep = upper ? v[j + HALF] : v[j];
        v[j] = keep + __shfl_xor_sync(kFullMask, give, OFFSET);
      }
      reduce_scatter_step<HALF, OFFSET / 2>(v, lane);
    } else {
      v[0] += __shfl_xor_sync(kFullMask, v[0], OFFSET);  // a + b == b + a: both lanes agree
      reduce_scatter_step<1, OFFSET / 2>(v, lane);
    }
  }
}
template <int V>
__device__ __forceinline__ void warp_reduce_scatter(float (&v)[V], int lane) {
  static_assert((V & (V - 1)) == 0, "a power of two of values");
  reduce_scatter_step<V, kWarpSize / 2>(v, lane);
}
template <int V>
struct ScatteredSums {
  static constexpr int kPerLane = V >= kWarpSize ? V / kWarpSize : 1;
  static constexpr int kLanesPerSum = V >= kWarpSize ? 1 : kWarpSize / V;
  // The value index of v[j] on `lane`, or -1 when a lower lane holds (and stores) the same sum.
  static __device__ __forceinline__ int index(int lane, int j) {
    return lane % kLanesPerSum == 0 ? lane * V / kWarpSize + j : -1;
  }
};

struct RowAdapter {
  int group;  // -1: base only (or past m)
  int rank;   // 0 when group is -1
};
__device__ __forceinline__ RowAdapter row_adapter(const int* row_group, const int* group_rank, int r_max,
                                                  long long row, long long m) {
  const int group = row >= m ? -1 : row_group ? row_group[row] : 0;
  return RowAdapter{group, group < 0 ? 0 : group_rank ? group_rank[group] : r_max};
}

template <class E>
__device__ __forceinline__ float load_f(const void* base, long long i) {
  return E::to_float(static_cast<const typename E::storage*>(base)[i]);
}

// y[i, n] = v·column_scale[n] + bias[n] in the dtype (·1 + 0 is exactly v), the bias unrounded when float32.
template <class E>
__device__ __forceinline__ void store_output(const GemvArgs& p, int i, int n, float v) {
  const float column_scale = p.column_scale ? p.column_scale[n] : 1.f;
  const float bias = !p.bias ? 0.f : p.bias_f32 ? static_cast<const float*>(p.bias)[n] : load_f<E>(p.bias, n);
  static_cast<typename E::storage*>(p.y)[i * p.y_stride + n] = E::from_float(fmaf(v, column_scale, bias));
}

// The low-rank term as extra k-steps of the warp's partial sums: lane j adds T[i][j]·B_i[n][j] for
// rank j = r0 + lane < rank(i). T is staged per block, 32 ranks at a time, summing the shrink's
// partial slices in slice order. B rows are loaded once per run of rows with the same adapter.
// Every thread of the block calls this (it has barriers).
template <class E, int MB>
__device__ __forceinline__ void add_low_rank(const GemvArgs& p, float (&acc)[MB * kRowsPerWarp], int n0, int lane,
                                             float* t_slice) {
  using S = typename E::storage;
  RowAdapter rows[MB];
#pragma unroll
  for (int i = 0; i < MB; ++i) rows[i] = row_adapter(p.row_group, p.group_rank, p.r_max, i, p.m);
  long long b_row[kRowsPerWarp];
  float gate[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    b_row[r] = static_cast<long long>(min(n0 + r, p.n - 1)) * p.b_stride;
    gate[r] = p.low_rank_scale ? p.low_rank_scale[min(n0 + r, p.n - 1)] : 1.f;
  }
  for (int r0 = 0; r0 < p.r_max; r0 += kRankSlice) {
    for (int e = threadIdx.x; e < MB * kRankSlice; e += kGemvThreads) {
      const int i = e / kRankSlice, j = r0 + e % kRankSlice;
      float sum = 0.f;
      if (i < p.m && j < p.r_max)
        for (int s = 0; s < p.t_splits; ++s) sum += p.t[(static_cast<long long>(s) * p.m + i) * p.r_max + j];
      t_slice[e] = sum;
    }
    __syncthreads();
    const int j = r0 + lane;
    int loaded_group = -1;
    float b[kRowsPerWarp] = {};
#pragma unroll
    for (int i = 0; i < MB; ++i) {
      if (j >= rows[i].rank) continue;  // also base-only rows and rows past m (rank 0)
      if (rows[i].group != loaded_group) {
        const S* b_group = static_cast<const S*>(p.b) + rows[i].group * p.b_group_stride + j;
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) b[r] = gate[r] * E::to_float(b_group[b_row[r]]);
        loaded_group = rows[i].group;
      }
      const float t = t_slice[i * kRankSlice + lane];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) acc[i * kRowsPerWarp + r] = fmaf(t, b[r], acc[i * kRowsPerWarp + r]);
    }
    __syncthreads();
  }
}

#endif  // SIMT_DEVICE_PATH

// ---- W sources of the GEMV: a warp's kRowsPerWarp rows of W as 16-byte chunks of kElems
// elements, decoded a piece (kVec<E> elements: one x chunk) at a time into float32. The launch
// reads their constants; their code is device code.
// DenseRows: the dtype's rows (kElems = kVec<E>, one piece per chunk).
template <class E, bool VECTOR>
struct DenseRows {
  using S = typename E::storage;
  static constexpr int kElems = kVec<E>;
  static constexpr bool kTable = false, kVector = VECTOR;
  struct Chunk {
    uint4 raw;
  };
  const S* rows[kRowsPerWarp];
#if defined(SIMT_DEVICE_PATH)
  __device__ __forceinline__ void init(const GemvArgs& p, int n0) {
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) rows[r] = static_cast<const S*>(p.w) + static_cast<long long>(min(n0 + r, p.n - 1)) * p.w_stride;
  }
  __device__ __forceinline__ Chunk load(const GemvArgs&, int r, int k, int k_end) const {
    return Chunk{load_chunk<E, VECTOR, true>(rows[r] + k, k_end - k)};
  }
  __device__ __forceinline__ void decode(const GemvArgs&, const float*, const Chunk& c, int, int, int, int,
                                         float (&w)[kVec<E>]) const {
    unpack<E>(c.raw, w);
  }
#endif
};

// PackedRows: NF4 (4 bits per code, 32 per chunk) or ternary (2 bits, 64 per chunk) rows of
// p.quant. VECTOR (rows 16-byte aligned: NF4 with k % 32 == 0, ternary with ⌈k/4⌉ % 16 == 0): a
// chunk is one 16-byte load of codes (ld.global.cg, like dense W) plus its block's absmax (NF4; the
// tensor's scale for ternary), a chunk past the row's end is zeros with scale 0. Otherwise (odd k,
// where NF4 rows start mid-byte and blocks straddle rows) every value is read from global memory as
// it is decoded: correct for any shape, not tuned.
template <class E, QuantFormat F, bool VECTOR>
struct PackedRows {
  static constexpr int kBits = F == QuantFormat::Nf4 ? 4 : 2;
  static constexpr int kElems = 128 / kBits;
  static constexpr bool kTable = true, kVector = VECTOR;
  struct Chunk {
    uint4 codes;
    float scale;
  };
  const uint8_t* codes[kRowsPerWarp];  // VECTOR: the row's codes
  long long first[kRowsPerWarp];       // NF4: flattened element of the row's column 0; ternary: the row
#if defined(SIMT_DEVICE_PATH)
  __device__ __forceinline__ void init(const GemvArgs& p, int n0) {
    const QuantWeight& q = p.quant;
    const long long pitch = F == QuantFormat::Nf4 ? q.k / 2 : ternary::row_bytes(q.k);  // VECTOR rows only
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const long long row = min(n0 + r, p.n - 1);
      codes[r] = q.packed + row * pitch;
      first[r] = F == QuantFormat::Nf4 ? row * q.k : row;
    }
  }
  __device__ __forceinline__ Chunk load(const GemvArgs& p, int r, int k, int k_end) const {
    if constexpr (!VECTOR) {
      return Chunk{};
    } else {
      if (k >= k_end) return Chunk{uint4{0, 0, 0, 0}, 0.f};
      const QuantWeight& q = p.quant;
      const uint4* chunk = reinterpret_cast<const uint4*>(codes[r] + k / (8 / kBits));
#if defined(SIMT_EMU)
      const uint4 raw = *chunk;
#else
      const uint4 raw = __ldcg(chunk);
#endif
      return Chunk{raw, F == QuantFormat::Nf4 ? quant::block_absmax(q, (first[r] + k) >> p.quant_shift) : q.scale};
    }
  }
  // Piece `piece` (elements k + piece·kVec<E> …) of the chunk at k of row r, zero past k_end.
  __device__ __forceinline__ void decode(const GemvArgs& p, const float* table, const Chunk& c, int r, int k, int k_end,
                                         int piece, float (&w)[kVec<E>]) const {
    constexpr int P = kVec<E>, PIECE_BITS = P * kBits;
    if constexpr (VECTOR) {
      const uint32_t words[4] = {c.codes.x, c.codes.y, c.codes.z, c.codes.w};
      const uint32_t bits = words[piece * PIECE_BITS / 32] >> (piece * PIECE_BITS % 32);
      if constexpr (F == QuantFormat::Nf4) {
        quant::nf4_decode<P>(table, bits, c.scale, w);
      } else {
        quant::ternary_decode<P>(table, bits, w);
#pragma unroll
        for (int t = 0; t < P; ++t) w[t] *= c.scale;
      }
    } else {
      const QuantWeight& q = p.quant;
      const long long row_bytes = ternary::row_bytes(q.k);
#pragma unroll
      for (int t = 0; t < P; ++t) {
        const int kk = k + piece * P + t;
        w[t] = kk >= k_end                    ? 0.f
               : F == QuantFormat::Nf4        ? quant::nf4_element(table, q, p.quant_shift, first[r] + kk)
                                              : quant::ternary_element(table, q, row_bytes, first[r], kk);
      }
    }
  }
#endif
};

// ---- kernels ---------------------------------------------------------------------------------------
// gemv_shrink: block = kShrinkWarps warps × kShrinkRanksPerWarp ranks (blockIdx.x) × one K slice
// (blockIdx.y) × MB rows (blockIdx.z). A lane reads one 16-byte chunk of each row of x (⊙ mask) and
// of each of the warp's A rows per step; every load of a step is independent (MB·(2 + 4) in
// flight). Rows without a rank in the warp's range skip their loads (warp-uniform branches), so
// A's padding past a row's rank is never read.
template <class E, int MB, bool VECTOR>
__global__ void __launch_bounds__(kShrinkThreads) gemv_shrink_kernel(ShrinkArgs p) {
#if defined(SIMT_DEVICE_PATH)
  using S = typename E::storage;
  constexpr int VEC = kVec<E>, RJ = kShrinkRanksPerWarp, STEP = kWarpSize * VEC;
  const int lane = threadIdx.x % kWarpSize;
  const int j0 = (blockIdx.x * kShrinkWarps + threadIdx.x / kWarpSize) * RJ;
  const long long row0 = static_cast<long long>(blockIdx.z) * MB;
  const long long k_first = static_cast<long long>(blockIdx.y) * p.k_per_split;
  const int k_begin = static_cast<int>(k_first < p.k ? k_first : p.k);
  const int k_end = static_cast<int>(k_first + p.k_per_split < p.k ? k_first + p.k_per_split : p.k);
  RowAdapter rows[MB];
#pragma unroll
  for (int i = 0; i < MB; ++i) rows[i] = row_adapter(p.row_group, p.group_rank, p.r_max, row0 + i, p.m);

  float acc[MB * RJ] = {};
  for (int kb = k_begin; kb < k_end; kb += STEP) {
    const int k = kb + lane * VEC, valid = k_end - k;
#pragma unroll
    for (int i = 0; i < MB; ++i) {
      if (rows[i].rank <= j0) continue;  // no rank of this warp's range in this row
      const long long row = row0 + i;
      float x[VEC];
      unpack<E>(load_chunk<E, VECTOR, false>(static_cast<const S*>(p.x) + row * p.x_stride + k, valid), x);
      if (p.mask) {
        float mask[VEC];
        unpack<E>(load_chunk<E, VECTOR, false>(static_cast<const S*>(p.mask) + row * p.mask_stride + k, valid), mask);
#pragma unroll
        for (int v = 0; v < VEC; ++v) x[v] *= mask[v];
      }
      const S* a = static_cast<const S*>(p.a) + rows[i].group * p.a_group_stride + k;
#pragma unroll
      for (int r = 0; r < RJ; ++r) {
        if (j0 + r >= rows[i].rank) continue;
        float av[VEC];
        unpack<E>(load_chunk<E, VECTOR, true>(a + static_cast<long long>(j0 + r) * p.a_stride, valid), av);
#pragma unroll
        for (int v = 0; v < VEC; ++v) acc[i * RJ + r] = fmaf(x[v], av[v], acc[i * RJ + r]);
      }
    }
  }
  warp_reduce_scatter(acc, lane);
  using Sums = ScatteredSums<MB * RJ>;
#pragma unroll
  for (int s = 0; s < Sums::kPerLane; ++s) {
    const int q = Sums::index(lane, s);
    const long long row = row0 + q / RJ;
    const int j = j0 + q % RJ;
    if (q < 0 || row >= p.m || j >= p.r_max) continue;
    const RowAdapter ra = row_adapter(p.row_group, p.group_rank, p.r_max, row, p.m);
    const float row_scale = ra.group < 0 ? 0.f : p.group_scale ? p.group_scale[ra.group] : p.scale;
    p.t[(static_cast<long long>(blockIdx.y) * p.m + row) * p.r_max + j] = j < ra.rank ? row_scale * acc[s] : 0.f;
  }
#endif
}

// gemv: warp w of block b owns W rows n0 = (b·kGemvWarps + w)·4 … n0 + 3 (rows past n re-read the
// last row and are never stored) and the K range of split blockIdx.y; lanes stride K in 16-byte
// chunks of W (Src::kElems elements). Per step: issue the next step's 4·U W chunks, then decode the
// current ones a piece at a time and FMA them with the matching x chunk of each of the m rows (L1
// hits after the first warp).
template <class E, class Src, int MB, int U>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(GemvArgs p) {
#if defined(SIMT_DEVICE_PATH)
  using S = typename E::storage;
  constexpr bool VECTOR = Src::kVector;
  constexpr int VEC = kVec<E>, R = kRowsPerWarp, CE = Src::kElems, STEP = kWarpSize * CE * U;
  __shared__ float t_slice[MB * kRankSlice];
  __shared__ float table[Src::kTable ? quant::kTableSize : 1];
  if constexpr (Src::kTable) {
    quant::fill_table(table, p.quant.format);
    __syncthreads();
  }
  const int lane = threadIdx.x % kWarpSize;
  const int n0 = (blockIdx.x * kGemvWarps + threadIdx.x / kWarpSize) * R;
  const long long k_first = static_cast<long long>(blockIdx.y) * p.k_per_split;
  const int k_begin = static_cast<int>(k_first < p.k ? k_first : p.k);
  const int k_end = static_cast<int>(k_first + p.k_per_split < p.k ? k_first + p.k_per_split : p.k);
  Src src;
  src.init(p, n0);
  const S* x = static_cast<const S*>(p.x);

  float acc[MB * R] = {};  // acc[i·R + r]: row i of x · W row n0 + r
  typename Src::Chunk current[R][U], next[R][U];
  auto load_step = [&](int kb, typename Src::Chunk(&chunks)[R][U]) {
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < R; ++r) chunks[r][u] = src.load(p, r, kb + (lane + u * kWarpSize) * CE, k_end);
  };
  load_step(k_begin, current);
  for (int kb = k_begin; kb < k_end; kb += STEP) {
    const bool more = kb + STEP < k_end;
    if (more) load_step(kb + STEP, next);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int kc = kb + (lane + u * kWarpSize) * CE;
#pragma unroll
      for (int piece = 0; piece < CE / VEC; ++piece) {
        const int k = kc + piece * VEC, valid = k_end - k;
        float w[R][VEC];
#pragma unroll
        for (int r = 0; r < R; ++r) src.decode(p, table, current[r][u], r, kc, k_end, piece, w[r]);
#pragma unroll
        for (int i = 0; i < MB; ++i) {
          if (i >= p.m) continue;
          float xv[VEC];
          unpack<E>(load_chunk<E, VECTOR, false>(x + i * p.x_stride + k, valid), xv);
#pragma unroll
          for (int r = 0; r < R; ++r)
#pragma unroll
            for (int v = 0; v < VEC; ++v) acc[i * R + r] = fmaf(xv[v], w[r][v], acc[i * R + r]);
        }
      }
    }
    if (more) {
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int u = 0; u < U; ++u) current[r][u] = next[r][u];
    }
  }
  // The low-rank term belongs to split 0 (blockIdx.y is uniform over the block: barriers are safe).
  if (p.t && blockIdx.y == 0) add_low_rank<E, MB>(p, acc, n0, lane, t_slice);

  warp_reduce_scatter(acc, lane);
  using Sums = ScatteredSums<MB * R>;
#pragma unroll
  for (int s = 0; s < Sums::kPerLane; ++s) {
    const int q = Sums::index(lane, s);
    const int i = q / R, n = n0 + q % R;
    if (q < 0 || i >= p.m || n >= p.n) continue;
    if (p.partial)
      p.partial[(static_cast<long long>(blockIdx.y) * p.m + i) * p.n + n] = acc[s];
    else
      store_output<E>(p, i, n, acc[s]);
  }
#endif
}

// Split-K GEMV: y[i, n] from the partial sums of the `splits` K slices, added in slice order.
template <class E>
__global__ void __launch_bounds__(kReduceThreads) gemv_split_reduce_kernel(GemvArgs p, int splits) {
#if defined(SIMT_DEVICE_PATH)
  const int n = blockIdx.x * kReduceThreads + threadIdx.x, i = blockIdx.y;
  if (n >= p.n) return;
  float sum = 0.f;
  for (int s = 0; s < splits; ++s) sum += p.partial[(static_cast<long long>(s) * p.m + i) * p.n + n];
  store_output<E>(p, i, n, sum);
#endif
}

// ---- launchers -------------------------------------------------------------------------------------
template <int N>
using Rows = std::integral_constant<int, N>;


// Row buckets: the smallest power of two ≥ `rows`, up to MAX (rows past m skip their work). Only
// the buckets up to MAX are instantiated.
template <int MAX, int BUCKET = 1, class F>
void with_row_bucket(long long rows, F&& fn) {
  if constexpr (BUCKET < MAX) {
    if (rows > BUCKET) return with_row_bucket<MAX, 2 * BUCKET>(rows, fn);
  }
  fn(Rows<BUCKET>{});
}

// 16-byte loads: every listed operand's base and row stride (elements) 16-byte aligned, and K a
// multiple of the chunk, so that a chunk is either whole or past the end of its row.
bool vector_loads(DType dtype, long long k, std::initializer_list<std::pair<const void*, long long>> operands) {
  const long long elem = static_cast<long long>(dtype_size(dtype)), vec = 16 / elem;
  if (k % vec != 0) return false;
  for (const auto& [ptr, stride] : operands)
    if (ptr && (reinterpret_cast<uintptr_t>(ptr) % 16 != 0 || (stride * elem) % 16 != 0)) return false;
  return true;
}

long long round_up(long long v, long long to) { return ceil_div(v, to) * to; }

// int-typed kernel arguments, with room for one step past the end of a row.
void check_sizes(const char* what, long long k, long long n, long long r_max) {
  constexpr long long kMaxInt = INT_MAX - 4096;
  if (k > kMaxInt || n > kMaxInt || r_max > kMaxInt)
    throw Error(ErrorCode::Unsupported, std::string(what) + " (cuda): k, n and r must be below 2^31 - 4096 (k=" +
                                            std::to_string(k) + ", n=" + std::to_string(n) + ", r=" + std::to_string(r_max) + ")");
}

// The shrink's row bucket: the smallest power of two ≥ min(m, kMaxShrinkRowsPerBlock).
long long shrink_rows_per_block(long long m) {
  long long rows = 1;
  while (rows < m && rows < kMaxShrinkRowsPerBlock) rows *= 2;
  return rows;
}

// The GEMV (+ the split reduce when K is split: when the rows alone leave SMs without a block,
// K is split until there are ~2 blocks per SM).
template <class E, class Src, int MB>
void launch_gemv(GemvArgs a, int sm_count, int device, cudaStream_t st) {
  constexpr int U = gemv_chunks_per_lane(MB);
  constexpr long long kStep = static_cast<long long>(kWarpSize) * Src::kElems * U;
  const long long blocks_n = ceil_div<long long>(a.n, kGemvRowsPerBlock);
  long long splits = 1;
  if (blocks_n < sm_count)
    splits = std::max<long long>(1, std::min(ceil_div(2LL * sm_count, blocks_n), a.k / std::max<long long>(kStep, kMinGemvKPerSplit)));
  const long long k_per_split = round_up(ceil_div<long long>(a.k, splits), kStep);
  splits = k_per_split ? ceil_div<long long>(a.k, k_per_split) : 1;  // no empty slice
  a.k_per_split = static_cast<int>(k_per_split);
  std::unique_ptr<DeviceScratch> partial;
  if (splits > 1) {
    partial = std::make_unique<DeviceScratch>(device, static_cast<size_t>(splits * a.m * a.n) * sizeof(float));
    a.partial = partial->as<float>();
  }
  simt_launch(gemv_kernel<E, Src, MB, U>, dim3(static_cast<unsigned>(blocks_n), static_cast<unsigned>(splits)),
              dim3(kGemvThreads), 0, st, a);
  LK_CUDA_CHECK_LAUNCH("gemv_kernel launch");
  if (splits > 1) {
    simt_launch(gemv_split_reduce_kernel<E>, dim3(static_cast<unsigned>(ceil_div<long long>(a.n, kReduceThreads)),
                static_cast<unsigned>(a.m)), dim3(kReduceThreads), 0, st, a, static_cast<int>(splits));
    LK_CUDA_CHECK_LAUNCH("gemv_split_reduce_kernel launch");
  }
}

// Vector sources take every row bucket; element loads one (16): correct for any layout, not tuned.
template <class E, class Src>
void launch_source(const GemvArgs& a, int sm_count, int device, cudaStream_t st) {
  if constexpr (Src::kVector)
    with_row_bucket<static_cast<int>(kGemvMaxRows)>(a.m, [&](auto rows) { launch_gemv<E, Src, decltype(rows)::value>(a, sm_count, device, st); });
  else
    launch_gemv<E, Src, static_cast<int>(kGemvMaxRows)>(a, sm_count, device, st);
}

}  // namespace

// ---- entries ---------------------------------------------------------------------------------------
int gemv_shrink_splits(const GemvShrinkParams& p, int sm_count) {
  const long long step = kWarpSize * 16 / static_cast<long long>(dtype_size(p.dtype));  // one chunk per lane
  const long long tiles = std::max<long long>(
      1, ceil_div<long long>(p.r_max, kShrinkRanksPerBlock) * ceil_div(p.m, shrink_rows_per_block(p.m)));
  const long long fill = ceil_div<long long>(2LL * sm_count, tiles);  // ~2 blocks per SM
  const long long by_k = std::max<long long>(1, p.k / step);
  const long long by_partials = std::max<long long>(1, kMaxShrinkPartials / (std::min(p.m, kGemvMaxRows) * std::max<long long>(1, p.r_max)));
  const long long splits = std::max<long long>(1, std::min({fill, by_k, by_partials}));
  // As many slices as the rounded slice width needs: no slice is empty.
  const long long k_per_split = round_up(ceil_div(p.k, splits), step);
  return static_cast<int>(std::max<long long>(1, k_per_split ? ceil_div(p.k, k_per_split) : 1));
}

void gemv_shrink(const GemvShrinkParams& p, float* t_partials, int splits, cudaStream_t st) {
  if (p.m == 0 || p.r_max == 0) return;
  check_sizes("gemv_shrink", p.k, 0, p.r_max);
  const bool vector = vector_loads(p.dtype, p.k, {{p.x, p.x_stride}, {p.mask, p.mask_stride}, {p.a, p.a_stride}, {p.a, p.a_group_stride}});
  // Element loads: correct for any layout, not tuned (one row bucket).
  const long long rows_per_block = vector ? shrink_rows_per_block(p.m) : kMaxShrinkRowsPerBlock;
  if (ceil_div(p.m, rows_per_block) > 65535 || splits < 1 || splits > 65535)
    throw Error(ErrorCode::Unsupported, "gemv_shrink (cuda): m=" + std::to_string(p.m) + " rows in " + std::to_string(splits) +
                                            " K slices exceed the launch grid");
  const long long step = kWarpSize * 16 / static_cast<long long>(dtype_size(p.dtype));
  ShrinkArgs a{};
  a.x = p.x;
  a.x_stride = p.x_stride;
  a.mask = p.mask;
  a.mask_stride = p.mask_stride;
  a.a = p.a;
  a.a_stride = p.a_stride;
  a.a_group_stride = p.a_group_stride;
  a.row_group = p.row_group;
  a.group_rank = p.group_rank;
  a.group_scale = p.group_scale;
  a.scale = p.scale;
  a.t = t_partials;
  a.m = p.m;
  a.k = static_cast<int>(p.k);
  a.r_max = static_cast<int>(p.r_max);
  a.k_per_split = static_cast<int>(round_up(ceil_div<long long>(p.k, splits), step));
  const dim3 grid(static_cast<unsigned>(ceil_div<long long>(p.r_max, kShrinkRanksPerBlock)), static_cast<unsigned>(splits),
                  static_cast<unsigned>(ceil_div(p.m, rows_per_block)));
  with_element(p.dtype, "gemv_shrink", [&](auto e) {
    using E = decltype(e);
    if (!vector) {
      simt_launch(gemv_shrink_kernel<E, kMaxShrinkRowsPerBlock, false>, grid, dim3(kShrinkThreads), 0, st, a);
    } else {
      with_row_bucket<kMaxShrinkRowsPerBlock>(rows_per_block, [&](auto rows) {
        simt_launch(gemv_shrink_kernel<E, decltype(rows)::value, true>, grid, dim3(kShrinkThreads), 0, st, a);
      });
    }
    LK_CUDA_CHECK_LAUNCH("gemv_shrink_kernel launch");
  });
  note_plan(std::string("gemv shrink ") + dtype_name(p.dtype) + (vector ? "" : " element loads") +
            (splits > 1 ? " split-k " + std::to_string(splits) : ""));
}

void gemv(const GemvParams& p, int device, cudaStream_t st) {
  if (p.m == 0 || p.n == 0) return;
  if (p.m > kGemvMaxRows)
    throw Error(ErrorCode::Unsupported, "gemv (cuda): m=" + std::to_string(p.m) + " rows, at most 16");
  check_sizes("gemv", p.k, p.n, p.r_max);
  const DeviceProps props = device_props(device);
  GemvArgs a{};
  a.x = p.x;
  a.x_stride = p.x_stride;
  a.w = p.w;
  a.w_stride = p.w_stride;
  const bool low_rank = p.t && p.r_max > 0;
  a.t = low_rank ? p.t : nullptr;
  a.t_splits = p.t_splits;
  a.r_max = low_rank ? static_cast<int>(p.r_max) : 0;
  a.b = p.b;
  a.b_stride = p.b_stride;
  a.b_group_stride = p.b_group_stride;
  a.row_group = p.row_group;
  a.group_rank = p.group_rank;
  a.low_rank_scale = p.low_rank_scale;
  a.column_scale = p.column_scale;
  a.bias = p.bias;
  a.bias_f32 = p.bias_f32;
  a.y = p.y;
  a.y_stride = p.y_stride;
  a.m = static_cast<int>(p.m);
  a.k = static_cast<int>(p.k);
  a.n = static_cast<int>(p.n);
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  const QuantWeight* q = p.w_quant;
  bool vector = vector_loads(p.dtype, p.k, {{p.x, p.x_stride}, {q ? nullptr : p.w, p.w_stride}});
  if (q) {
    a.quant = *q;
    a.quant_shift = quant::block_shift(q->block_size);
    vector = vector && aligned(q->packed) &&
             (q->format == QuantFormat::Nf4 ? q->k % 32 == 0 : ternary::row_bytes(q->k) % 16 == 0);
  }
  with_element(p.dtype, "gemv", [&](auto e) {
    using E = decltype(e);
    constexpr QuantFormat kNf4 = QuantFormat::Nf4, kTernary = QuantFormat::Ternary;
    if (!q) return vector ? launch_source<E, DenseRows<E, true>>(a, props.sm_count, device, st)
                          : launch_source<E, DenseRows<E, false>>(a, props.sm_count, device, st);
    if (q->format == kNf4)
      return vector ? launch_source<E, PackedRows<E, kNf4, true>>(a, props.sm_count, device, st)
                    : launch_source<E, PackedRows<E, kNf4, false>>(a, props.sm_count, device, st);
    return vector ? launch_source<E, PackedRows<E, kTernary, true>>(a, props.sm_count, device, st)
                  : launch_source<E, PackedRows<E, kTernary, false>>(a, props.sm_count, device, st);
  });
  note_plan(std::string("gemv ") + (!q ? "" : q->format == QuantFormat::Nf4 ? "nf4 " : "ternary ") + dtype_name(p.dtype) +
            " m=" + std::to_string(p.m) + (vector ? "" : " element loads"));
}

void gemv_low_rank(GemvParams g, GemvShrinkParams shrink, int device, cudaStream_t st) {
  std::unique_ptr<DeviceScratch> t_partials;
  if (shrink.r_max > 0) {
    shrink.dtype = g.dtype;
    shrink.m = g.m;
    shrink.k = g.k;
    shrink.x = g.x;
    shrink.x_stride = g.x_stride;
    const int splits = gemv_shrink_splits(shrink, device_props(device).sm_count);
    t_partials = std::make_unique<DeviceScratch>(device, static_cast<size_t>(splits * g.m * shrink.r_max) * sizeof(float));
    gemv_shrink(shrink, t_partials->as<float>(), splits, st);
    g.t = t_partials->as<float>();
    g.t_splits = splits;
    g.r_max = shrink.r_max;
  }
  gemv(g, device, st);
}

void lora_forward_decode(const LoraForwardParams& p, int device, cudaStream_t st) {
  GemvParams g;
  g.dtype = p.dtype;
  g.m = p.m;
  g.k = p.k;
  g.n = p.n;
  g.x = p.x;
  g.x_stride = p.x_stride;
  g.w = p.weight;
  g.w_stride = p.weight_stride;
  g.column_scale = p.column_scale;
  g.bias = p.bias;
  g.bias_f32 = p.bias_f32;
  g.y = p.y;
  g.y_stride = p.y_stride;
  g.b = p.b;
  g.b_stride = p.b_stride;
  GemvShrinkParams s;
  s.r_max = p.r;
  s.mask = p.dropout_mask;
  s.mask_stride = p.mask_stride;
  s.a = p.a;
  s.a_stride = p.a_stride;
  s.scale = p.scale;
  gemv_low_rank(g, s, device, st);
}

void lora_forward_multi_decode(const LoraMultiParams& p, int device, cudaStream_t st) {
  GemvShrinkParams s;
  s.dtype = p.dtype;
  s.m = p.m;
  s.k = p.k;
  s.r_max = p.r_max;
  s.x = p.x;
  s.x_stride = p.x_stride;
  s.a = p.a;
  s.a_stride = p.k;
  s.a_group_stride = p.r_max * p.k;
  s.row_group = p.adapter_ids;
  s.group_rank = p.ranks;
  s.group_scale = p.scales;
  const int splits = gemv_shrink_splits(s, device_props(device).sm_count);
  DeviceScratch t_partials(device, static_cast<size_t>(splits * p.m * p.r_max) * sizeof(float));
  gemv_shrink(s, t_partials.as<float>(), splits, st);

  GemvParams g;
  g.dtype = p.dtype;
  g.m = p.m;
  g.k = p.k;
  g.n = p.n;
  g.x = p.x;
  g.x_stride = p.x_stride;
  g.w = p.weight;
  g.w_stride = p.weight_stride;
  g.t = t_partials.as<float>();
  g.t_splits = splits;
  g.r_max = p.r_max;
  g.b = p.b;
  g.b_stride = p.r_max;
  g.b_group_stride = p.n * p.r_max;
  g.row_group = p.adapter_ids;
  g.group_rank = p.ranks;
  g.bias = p.bias;
  g.bias_f32 = p.bias_f32;
  g.y = p.y;
  g.y_stride = p.y_stride;
  gemv(g, device, st);
}

}  // namespace lk::cuda_ops
