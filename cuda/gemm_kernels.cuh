// The GEMM engine's kernels (see cuda/gemm.cuh for what they compute). Included by cuda/gemm.cu
// only, which instantiates them; written in the kernel subset of csrc/simt (emulated in tests).
//
// Layout of this file: element traits → tile configurations → the K-segment cursor → the epilogues
// → the mma.sync mainloop (operand loaders, the dequantizing B operand, fragments) → the FMA
// mainloop → the split-K reduce.
#pragma once
#include <atomic>
#include <climits>
#include <type_traits>

#include "common.cuh"
#include "gemm.cuh"
#include "quant_decode.cuh"

namespace lk::cuda_ops::gemm {

// ---- kernel parameters (one plain struct, by value) --------------------------------------------
struct Params {
  int m, n;
  Segment seg0, seg1;  // named fields, not an array: a dynamically indexed kernel parameter would be copied to local memory
  int num_segments;
  const Segment* tile_segments;
  const int* tile_segment_begin;
  const int* row_index;
  const void* acc_mask;
  long long acc_mask_stride;
  const float* acc_col_scale;
  QuantWeight quant;  // segments with quant_b (Problem::quant)
  int quant_shift;    // NF4: log2(block_size), block of flattened element e = e >> quant_shift
  bool quant_staged;  // the weight's rows (and absmax) are 16-byte aligned: cp.async into the stages
  int ktiles_per_split;  // grid.z = splits; split z runs k-tiles [z·ktiles_per_split, (z+1)·ktiles_per_split)
  float* partial;        // splits > 1: float32 [splits][m][n], summed by splitk_reduce_kernel
  Epilogue epi;
  RowNorm row_norm;
  float* row_norm_partial;  // row-norm epilogue: [column tiles][m], summed by row_norm_reduce_kernel
};

// The emulator compiles every path (it runs whichever one the dispatcher picks for SIMT_EMU_CC);
// nvcc compiles each kernel only for the architectures the dispatcher sends it to.
#if defined(SIMT_EMU)
constexpr bool kEmulatedAllArchs = true;
#else
constexpr bool kEmulatedAllArchs = false;
#endif

template <class T>
__host__ __device__ __forceinline__ constexpr T cmin(T a, T b) { return a < b ? a : b; }
template <class T>
__host__ __device__ __forceinline__ constexpr T cmax(T a, T b) { return a < b ? b : a; }

// ---- tile configurations -------------------------------------------------------------------------
// BM×BN outputs per block of WARPS_M×WARPS_N warps, KB bytes of K per pipeline stage (32 bf16 or 16
// float32 values), STAGES stages of shared memory in flight.
// Napkin math for the big tile on an H100/H200 (bf16): per k-tile a block loads (128+128)·64 B =
// 16 KiB and issues 128·128·32·2 = 1 MFLOP, 64 FLOP/B of shared memory traffic; 4 stages (64 KiB)
// keep 48 KiB of loads in flight per block, enough to cover ~1 µs of HBM latency at the ~25 GB/s
// per SM that 132 SMs need to reach the ~3.3 TB/s a 4096³ GEMM needs at ~600 TFLOP/s... it is
// compute-bound there; the stages are what hides the latency.
template <int BM_, int BN_, int KB_, int WARPS_M_, int WARPS_N_, int STAGES_>
struct TileConfig {
  static constexpr int BM = BM_, BN = BN_, KB = KB_, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, STAGES = STAGES_;
  static constexpr int NT = WARPS_M * WARPS_N * 32;
  static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // warp tile
  static constexpr int MF = WM / 16, NF = WN / 8;              // m16 and n8 fragments per warp
  static_assert(WM % 16 == 0 && WN % 16 == 0 && KB % 32 == 0, "warp tile");
};

// ---- element traits --------------------------------------------------------------------------------
// The tensor-core paths: storage type, bytes per element, the mma for one 32-byte k-step.
struct MmaF16 {
  using E = F16;
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_m16n8k16_f16(d, a, b, d);
  }
  static constexpr bool kTf32 = false;
};
struct MmaBF16 {
  using E = BF16;
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_m16n8k16_bf16(d, a, b, d);
  }
  static constexpr bool kTf32 = false;
};
struct MmaTF32 {
  using E = F32;
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    ptx::mma_m16n8k8_tf32(d, a, b, d);
  }
  static constexpr bool kTf32 = true;
};

// The packed codes of one k-tile in a stage, row by row. K-major (BN weight rows × one k-tile): per
// row a 16-byte chunk of codes (NF4: the k-tile's 32; ternary: the 64 that hold them) and the
// aligned absmax chunk holding the row's block. MN-major (BK weight rows × BN columns, gradInput's
// g·deq(W)): per row BN/32 chunks of codes (NF4: BN/2 bytes; ternary uses the first BN/64) and two
// absmax chunks: the aligned chunk holding the first column's block and the next, which covers the
// ≤ BN/32 + 1 blocks of the row's BN columns.
template <Layout L, int BN, int BK>
struct QuantStage {
  static constexpr int CODE_CHUNKS = L == Layout::KMajor ? 1 : BN / 32;
  static constexpr int ABSMAX_CHUNKS = L == Layout::KMajor ? 1 : 2;
  static constexpr int ROW_BYTES = (CODE_CHUNKS + ABSMAX_CHUNKS) * 16;
  static constexpr int ROWS = L == Layout::KMajor ? BN : BK;
  static constexpr int BYTES = ROWS * ROW_BYTES;
};

// Shared memory of an mma.sync block: STAGES × (A's tile + B's tile, or B's packed codes when B is
// quantized), then, with a quantized B, its two dequantized tiles (host-visible: the launch sizes it).
template <class Mma, class Tile, Layout LB, bool kQuant>
struct MmaSmem {
  static constexpr int BK = Tile::KB / static_cast<int>(sizeof(typename Mma::E::storage));
  static constexpr int A_BYTES = Tile::BM * Tile::KB, B_TILE_BYTES = Tile::BN * Tile::KB;
  static constexpr int STAGE_BYTES = A_BYTES + (kQuant ? QuantStage<LB, Tile::BN, BK>::BYTES : B_TILE_BYTES);
  static constexpr int BYTES = Tile::STAGES * STAGE_BYTES + (kQuant ? 2 * B_TILE_BYTES : 0);
};

#if defined(SIMT_DEVICE_PATH)
template <class E>
__device__ __forceinline__ float load_elem(const void* base, long long i) {
  return E::to_float(static_cast<const typename E::storage*>(base)[i]);
}

// ---- the K-segment cursor ----------------------------------------------------------------------------
// Walks the k-tiles of a block's segment list in order: segment by segment, BK elements at a time.
struct SegmentList {
  const Segment* list;  // per row tile list (device memory), or null: p.seg0 / p.seg1
  int count;
  __device__ __forceinline__ Segment get(const Params& p, int i) const {
    return list ? list[i] : (i == 0 ? p.seg0 : p.seg1);
  }
};

__device__ __forceinline__ SegmentList segments_of(const Params& p, int m_tile) {
  if (p.tile_segments) {
    const int begin = p.tile_segment_begin[m_tile];
    return {p.tile_segments + begin, p.tile_segment_begin[m_tile + 1] - begin};
  }
  return {nullptr, p.num_segments};
}

template <int BK>
__device__ __forceinline__ int tiles_of(const Segment& s) {
  return segment_tiles(s, BK);
}

// Walks the k-tiles of a block's segment list in order: segment by segment (both passes of a
// segment with a_lo / b_lo), BK elements at a time. Only indices are kept: a segment's fields are
// read (from the kernel parameters or the tile's list) where a pass starts, which keeps ~16
// registers of pointers and sizes out of the mainloop.
template <int BK>
struct Cursor {
  int index = 0;  // segment
  int tile = 0;   // k-tile within the segment, over both passes
  int tiles = 0;  // k-tiles of the segment, both passes
  int pass = 0;   // k-tiles of one pass

  // Positions the cursor at global k-tile `kt` of the list (split-K starts mid-list).
  __device__ __forceinline__ void start(const Params& p, const SegmentList& l, int kt) {
    for (index = 0;; ++index) {
      measure(l.get(p, index));
      if (kt < tiles || index + 1 >= l.count) break;
      kt -= tiles;
    }
    tile = kt;
  }
  __device__ __forceinline__ void next(const Params& p, const SegmentList& l) {
    if (++tile < tiles || index + 1 >= l.count) return;
    do measure(l.get(p, ++index));
    while (tiles == 0 && index + 1 < l.count);
    tile = 0;
  }
  __device__ __forceinline__ bool second_pass() const { return tile >= pass; }
  __device__ __forceinline__ bool pass_begins() const { return tile == 0 || tile == pass; }
  __device__ __forceinline__ int k0() const { return (second_pass() ? tile - pass : tile) * BK; }
  // This pass's operands: the second pass reads a_lo / b_lo where set.
  __device__ __forceinline__ const void* a(const Segment& s) const { return second_pass() && s.a_lo ? s.a_lo : s.a; }
  __device__ __forceinline__ const void* b(const Segment& s) const { return second_pass() && s.b_lo ? s.b_lo : s.b; }

 private:
  __device__ __forceinline__ void measure(const Segment& s) {
    tiles = tiles_of<BK>(s);
    pass = (s.k + BK - 1) / BK;
  }
};

// ---- epilogues ----------------------------------------------------------------------------------------
// V consecutive columns [col, col + V) of row `row` (row < m checked by the caller? no: here).
template <class E, int V>
__device__ __forceinline__ void store_run(const Epilogue& e, int m, int n, int row, int col, const float (&acc)[V]) {
  if (row >= m || col >= n) return;
  float scale = e.alpha;
  int rank = INT_MAX;
  if (e.row_group) {
    const int g = e.row_group[row];
    if (g < 0) {
      scale = 0.f;
      rank = 0;
    } else {
      if (e.group_scale) scale *= e.group_scale[g];
      if (e.group_rank) rank = e.group_rank[g];
    }
  }
  const long long out_row = e.row_index ? e.row_index[row] : row;
  float v[V];
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int c = col + i;
    float x = c < rank ? acc[i] * scale : 0.f;
    if (c < n) {
      const float cs = e.column_scale ? e.column_scale[c] : 1.f;  // ·1 + bias: exactly x + bias
      const float b = !e.bias ? 0.f : e.bias_f32 ? static_cast<const float*>(e.bias)[c] : load_elem<E>(e.bias, c);
      x = fmaf(x, cs, b);
      if (e.addend) x += e.addend[out_row * e.addend_stride + c];
    }
    v[i] = x;
  }
  if (e.out_f32) {
    float* y = static_cast<float*>(e.out) + out_row * e.out_stride + col;
    if constexpr (V == 2 || V == 4) {
      if (col + V <= n && reinterpret_cast<uintptr_t>(y) % (V * 4) == 0) {
        if constexpr (V == 2) *reinterpret_cast<float2*>(y) = make_float2(v[0], v[1]);
        else *reinterpret_cast<float4*>(y) = make_float4(v[0], v[1], v[2], v[3]);
        return;
      }
    }
#pragma unroll
    for (int i = 0; i < V; ++i)
      if (col + i < n) y[i] = v[i];
    return;
  }
  using S = typename E::storage;
  if (e.out_lo) {  // hi + lo: the residual of the first rounding, rounded
    S* lo = static_cast<S*>(e.out_lo) + out_row * e.out_stride + col;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if (col + i >= n) continue;
      const S hi = E::from_float(v[i]);
      lo[i] = E::from_float(v[i] - E::to_float(hi));
      v[i] = E::to_float(hi);
    }
  }
  S* y = static_cast<S*>(e.out) + out_row * e.out_stride + col;
  S s[V];
#pragma unroll
  for (int i = 0; i < V; ++i) s[i] = E::from_float(v[i]);
  if constexpr (sizeof(S) == 2 && (V == 2 || V == 4)) {
    if (col + V <= n && reinterpret_cast<uintptr_t>(y) % (V * 2) == 0) {
      if constexpr (V == 2) *reinterpret_cast<uint32_t*>(y) = static_cast<uint32_t>(s[0]) | (static_cast<uint32_t>(s[1]) << 16);
      else
        *reinterpret_cast<uint2*>(y) = make_uint2(static_cast<uint32_t>(s[0]) | (static_cast<uint32_t>(s[1]) << 16),
                                                  static_cast<uint32_t>(s[2]) | (static_cast<uint32_t>(s[3]) << 16));
      return;
    }
  }
#pragma unroll
  for (int i = 0; i < V; ++i)
    if (col + i < n) y[i] = s[i];
}

// Split-K: the raw accumulators of split z.
template <int V>
__device__ __forceinline__ void store_partial(const Params& p, int row, int col, const float (&acc)[V]) {
  if (row >= p.m) return;
  float* dst = p.partial + (static_cast<long long>(blockIdx.z) * p.m + row) * p.n + col;
#pragma unroll
  for (int i = 0; i < V; ++i)
    if (col + i < p.n) dst[i] = acc[i];
}

// Row-norm epilogue, first half: Σ over this thread's V columns of (alpha·acc + addend)².
template <class E, int V>
__device__ __forceinline__ float row_norm_terms(const Params& p, int row, int col, const float (&acc)[V]) {
  float s = 0.f;
  if (row >= p.m) return s;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    if (col + i >= p.n) continue;
    const float v = fmaf(p.epi.alpha, acc[i], load_elem<E>(p.row_norm.addend, row * p.row_norm.addend_stride + col + i));
    s = fmaf(v, v, s);
  }
  return s;
}

// Row-norm epilogue, second half: the block's per-row sums are added over the H threads that hold
// pieces of a row, in holder order, through shared memory (sums[H][BM]); one float32 per row and
// column tile goes to row_norm_partial. Deterministic: no atomics anywhere.
template <int BM, int NT, int H>
__device__ __forceinline__ void row_norm_finish(const Params& p, float* sums, int m0, int n_tile) {
  __syncthreads();
  for (int r = threadIdx.x; r < BM; r += NT) {
    float s = 0.f;
#pragma unroll 4
    for (int h = 0; h < H; ++h) s += sums[h * BM + r];
    if (m0 + r < p.m) p.row_norm_partial[static_cast<long long>(n_tile) * p.m + m0 + r] = s;
  }
}

// ---- block → tile -------------------------------------------------------------------------------------
// Grouped rasterization: blockIdx.x runs down groups of 8 row tiles, column by column, so that a
// wave of resident blocks covers a compact patch of C and reads each x and W tile of that patch
// from DRAM about once (L2 holds the rest). Napkin math (M = K = N = 8192, bf16, 128×256 tiles,
// 132 SMs): a wave is 8 row tiles × ~16 column tiles = 16 MiB of x + 66 MiB of W, against 128 MiB
// of x + 8 MiB of W for plain row-major order — fewer bytes per wave than a 50 MiB L2 misses.
struct TileCoord {
  int m_tile, n_tile, m0, n0;
};
template <int BM, int BN>
__device__ __forceinline__ TileCoord tile_coord(const Params& p) {
  constexpr int kGroup = 8;
  const int m_tiles = (p.m + BM - 1) / BM, n_tiles = (p.n + BN - 1) / BN;
  const int id = static_cast<int>(blockIdx.x), per_group = kGroup * n_tiles;
  const int first = id / per_group * kGroup, rows = cmin(m_tiles - first, kGroup), in_group = id % per_group;
  const int m_tile = first + in_group % rows, n_tile = in_group / rows;
  return {m_tile, n_tile, m_tile * BM, n_tile * BN};
}

// ---- the mma.sync mainloop ------------------------------------------------------------------------------
// Shared tiles are rows of ROW_BYTES bytes in 16-byte chunks. ldmatrix reads the same chunk of 8
// consecutive rows: the chunk index is XORed with bits of the row so that those 8 chunks land in 8
// different 16-byte bank groups (for 64-byte rows, two rows share a 128-byte line, so the row
// index is halved first). Writes (cp.async, one chunk per thread) use the same map.
template <int ROW_BYTES>
__device__ __forceinline__ int swizzle(int row, int chunk) {
  constexpr int C = ROW_BYTES / 16;
  constexpr int R = ROW_BYTES >= 128 ? 1 : 128 / ROW_BYTES;
  constexpr int MASK = (C < 8 ? C : 8) - 1;
  return chunk ^ ((row / R) & MASK);
}
template <int ROW_BYTES>
__device__ __forceinline__ unsigned char* chunk_at(unsigned char* tile, int row, int chunk) {
  return tile + row * ROW_BYTES + swizzle<ROW_BYTES>(row, chunk) * 16;
}

// One 16-byte chunk of a shared tile from global memory: `bytes` valid bytes at src (0 … 16), the
// rest zero. cp.async when the operand's rows are 16-byte aligned; element copies otherwise. With
// no valid bytes nothing is read, but cp.async still gets a global address: the operand's base.
template <class S>
__device__ __forceinline__ void copy_chunk(unsigned char* dst, const S* src, int bytes, bool vec) {
  if (vec) {
    ptx::cp_async_16(dst, src, bytes);
    return;
  }
  S* d = reinterpret_cast<S*>(dst);
  constexpr int VE = 16 / sizeof(S);
#pragma unroll
  for (int i = 0; i < VE; ++i) d[i] = static_cast<int>(i * sizeof(S)) < bytes ? src[i] : S(0);
}

__device__ __forceinline__ bool aligned16(const void* p, long long stride_bytes) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0 && stride_bytes % 16 == 0;
}

// Operand loaders. A thread copies the same chunks of every k-tile of a segment, so the row and
// column arithmetic (and the gather of x rows) is done once per segment pass, and a k-tile costs a
// pointer offset, a byte count and the copy per chunk: the warp schedulers issue the mma.sync
// stream, not address math (at ~1 mma per 4 clocks per scheduler, every integer op counts).
//
// K-major: ROWS rows (i0 …) × KB bytes of K; chunk e is row e / C, 16-byte column chunk e % C.
template <class S, int ROWS, int KB, int NT>
struct KMajorLoader {
  static constexpr int C = KB / 16, VE = 16 / static_cast<int>(sizeof(S)), PER = (ROWS * C + NT - 1) / NT;
  const S* src[PER];  // the chunk's row at k = 0, or null: a row this segment does not read
  const S* base;      // the operand (an address for copies that read nothing)
  int k_len;
  bool vec;

  __device__ __forceinline__ void init(const void* operand, long long stride, int i0, int limit, int lo, int hi,
                                       const int* gather, int k) {
    const S* g = static_cast<const S*>(operand);
    base = g;
    k_len = k;
    vec = aligned16(operand, stride * static_cast<long long>(sizeof(S)));
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int e = threadIdx.x + j * NT, i = i0 + e / C;
      const bool ok = e < ROWS * C && i < limit && i >= lo && i < hi;
      src[j] = ok ? g + (gather ? gather[i] : i) * stride + (e % C) * VE : nullptr;
    }
  }
  __device__ __forceinline__ void load(unsigned char* tile, int k0) const {
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int e = threadIdx.x + j * NT;
      if (ROWS * C % NT != 0 && e >= ROWS * C) continue;
      const int k = k0 + (e % C) * VE;
      const int bytes = src[j] ? cmax(0, cmin(16, (k_len - k) * static_cast<int>(sizeof(S)))) : 0;
      copy_chunk<S>(chunk_at<KB>(tile, e / C, e % C), bytes ? src[j] + k0 : base, bytes, vec);
    }
  }
};

// MN-major: BK rows of K (k0 …) × COLS columns (j0 …); chunk e is k-row e / C, column chunk e % C.
template <class S, int COLS, int BK, int NT>
struct MNMajorLoader {
  static constexpr int ROW_BYTES = COLS * static_cast<int>(sizeof(S)), C = ROW_BYTES / 16;
  static constexpr int VE = 16 / static_cast<int>(sizeof(S)), PER = (BK * C + NT - 1) / NT;
  const S* src[PER];  // the chunk at k = 0
  int col_bytes[PER];  // valid bytes of its columns (edge of M / N)
  const S* base;       // the operand (an address for copies that read nothing)
  long long stride;
  int k_len;
  bool vec;

  __device__ __forceinline__ void init(const void* operand, long long row_stride, int j0, int limit, int k) {
    const S* g = static_cast<const S*>(operand);
    base = g;
    stride = row_stride;
    k_len = k;
    vec = aligned16(operand, row_stride * static_cast<long long>(sizeof(S)));
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int e = threadIdx.x + j * NT, col = j0 + (e % C) * VE;
      src[j] = g + static_cast<long long>(e / C) * row_stride + col;
      col_bytes[j] = e < BK * C ? cmax(0, cmin(16, (limit - col) * static_cast<int>(sizeof(S)))) : 0;
    }
  }
  __device__ __forceinline__ void load(unsigned char* tile, int k0) const {
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int e = threadIdx.x + j * NT;
      if (BK * C % NT != 0 && e >= BK * C) continue;
      const int bytes = k0 + e / C < k_len ? col_bytes[j] : 0;
      copy_chunk<S>(chunk_at<ROW_BYTES>(tile, e / C, e % C), bytes ? src[j] + static_cast<long long>(k0) * stride : base, bytes, vec);
    }
  }
};

// ---- the dequantizing B operand (Problem::quant) ---------------------------------------------------
// A quantized weight is B of a segment (quant_b). The mainloop keeps B's plain shared tile — same
// layout, same swizzle, read by the same ldmatrix — but fills it itself, one k-tile ahead of the
// multiplication, into one of two such tiles after the stages (the Dequantizer):
//   * staged weights (rows 16-byte aligned: NF4 with k % 32 == 0, ternary with ⌈k/4⌉ % 16 == 0, and
//     aligned packed / absmax): the producer copies the k-tile's packed codes and the absmax chunks
//     they need into the stage with cp.async, in flight like any operand (QuantLoader), and the
//     Dequantizer turns them into dtype values: float32 code·absmax rounded once, 8 per 16-byte
//     chunk written;
//   * other quantized weights (odd k, views): each element's code and absmax read from global memory
//     by the Dequantizer — correct for any layout, not tuned;
//   * plain segments of the same mainloop (the low-rank term T·Bᵀ, dT·A): their B chunks copied from
//     global memory by the Dequantizer. One or two k-tiles per pass: their exposed load latency is
//     ~1-2% of a K = 4096 mainloop.
// Napkin math (128×256 tile, bf16, H100/H200): a k-tile is 256 rows × 32 codes = 4 KiB of NF4 + 4 KiB
// of absmax chunks through cp.async instead of 16 KiB of bf16 — the stage shrinks, and with the two
// dequantized tiles (2 × 16 KiB) the block keeps the plain 96 KiB. Registers, not shared memory,
// bound the blocks per SM (nvcc 13, sm_90, no spills): 255 for this tile (the plain one: 254), 168
// for 128×128 (plain: 128, two blocks per SM), so one block per SM for both. The block
// dequantizes 8192 values per k-tile: per value a table LDS, an FMUL and half a cvt.pack (~3.5 issue
// slots with the nibble shifts), ~110 per thread, i.e. ~220 issue slots per scheduler (2 warps) next
// to the 128 mma.sync (~512 clocks of tensor work) of the same k-tile: hidden, since each warp
// dequantizes k-tile i + 1 between the mma.sync of k-tile i and the compiler interleaves the two.
// Shared memory: + 8192 table lookups (256 wavefronts) + 16 KiB of stores (128) + 8 KiB of stage
// reads next to the 64 KiB (512 wavefronts) ldmatrix reads per k-tile: ~900 wavefronts in ~780
// clocks of mma.sync — the shared-memory pipe, not the tensor cores, bounds this tile (~1.15×).

// The producer's side of a staged quantized B: the chunk copies a thread issues per k-tile, set up
// once per segment pass (a k-tile then costs an offset and a copy per chunk).
template <Layout L, int BN, int BK, int NT>
struct QuantLoader {
  using Stage = QuantStage<L, BN, BK>;
  static constexpr int CH = Stage::CODE_CHUNKS + Stage::ABSMAX_CHUNKS, COPIES = Stage::ROWS * CH;
  static constexpr int PER = (COPIES + NT - 1) / NT;
  static_assert(BN % 64 == 0, "whole ternary chunks per MN-major row");
  const uint8_t* code[PER];  // a code chunk at k0 = 0, or null (an absmax chunk, or a row / column past the weight)
  long long flat[PER];       // an absmax chunk: the flattened element of its row's first column at k0 = 0, or −1
  const uint8_t* packed;
  const float* absmax;
  long long pitch, k, blocks;  // bytes of codes per weight row; the weight's row length; NF4 blocks
  int shift, tile_shift, rows;  // block = element >> shift; KK: chunk of the k-tile = k0 >> tile_shift

  __device__ __forceinline__ void init(const Params& p, int j0, int limit) {
    const QuantWeight& q = p.quant;
    const bool nf4 = q.format == QuantFormat::Nf4;
    packed = q.packed;
    absmax = q.absmax;
    k = q.k;
    pitch = nf4 ? q.k / 2 : ternary::row_bytes(q.k);
    blocks = nf4 ? nf4::blocks(q.n * q.k, q.block_size) : 0;
    shift = p.quant_shift;
    tile_shift = nf4 ? 5 : 6;
    rows = static_cast<int>(q.n);
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int e = threadIdx.x + j * NT, r = e / CH, c = e % CH;
      code[j] = nullptr;
      flat[j] = -1;
      if (e >= COPIES) continue;
      if constexpr (L == Layout::KMajor) {
        if (j0 + r >= limit) continue;
        if (c == 0) code[j] = packed + (j0 + r) * pitch;
        else if (nf4) flat[j] = static_cast<long long>(j0 + r) * q.k;
      } else if (c < Stage::CODE_CHUNKS) {
        const int col = j0 + c * (nf4 ? 32 : 64);
        if ((nf4 || c < BN / 64) && col < limit) code[j] = packed + r * pitch + col / (nf4 ? 2 : 4);
      } else if (nf4) {
        flat[j] = static_cast<long long>(r) * q.k + j0;
      }
    }
  }
  __device__ __forceinline__ void load(unsigned char* stage, int k0) const {
#pragma unroll
    for (int j = 0; j < PER; ++j) {
      const int e = threadIdx.x + j * NT;
      if (COPIES % NT != 0 && e >= COPIES) continue;
      const int r = e / CH, c = e % CH;
      unsigned char* dst = stage + r * Stage::ROW_BYTES + c * 16;
      if constexpr (L == Layout::KMajor) {
        if (code[j]) {
          ptx::cp_async_16(dst, code[j] + (k0 >> tile_shift) * 16);
        } else if (flat[j] >= 0) {
          const long long chunk = ((flat[j] + k0) >> shift) & ~3LL;
          ptx::cp_async_16(dst, absmax + chunk, static_cast<int>(cmin<long long>(16, 4 * (blocks - chunk))));
        }
      } else {
        const bool row_ok = k0 + r < rows;  // weight row k0 + r
        if (code[j]) {
          ptx::cp_async_16(dst, row_ok ? code[j] + static_cast<long long>(k0) * pitch : packed, row_ok ? 16 : 0);
        } else if (flat[j] >= 0) {
          const long long chunk = (((flat[j] + static_cast<long long>(k0) * k) >> shift) & ~3LL) + 4 * (c - Stage::CODE_CHUNKS);
          const int bytes = row_ok ? static_cast<int>(cmax<long long>(0, cmin<long long>(16, 4 * (blocks - chunk)))) : 0;
          ptx::cp_async_16(dst, bytes ? absmax + chunk : absmax, bytes);
        }
      }
    }
  }
};

// One k-tile of B into a dequantized tile (B's plain shared layout: K-major BN rows × BK values,
// MN-major BK rows × BN values): CPT chunks of 8 values per thread, chunk e = thread + c·NT (eight
// consecutive chunks per store phase: conflict-free under the swizzle). Its own cursor walks the
// k-tiles one ahead of the multiplication; the source is set up where a segment pass begins.
template <class E, Layout L, int BN, int BK, int NT>
struct Dequantizer {
  using S = typename E::storage;
  using Stage = QuantStage<L, BN, BK>;
  static constexpr int ROW_BYTES = L == Layout::KMajor ? BK * 2 : BN * 2, ROW_CHUNKS = ROW_BYTES / 16;
  static constexpr int CHUNKS = (L == Layout::KMajor ? BN : BK) * ROW_CHUNKS, CPT = CHUNKS / NT;
  static_assert(CHUNKS % NT == 0 && sizeof(S) == 2, "whole 16-bit chunks per thread");
  enum Source : int { kPlain, kStaged, kDirect };
  Cursor<BK> cur;
  bool fresh = true;  // no source set up yet (split-K may start mid-pass)
  int source = kPlain;
  const S* plain = nullptr;  // kPlain: the segment's operand (b, or b_lo on the second pass)
  long long stride = 0;
  int k_len = 0, limit = 0;  // the segment's reduction length; B's columns (KK: rows) that exist
  bool vec = false;          // kPlain: 16-byte loads

  // The 8 values of chunk (row, cc) at k-tile k0, zero outside the operand.
  __device__ __forceinline__ uint4 chunk(const Params& p, const float* table, const unsigned char* stage, int j0, int k0, int row,
                                         int cc) const {
    // (j, kk): B's column index and reduction index of the chunk's first value; the 8 values run along kk
    // (K-major) or j (MN-major).
    const int j = L == Layout::KMajor ? j0 + row : j0 + cc * 8;
    const int kk = L == Layout::KMajor ? k0 + cc * 8 : k0 + row;
    if (j >= limit || kk >= k_len) return uint4{0, 0, 0, 0};
    float v[8];
    const QuantWeight& q = p.quant;
    const bool nf4 = q.format == QuantFormat::Nf4;
    if (source == kPlain) {
      const S* src = plain + (L == Layout::KMajor ? static_cast<long long>(j) * stride + kk : static_cast<long long>(kk) * stride + j);
      const int valid = L == Layout::KMajor ? k_len - kk : limit - j;
      if (vec && valid >= 8) return *reinterpret_cast<const uint4*>(src);
#pragma unroll
      for (int t = 0; t < 8; ++t) v[t] = t < valid ? E::to_float(src[t]) : 0.f;
    } else if (source == kStaged) {
      const unsigned char* r = stage + row * Stage::ROW_BYTES;
      const long long w_row = L == Layout::KMajor ? j : kk;  // the weight's row and column of the first value
      const long long w_col = L == Layout::KMajor ? kk : j;
      if (nf4) {
        const long long first = ((w_row * q.k + (L == Layout::KMajor ? k0 : j0)) >> p.quant_shift) & ~3LL;
        const float am = reinterpret_cast<const float*>(r + Stage::CODE_CHUNKS * 16)[((w_row * q.k + w_col) >> p.quant_shift) - first];
        quant::nf4_decode<8>(table, *reinterpret_cast<const uint32_t*>(r + cc * 4), am, v);
      } else {
        const int byte = L == Layout::KMajor ? (k0 & 63) / 4 + cc * 2 : cc * 2;
        quant::ternary_decode<8>(table, *reinterpret_cast<const uint16_t*>(r + byte), v);
#pragma unroll
        for (int t = 0; t < 8; ++t) v[t] *= q.scale;
      }
    } else {
      const long long row_bytes = ternary::row_bytes(q.k);
#pragma unroll
      for (int t = 0; t < 8; ++t) {
        const long long w_row = L == Layout::KMajor ? j : kk, w_col = L == Layout::KMajor ? kk + t : j + t;
        const bool ok = L == Layout::KMajor ? kk + t < k_len : j + t < limit;
        v[t] = !ok ? 0.f : nf4 ? quant::nf4_element(table, q, p.quant_shift, w_row * q.k + w_col)
                               : quant::ternary_element(table, q, row_bytes, w_row, w_col);
      }
    }
    return uint4{E::pack2(v[0], v[1]), E::pack2(v[2], v[3]), E::pack2(v[4], v[5]), E::pack2(v[6], v[7])};
  }

  __device__ __forceinline__ void run(const Params& p, const SegmentList& list, const float* table, const unsigned char* stage,
                                      unsigned char* tile, int j0) {
    if (fresh || cur.pass_begins()) {
      fresh = false;
      const Segment s = list.get(p, cur.index);
      source = !s.quant_b ? kPlain : p.quant_staged ? kStaged : kDirect;
      plain = static_cast<const S*>(cur.b(s));
      stride = s.b_stride;
      k_len = s.k;
      limit = s.quant_b ? static_cast<int>(L == Layout::KMajor ? p.quant.n : p.quant.k) : cmin(p.n, s.cols_hi);
      vec = !s.quant_b && aligned16(plain, stride * static_cast<long long>(sizeof(S)));
    }
    const int k0 = cur.k0();
#pragma unroll
    for (int c = 0; c < CPT; ++c) {
      const int e = threadIdx.x + c * NT, row = e / ROW_CHUNKS, cc = e % ROW_CHUNKS;
      *reinterpret_cast<uint4*>(chunk_at<ROW_BYTES>(tile, row, cc)) = chunk(p, table, stage, j0, k0, row, cc);
    }
    cur.next(p, list);
  }
};

template <class Mma, class Tile, Layout LA, Layout LB, bool kQuant>
struct MmaMainloop {
  using E = typename Mma::E;
  using S = typename E::storage;
  static constexpr int ES = sizeof(S), BK = Tile::KB / ES, NT = Tile::NT;
  // Shared tile shapes: K-major = rows × KB bytes; MN-major = BK rows × (rows·ES) bytes.
  static constexpr int A_ROW_BYTES = LA == Layout::KMajor ? Tile::KB : Tile::BM * ES;
  static constexpr int B_ROW_BYTES = LB == Layout::KMajor ? Tile::KB : Tile::BN * ES;
  using Smem = MmaSmem<Mma, Tile, LB, kQuant>;
  static constexpr int A_BYTES = Smem::A_BYTES, B_TILE_BYTES = Smem::B_TILE_BYTES, STAGE_BYTES = Smem::STAGE_BYTES;
  static_assert(!Mma::kTf32 || (LA == Layout::KMajor && LB == Layout::KMajor), "TF32 operands must be K-major");
  static_assert(!kQuant || LA == Layout::KMajor, "quantized B: K-major A");

  using ALoader = std::conditional_t<LA == Layout::KMajor, KMajorLoader<S, Tile::BM, Tile::KB, NT>, MNMajorLoader<S, Tile::BM, BK, NT>>;
  using BLoader = std::conditional_t<kQuant, QuantLoader<LB, Tile::BN, BK, NT>,
                                     std::conditional_t<LB == Layout::KMajor, KMajorLoader<S, Tile::BN, Tile::KB, NT>, MNMajorLoader<S, Tile::BN, BK, NT>>>;

  // The producer side of the pipeline: walks the k-tiles and fills stages. With kQuant, B is copied
  // only for staged quantized segments (the Dequantizer reads the others from global memory).
  struct Producer {
    Cursor<BK> cur;
    ALoader a;
    BLoader b;
    bool fresh = true;     // no loaders set up yet (split-K may start mid-pass)
    bool copy_b = !kQuant;

    __device__ __forceinline__ void load(unsigned char* stage, const Params& p, const SegmentList& list, int m0, int n0) {
      if (fresh || cur.pass_begins()) {
        const Segment s = list.get(p, cur.index);
        if constexpr (LA == Layout::KMajor)
          a.init(cur.a(s), s.a_stride, m0, p.m, s.rows_lo, s.rows_hi, s.gather ? p.row_index : nullptr, s.k);
        else
          a.init(cur.a(s), s.a_stride, m0, p.m, s.k);
        if constexpr (kQuant) {
          copy_b = s.quant_b && p.quant_staged;
          if (copy_b) b.init(p, n0, static_cast<int>(LB == Layout::KMajor ? p.quant.n : p.quant.k));
        } else if constexpr (LB == Layout::KMajor) {
          b.init(cur.b(s), s.b_stride, n0, cmin(p.n, s.cols_hi), 0, INT_MAX, nullptr, s.k);
        } else {
          b.init(cur.b(s), s.b_stride, n0, cmin(p.n, s.cols_hi), s.k);
        }
        fresh = false;
      }
      const int k0 = cur.k0();
      a.load(stage, k0);
      if (!kQuant || copy_b) b.load(stage + A_BYTES, k0);
      cur.next(p, list);
    }
  };
  struct NoDequantizer {};
  using Dequant = std::conditional_t<kQuant, Dequantizer<E, LB, Tile::BN, BK, NT>, NoDequantizer>;

  // Fragments of k-step ks (32 bytes of K) for this warp (see the fragment layouts in
  // csrc/simt/README.md / the PTX ISA): A as m16 × k16 (4 registers), B as two n8 × k16 tiles per
  // ldmatrix.x4 (2 registers each).
  static __device__ __forceinline__ void load_fragments(unsigned char* a, unsigned char* b, int ks, int wm, int wn,
                                                        uint32_t (&af)[Tile::MF][4], uint32_t (&bf)[Tile::NF][2]) {
    const int lane = threadIdx.x % 32, j = lane / 8, r = lane % 8;
#pragma unroll
    for (int mf = 0; mf < Tile::MF; ++mf) {
      const int m = wm * Tile::WM + mf * 16;
      if constexpr (LA == Layout::KMajor) {
        ptx::ldmatrix_x4(af[mf], chunk_at<A_ROW_BYTES>(a, m + lane % 16, ks * 2 + lane / 16));
      } else {
        ptx::ldmatrix_x4_trans(af[mf], chunk_at<A_ROW_BYTES>(a, ks * 16 + r + 8 * (j / 2), (m + 8 * (j % 2)) / 8));
      }
    }
#pragma unroll
    for (int nf = 0; nf < Tile::NF; nf += 2) {
      const int n = wn * Tile::WN + nf * 8;
      uint32_t q[4];
      if constexpr (LB == Layout::KMajor) {
        ptx::ldmatrix_x4(q, chunk_at<B_ROW_BYTES>(b, n + r + 8 * (j / 2), ks * 2 + j % 2));
      } else {
        ptx::ldmatrix_x4_trans(q, chunk_at<B_ROW_BYTES>(b, ks * 16 + r + 8 * (j % 2), (n + 8 * (j / 2)) / 8));
      }
      bf[nf][0] = q[0];
      bf[nf][1] = q[1];
      bf[nf + 1][0] = q[2];
      bf[nf + 1][1] = q[3];
    }
    if constexpr (Mma::kTf32) {  // the tensor core reads the top 19 bits: round, don't truncate
#pragma unroll
      for (int mf = 0; mf < Tile::MF; ++mf)
#pragma unroll
        for (int i = 0; i < 4; ++i) af[mf][i] = ptx::cvt_rna_tf32(__uint_as_float(af[mf][i]));
#pragma unroll
      for (int nf = 0; nf < Tile::NF; ++nf)
#pragma unroll
        for (int i = 0; i < 2; ++i) bf[nf][i] = ptx::cvt_rna_tf32(__uint_as_float(bf[nf][i]));
    }
  }
};

// Accumulator element (mf, nf, i) of this thread is C[row, col] with
// row = warp row + mf·16 + g + 8·(i / 2), col = warp column + nf·8 + 2q + (i % 2).
template <class Mma, class Tile, Layout LA, Layout LB, bool kRowNorm, bool kQuant>
__device__ __forceinline__ void mma_gemm(const Params& p) {
  using ML = MmaMainloop<Mma, Tile, LA, LB, kQuant>;
  using E = typename Mma::E;
  constexpr int BK = ML::BK, STAGES = Tile::STAGES;
  // k-tiles dequantized ahead of the multiplication: a quantized B's stage is read one iteration
  // before its mma.sync, so one stage fewer is in flight when the loop waits.
  constexpr int kAhead = kQuant ? 1 : 0;
  static_assert(!(kQuant && kRowNorm), "no row norms of a quantized weight");
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  __shared__ float table[kQuant ? quant::kTableSize : 1];  // kQuant: the format's code values
  auto dequantized = [&](int i) { return smem + STAGES * ML::STAGE_BYTES + (i % 2) * ML::B_TILE_BYTES; };
  const TileCoord tc = tile_coord<Tile::BM, Tile::BN>(p);
  const SegmentList list = segments_of(p, tc.m_tile);
  int total = 0;
  for (int i = 0; i < list.count; ++i) total += tiles_of<BK>(list.get(p, i));
  const int seg0_tiles = list.count > 0 ? tiles_of<BK>(list.get(p, 0)) : 0;
  const int kt_begin = static_cast<int>(blockIdx.z) * p.ktiles_per_split;
  const int kt_end = cmin(total, kt_begin + p.ktiles_per_split);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, wm = warp / Tile::WARPS_N, wn = warp % Tile::WARPS_N;
  float acc[Tile::MF][Tile::NF][4];
#pragma unroll
  for (int mf = 0; mf < Tile::MF; ++mf)
#pragma unroll
    for (int nf = 0; nf < Tile::NF; ++nf)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mf][nf][i] = 0.f;

  // The pipeline: STAGES - 1 k-tiles in flight ahead of the one being multiplied. At iteration i,
  // groups 0 … i + kAhead have landed after the wait; the load issued then refills the stage that
  // iteration i - 1 read (and, with kAhead, that iteration i - 2 dequantized), which every warp has
  // left (the barrier). With kQuant, iteration i dequantizes k-tile i + 1 into the dequantized tile
  // that iteration i - 1 multiplied, and multiplies k-tile i from the other one.
  typename ML::Producer producer;
  if (kt_begin < kt_end) producer.cur.start(p, list, kt_begin);
  int issued = kt_begin;
#pragma unroll
  for (int s = 0; s < STAGES - 1; ++s) {
    if (issued < kt_end) {
      producer.load(smem + s * ML::STAGE_BYTES, p, list, tc.m0, tc.n0);
      ++issued;
    }
    ptx::cp_async_commit();
  }
  typename ML::Dequant dq;
  if constexpr (kQuant) {
    quant::fill_table(table, p.quant.format);
    ptx::cp_async_wait<STAGES - 2>();
    __syncthreads();  // k-tile kt_begin's stage and the table
    if (kt_begin < kt_end) {
      dq.cur.start(p, list, kt_begin);
      dq.run(p, list, table, smem + ML::A_BYTES, dequantized(0), tc.n0);
    }
  }
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    ptx::cp_async_wait<STAGES - 2 - kAhead>();
    __syncthreads();
    const int i = kt - kt_begin;
    if (issued < kt_end) {
      producer.load(smem + ((i + STAGES - 1) % STAGES) * ML::STAGE_BYTES, p, list, tc.m0, tc.n0);
      ++issued;
    }
    ptx::cp_async_commit();
    if constexpr (kQuant) {
      if (kt + 1 < kt_end) dq.run(p, list, table, smem + ((i + 1) % STAGES) * ML::STAGE_BYTES + ML::A_BYTES, dequantized(i + 1), tc.n0);
    }
    unsigned char* stage = smem + (i % STAGES) * ML::STAGE_BYTES;
    unsigned char* b_tile = kQuant ? dequantized(i) : stage + ML::A_BYTES;
#pragma unroll
    for (int ks = 0; ks < Tile::KB / 32; ++ks) {
      uint32_t af[Tile::MF][4], bf[Tile::NF][2];
      ML::load_fragments(stage, b_tile, ks, wm, wn, af, bf);
#pragma unroll
      for (int mf = 0; mf < Tile::MF; ++mf)
#pragma unroll
        for (int nf = 0; nf < Tile::NF; ++nf) Mma::mma(acc[mf][nf], af[mf], bf[nf]);
    }
    // Between segment 0 and the rest: the backward's dropout mask (dT·A, elementwise) and
    // quant.matmul's per-output gate (T·Bᵀ, per column) apply to the segment-0 term only.
    if ((p.acc_mask || p.acc_col_scale) && kt < seg0_tiles && (kt == seg0_tiles - 1 || kt == kt_end - 1)) {
#pragma unroll
      for (int mf = 0; mf < Tile::MF; ++mf)
#pragma unroll
        for (int nf = 0; nf < Tile::NF; ++nf)
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const int row = tc.m0 + wm * Tile::WM + mf * 16 + lane / 4 + 8 * (i / 2);
            const int col = tc.n0 + wn * Tile::WN + nf * 8 + 2 * (lane % 4) + i % 2;
            if (row < p.m && col < p.n)
              acc[mf][nf][i] *= (p.acc_mask ? load_elem<E>(p.acc_mask, static_cast<long long>(row) * p.acc_mask_stride + col) : 1.f) *
                                (p.acc_col_scale ? p.acc_col_scale[col] : 1.f);
          }
    }
  }
  ptx::cp_async_wait<0>();
  __syncthreads();

  const int g = lane / 4, q = lane % 4;
  if constexpr (kRowNorm) {
    // Rows are held by the 4 lanes of a quad (q) in each of the WARPS_N warps of a warp row.
    float* sums = reinterpret_cast<float*>(smem);  // [WARPS_N · 4][BM]
#pragma unroll
    for (int mf = 0; mf < Tile::MF; ++mf)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row_in_tile = wm * Tile::WM + mf * 16 + g + 8 * h;
        float s = 0.f;
#pragma unroll
        for (int nf = 0; nf < Tile::NF; ++nf) {
          const float pair[2] = {acc[mf][nf][2 * h], acc[mf][nf][2 * h + 1]};
          s += row_norm_terms<E, 2>(p, tc.m0 + row_in_tile, tc.n0 + wn * Tile::WN + nf * 8 + 2 * q, pair);
        }
        sums[(wn * 4 + q) * Tile::BM + row_in_tile] = s;
      }
    row_norm_finish<Tile::BM, Tile::NT, Tile::WARPS_N * 4>(p, sums, tc.m0, tc.n_tile);
  } else {
    const bool split = gridDim.z > 1;
#pragma unroll
    for (int mf = 0; mf < Tile::MF; ++mf)
#pragma unroll
      for (int nf = 0; nf < Tile::NF; ++nf)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = tc.m0 + wm * Tile::WM + mf * 16 + g + 8 * h;
          const int col = tc.n0 + wn * Tile::WN + nf * 8 + 2 * q;
          const float pair[2] = {acc[mf][nf][2 * h], acc[mf][nf][2 * h + 1]};
          if (split) store_partial<2>(p, row, col, pair);
          else store_run<E, 2>(p.epi, p.m, p.n, row, col, pair);
        }
  }
}
#endif  // SIMT_DEVICE_PATH

template <class Mma, class Tile, Layout LA, Layout LB, bool kRowNorm, bool kQuant>
__global__ void __launch_bounds__(Tile::NT) gemm_mma_kernel(Params p) {
#if defined(SIMT_DEVICE_PATH)
  if constexpr (SIMT_CUDA_ARCH >= 800) {
    mma_gemm<Mma, Tile, LA, LB, kRowNorm, kQuant>(p);
  } else {
    simt_trap();  // the dispatcher never picks a tensor-core kernel below sm_80
  }
#endif
}

// ---- the FMA mainloop ---------------------------------------------------------------------------------
// Exact float32 (and every dtype on sm_75): 256 threads, BM×BN outputs in TM×TN per thread, K in
// tiles of 8 staged transposed in shared memory ([k][m] and [k][n], padded by 4 so that the
// transposing stores of two k-rows hit different banks), double-buffered: the next tile's global
// loads are in registers while the current one is multiplied. A thread's rows are TM/4 groups of 4
// at stride BM/(TM/4): each group is one 16-byte shared load, shared by the 16 threads of a row
// (a broadcast), and its columns likewise, so the inner loop is (TM + TN)/4 loads per TM·TN FMAs.
// Napkin math (128×128, H100/H200): 64 FMAs per 4 LDS.128 per k; a k-tile is 8·128·(4+4) bytes of
// loads per 128·128·8·2 = 262 kFLOP; at ~50 TFLOP/s the block streams 32 B/FLOP·… i.e. it is
// FMA-bound once two blocks per SM hide the global latency.
template <int BM_, int BN_>
struct FmaTile {
  static constexpr int BM = BM_, BN = BN_, BK = 8, NT = 256, TM = BM / 16, TN = BN / 16;
  static constexpr int HM = TM / 4, HN = TN / 4;  // 16-byte groups per thread
  static constexpr int LDA = BM + 4, LDB = BN + 4;
  static constexpr int SMEM_FLOATS = 2 * BK * (LDA + LDB);
  static_assert(TM % 4 == 0 && TN % 4 == 0, "FMA tile");
};

#if defined(SIMT_DEVICE_PATH)
// One operand's share of a k-tile in registers: each thread loads up to CH runs of 4 consecutive
// elements (along K for K-major operands, along M/N for MN-major ones), converted to float.
template <class E, Layout L, int ROWS, int NT>
struct FmaOperandLoad {
  static constexpr int BK = 8;
  static constexpr int RUNS = ROWS * BK / 4, CH = (RUNS + NT - 1) / NT;
  float v[CH][4];

  __device__ __forceinline__ void fetch(const void* base, long long stride, int i0, int limit, int lo, int hi,
                                        const int* gather, int k0, int k_len) {
    using S = typename E::storage;
    const S* g = static_cast<const S*>(base);
    const bool vec = reinterpret_cast<uintptr_t>(base) % (4 * sizeof(S)) == 0 && (stride * sizeof(S)) % (4 * sizeof(S)) == 0;
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int e = threadIdx.x + c * NT;
#pragma unroll
      for (int t = 0; t < 4; ++t) v[c][t] = 0.f;
      if (e >= RUNS) continue;
      if constexpr (L == Layout::KMajor) {
        const int row = e / (BK / 4), k = k0 + (e % (BK / 4)) * 4, i = i0 + row;
        if (i >= limit || i < lo || i >= hi) continue;
        const S* src = g + (gather ? gather[i] : i) * stride + k;
        if (vec && k + 4 <= k_len) load4(src, v[c]);
        else
          for (int t = 0; t < 4; ++t) v[c][t] = k + t < k_len ? E::to_float(src[t]) : 0.f;
      } else {
        const int k = k0 + e / (ROWS / 4), j = i0 + (e % (ROWS / 4)) * 4;
        if (k >= k_len) continue;
        const S* src = g + static_cast<long long>(k) * stride + j;
        if (vec && j + 4 <= limit) load4(src, v[c]);
        else
          for (int t = 0; t < 4; ++t) v[c][t] = j + t < limit ? E::to_float(src[t]) : 0.f;
      }
    }
  }
  // A quantized B (Problem::quant, a segment with quant_b) in the same runs of 4: K-major, weight row
  // i0 + row, reduction k … k + 3; MN-major, weight row k, columns j … j + 3. Values are float32
  // code·absmax rounded to the dtype (as the mma.sync path's dequantized tiles hold them). A run of
  // 4 NF4 codes is 2 bytes and one absmax when it starts on a byte inside one block (rows with an
  // even k); ternary runs start on a byte (k and j are multiples of 4), one byte per run.
  __device__ __forceinline__ void fetch_quant(const Params& p, const float* table, int i0, int limit, int k0, int k_len) {
    const QuantWeight& q = p.quant;
    const bool nf4 = q.format == QuantFormat::Nf4;
    const long long row_bytes = ternary::row_bytes(q.k);
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int e = threadIdx.x + c * NT;
#pragma unroll
      for (int t = 0; t < 4; ++t) v[c][t] = 0.f;
      if (e >= RUNS) continue;
      long long w_row, w_col;
      int count;
      if constexpr (L == Layout::KMajor) {
        const int i = i0 + e / (BK / 4), k = k0 + (e % (BK / 4)) * 4;
        if (i >= limit) continue;
        w_row = i;
        w_col = k;
        count = k_len - k;
      } else {
        const int k = k0 + e / (ROWS / 4), j = i0 + (e % (ROWS / 4)) * 4;
        if (k >= k_len) continue;
        w_row = k;
        w_col = j;
        count = limit - j;
      }
      float f[4];
      if (count <= 0) continue;
      if (!nf4) {
        quant::ternary_decode<4>(table, q.packed[w_row * row_bytes + w_col / 4], f);
#pragma unroll
        for (int t = 0; t < 4; ++t) f[t] *= q.scale;
      } else {
        const long long e0 = w_row * q.k + w_col;
        if (count >= 4 && e0 % 2 == 0 && e0 >> p.quant_shift == (e0 + 3) >> p.quant_shift) {
          const uint32_t bytes = q.packed[e0 / 2] | static_cast<uint32_t>(q.packed[e0 / 2 + 1]) << 8;
          quant::nf4_decode<4>(table, bytes, quant::block_absmax(q, e0 >> p.quant_shift), f);
        } else {
#pragma unroll
          for (int t = 0; t < 4; ++t) f[t] = t < count ? quant::nf4_element(table, q, p.quant_shift, e0 + t) : 0.f;
        }
      }
#pragma unroll
      for (int t = 0; t < 4; ++t) v[c][t] = t < count ? E::to_float(E::from_float(f[t])) : 0.f;
    }
  }
  // Stored as s[k][row] (row stride LD), transposed for K-major runs.
  template <int LD>
  __device__ __forceinline__ void stash(float* s) const {
#pragma unroll
    for (int c = 0; c < CH; ++c) {
      const int e = threadIdx.x + c * NT;
      if (e >= RUNS) continue;
      if constexpr (L == Layout::KMajor) {
        const int row = e / (BK / 4), k = (e % (BK / 4)) * 4;
#pragma unroll
        for (int t = 0; t < 4; ++t) s[(k + t) * LD + row] = v[c][t];
      } else {
        const int k = e / (ROWS / 4), j = (e % (ROWS / 4)) * 4;
        *reinterpret_cast<float4*>(s + k * LD + j) = make_float4(v[c][0], v[c][1], v[c][2], v[c][3]);
      }
    }
  }

 private:
  template <class S>
  static __device__ __forceinline__ void load4(const S* src, float (&out)[4]) {
    if constexpr (sizeof(S) == 4) {
      const float4 u = *reinterpret_cast<const float4*>(src);
      out[0] = u.x;
      out[1] = u.y;
      out[2] = u.z;
      out[3] = u.w;
    } else {
      const uint2 u = *reinterpret_cast<const uint2*>(src);
      out[0] = E::to_float(static_cast<S>(u.x & 0xffffu));
      out[1] = E::to_float(static_cast<S>(u.x >> 16));
      out[2] = E::to_float(static_cast<S>(u.y & 0xffffu));
      out[3] = E::to_float(static_cast<S>(u.y >> 16));
    }
  }
};

template <class E, class Tile, Layout LA, Layout LB, bool kRowNorm, bool kQuant>
__device__ __forceinline__ void fma_gemm(const Params& p) {
  constexpr int BK = Tile::BK, NT = Tile::NT, TM = Tile::TM, TN = Tile::TN;
  static_assert(!(kQuant && kRowNorm), "no row norms of a quantized weight");
  SIMT_DYNAMIC_SHARED(float, smem);
  __shared__ float table[kQuant ? quant::kTableSize : 1];  // kQuant: the format's code values
  if constexpr (kQuant) {
    quant::fill_table(table, p.quant.format);
    __syncthreads();
  }
  const TileCoord tc = tile_coord<Tile::BM, Tile::BN>(p);
  const SegmentList list = segments_of(p, tc.m_tile);
  int total = 0;
  for (int i = 0; i < list.count; ++i) total += tiles_of<BK>(list.get(p, i));
  const int seg0_tiles = list.count > 0 ? tiles_of<BK>(list.get(p, 0)) : 0;
  const int kt_begin = static_cast<int>(blockIdx.z) * p.ktiles_per_split;
  const int kt_end = cmin(total, kt_begin + p.ktiles_per_split);
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;

  float acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; ++i)
#pragma unroll
    for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;
  // Thread rows / columns of the tile: group h of 4 at h·(BM / HM) + 4·ty.
  auto row_of = [&](int i) { return (i / 4) * (Tile::BM / Tile::HM) + 4 * ty + i % 4; };
  auto col_of = [&](int j) { return (j / 4) * (Tile::BN / Tile::HN) + 4 * tx + j % 4; };

  FmaOperandLoad<E, LA, Tile::BM, NT> a_load;
  FmaOperandLoad<E, LB, Tile::BN, NT> b_load;
  auto fetch = [&](const Cursor<BK>& c) {
    const Segment s = list.get(p, c.index);
    a_load.fetch(c.a(s), s.a_stride, tc.m0, p.m, s.rows_lo, s.rows_hi, s.gather ? p.row_index : nullptr, c.k0(), s.k);
    if (kQuant && s.quant_b)
      b_load.fetch_quant(p, table, tc.n0, static_cast<int>(LB == Layout::KMajor ? p.quant.n : p.quant.k), c.k0(), s.k);
    else
      b_load.fetch(c.b(s), s.b_stride, tc.n0, cmin(p.n, s.cols_hi), 0, INT_MAX, nullptr, c.k0(), s.k);
  };
  auto buffer = [&](int b) { return smem + b * BK * (Tile::LDA + Tile::LDB); };

  Cursor<BK> cur;
  if (kt_begin < kt_end) {
    cur.start(p, list, kt_begin);
    fetch(cur);
    cur.next(p, list);
    a_load.template stash<Tile::LDA>(buffer(0));
    b_load.template stash<Tile::LDB>(buffer(0) + BK * Tile::LDA);
  }
  __syncthreads();
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    const int i = kt - kt_begin;
    const bool more = kt + 1 < kt_end;
    if (more) {
      fetch(cur);
      cur.next(p, list);
    }
    const float* As = buffer(i % 2);
    const float* Bs = As + BK * Tile::LDA;
#pragma unroll
    for (int k = 0; k < BK; ++k) {
      float av[TM], bv[TN];
#pragma unroll
      for (int h = 0; h < Tile::HM; ++h) {
        const float4 u = *reinterpret_cast<const float4*>(As + k * Tile::LDA + h * (Tile::BM / Tile::HM) + 4 * ty);
        av[4 * h] = u.x;
        av[4 * h + 1] = u.y;
        av[4 * h + 2] = u.z;
        av[4 * h + 3] = u.w;
      }
#pragma unroll
      for (int h = 0; h < Tile::HN; ++h) {
        const float4 u = *reinterpret_cast<const float4*>(Bs + k * Tile::LDB + h * (Tile::BN / Tile::HN) + 4 * tx);
        bv[4 * h] = u.x;
        bv[4 * h + 1] = u.y;
        bv[4 * h + 2] = u.z;
        bv[4 * h + 3] = u.w;
      }
#pragma unroll
      for (int a = 0; a < TM; ++a)
#pragma unroll
        for (int b = 0; b < TN; ++b) acc[a][b] = fmaf(av[a], bv[b], acc[a][b]);
    }
    if ((p.acc_mask || p.acc_col_scale) && kt < seg0_tiles && (kt == seg0_tiles - 1 || kt == kt_end - 1)) {
#pragma unroll
      for (int a = 0; a < TM; ++a)
#pragma unroll
        for (int b = 0; b < TN; ++b) {
          const int row = tc.m0 + row_of(a), col = tc.n0 + col_of(b);
          if (row < p.m && col < p.n)
            acc[a][b] *= (p.acc_mask ? load_elem<E>(p.acc_mask, static_cast<long long>(row) * p.acc_mask_stride + col) : 1.f) *
                         (p.acc_col_scale ? p.acc_col_scale[col] : 1.f);
        }
    }
    if (more) {  // the other buffer was last read in iteration i - 1, before the barrier below it
      float* next = buffer((i + 1) % 2);
      a_load.template stash<Tile::LDA>(next);
      b_load.template stash<Tile::LDB>(next + BK * Tile::LDA);
    }
    __syncthreads();
  }

  if constexpr (kRowNorm) {
    float* sums = smem;  // [16 tx][BM]; the k-loop's last barrier has passed
#pragma unroll
    for (int a = 0; a < TM; ++a) {
      float s = 0.f;
#pragma unroll
      for (int h = 0; h < Tile::HN; ++h) {
        const float run[4] = {acc[a][4 * h], acc[a][4 * h + 1], acc[a][4 * h + 2], acc[a][4 * h + 3]};
        s += row_norm_terms<E, 4>(p, tc.m0 + row_of(a), tc.n0 + col_of(4 * h), run);
      }
      sums[tx * Tile::BM + row_of(a)] = s;
    }
    row_norm_finish<Tile::BM, NT, 16>(p, sums, tc.m0, tc.n_tile);
  } else {
    const bool split = gridDim.z > 1;
#pragma unroll
    for (int a = 0; a < TM; ++a)
#pragma unroll
      for (int h = 0; h < Tile::HN; ++h) {
        const float run[4] = {acc[a][4 * h], acc[a][4 * h + 1], acc[a][4 * h + 2], acc[a][4 * h + 3]};
        const int row = tc.m0 + row_of(a), col = tc.n0 + col_of(4 * h);
        if (split) store_partial<4>(p, row, col, run);
        else store_run<E, 4>(p.epi, p.m, p.n, row, col, run);
      }
  }
}
#endif  // SIMT_DEVICE_PATH

// E: the element type. Float32 runs on every architecture; the 16-bit types only where the
// dispatcher sends them (sm_75, no mma.sync bf16 / cp.async), so other targets compile them to a trap.
template <class E, class Tile, Layout LA, Layout LB, bool kRowNorm, bool kQuant>
__global__ void __launch_bounds__(256) gemm_fma_kernel(Params p) {
#if defined(SIMT_DEVICE_PATH)
  if constexpr (std::is_same_v<E, F32> || SIMT_CUDA_ARCH < 800 || kEmulatedAllArchs) {
    fma_gemm<E, Tile, LA, LB, kRowNorm, kQuant>(p);
  } else {
    simt_trap();
  }
#endif
}

// ---- the split-K reduction --------------------------------------------------------------------
// y = epilogue(Σ_z partial[z]) for 4 consecutive columns per thread, z in order.
template <class E>
__global__ void __launch_bounds__(256) splitk_reduce_kernel(Params p, int splits) {
#if defined(SIMT_DEVICE_PATH)
  const int quads = (p.n + 3) / 4;
  const long long e = static_cast<long long>(blockIdx.x) * 256 + threadIdx.x;
  if (e >= static_cast<long long>(p.m) * quads) return;
  const int row = static_cast<int>(e / quads), col = static_cast<int>(e % quads) * 4;
  float v[4] = {0.f, 0.f, 0.f, 0.f};
  for (int z = 0; z < splits; ++z) {
    const float* src = p.partial + (static_cast<long long>(z) * p.m + row) * p.n + col;
#pragma unroll
    for (int i = 0; i < 4; ++i)
      if (col + i < p.n) v[i] += src[i];
  }
  store_run<E, 4>(p.epi, p.m, p.n, row, col, v);
#endif
}

}  // namespace lk::cuda_ops::gemm

// ---- launchers ---------------------------------------------------------------------------------------------
namespace lk::cuda_ops::gemm {

// The tile shapes the dispatcher chooses from (cuda/gemm.cu says when).
// Shared-memory traffic per MMA is what separates them: a warp tile of 64×64 reads 8 ldmatrix.x4
// (4 KiB) per 32 mma.sync (131 kFLOP), 64×32 reads 6 (3 KiB) per 16 (65 kFLOP): at the ~2.7 kFLOP/clk
// an SM's mma.sync sustains, ~84 vs ~124 B/clk of its 128 B/clk shared-memory bandwidth.
using WideTile = TileConfig<128, 256, 64, 2, 4, 4>;   // 8 warps of 64×64, 4 stages: 96 KiB
using BigTile = TileConfig<128, 128, 64, 2, 4, 4>;    // 8 warps of 64×32, 4 stages: 64 KiB
using SmallTile = TileConfig<64, 64, 64, 2, 2, 4>;    // 4 warps of 32×32, 4 stages: 32 KiB
using SkinnyTile = TileConfig<128, 32, 64, 4, 1, 4>;  // 4 warps of 32×32 (n ≤ 32: the low-rank shrinks), 40 KiB
using FmaLargeTile = FmaTile<128, 128>;
using FmaSmallTile = FmaTile<64, 64>;
enum class TileId : int { Big = 0, Small = 1, Skinny = 2, Wide = 3 };
enum class FmaTileId : int { Large = 0, Small = 1 };

struct Launch {
  int m_tiles, n_tiles, splits;
  cudaStream_t st;
  int device;
};

// Kernels with more than 48 KiB of dynamic shared memory must opt in, once per device.
template <class K>
void opt_in_smem(K* kernel, int bytes, int device) {
  if (bytes <= 48 * 1024) return;
  static std::atomic<uint64_t> done{0};
  const uint64_t bit = device < 64 ? 1ull << device : 0;
  if (bit && (done.load() & bit)) return;
  LK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  done.fetch_or(bit);
}

template <class Mma, class Tile, Layout LA, Layout LB, bool kRowNorm, bool kQuant = false>
void launch_mma(const Params& p, const Launch& l) {
  constexpr int smem = MmaSmem<Mma, Tile, LB, kQuant>::BYTES;
  static_assert(!kRowNorm || Tile::WARPS_N * 4 * Tile::BM * 4 <= smem, "row-norm sums fit in the pipeline's shared memory");
  auto* kernel = gemm_mma_kernel<Mma, Tile, LA, LB, kRowNorm, kQuant>;
  opt_in_smem(kernel, smem, l.device);
  simt_launch(kernel, dim3(l.m_tiles * l.n_tiles, 1, l.splits), dim3(Tile::NT), smem, l.st, p);
  LK_CUDA_CHECK_LAUNCH("gemm_mma_kernel launch");
}

template <class E, class Tile, Layout LA, Layout LB, bool kRowNorm, bool kQuant = false>
void launch_fma(const Params& p, const Launch& l) {
  constexpr int smem = Tile::SMEM_FLOATS * 4;
  static_assert(16 * Tile::BM <= Tile::SMEM_FLOATS, "row-norm sums fit in the tiles' shared memory");
  simt_launch(gemm_fma_kernel<E, Tile, LA, LB, kRowNorm, kQuant>, dim3(l.m_tiles * l.n_tiles, 1, l.splits), dim3(Tile::NT), smem, l.st, p);
  LK_CUDA_CHECK_LAUNCH("gemm_fma_kernel launch");
}

constexpr int variant_key(int tile, Layout la, Layout lb, bool row_norm) {
  return ((tile * 2 + static_cast<int>(la)) * 2 + static_cast<int>(lb)) * 2 + (row_norm ? 1 : 0);
}

// The one place where runtime choices become template constants, per element type (each type's
// kernels are instantiated in their own translation unit: cuda/gemm_<type>.cu). The combinations
// are the ones the ops use: KK = x·Wᵀ-like (forward, the shrinks), KN = g·W-like (gradInput, dT,
// DoRA's B·A), MN = gᵀ·T-like (gradA, gradB).
template <class Mma>
bool run_mma(TileId tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l) {
  constexpr Layout K = Layout::KMajor, N = Layout::MNMajor;
  const int t = static_cast<int>(tile);
  if constexpr (Mma::kTf32) {
    switch (variant_key(t, la, lb, row_norm)) {
      case variant_key(0, K, K, false): launch_mma<Mma, BigTile, K, K, false>(p, l); return true;
      case variant_key(1, K, K, false): launch_mma<Mma, SmallTile, K, K, false>(p, l); return true;
      case variant_key(2, K, K, false): launch_mma<Mma, SkinnyTile, K, K, false>(p, l); return true;
      case variant_key(3, K, K, false): launch_mma<Mma, WideTile, K, K, false>(p, l); return true;
      default: return false;
    }
  } else {
    switch (variant_key(t, la, lb, row_norm)) {
      case variant_key(0, K, K, false): launch_mma<Mma, BigTile, K, K, false>(p, l); return true;
      case variant_key(1, K, K, false): launch_mma<Mma, SmallTile, K, K, false>(p, l); return true;
      case variant_key(2, K, K, false): launch_mma<Mma, SkinnyTile, K, K, false>(p, l); return true;
      case variant_key(0, K, N, false): launch_mma<Mma, BigTile, K, N, false>(p, l); return true;
      case variant_key(1, K, N, false): launch_mma<Mma, SmallTile, K, N, false>(p, l); return true;
      case variant_key(2, K, N, false): launch_mma<Mma, SkinnyTile, K, N, false>(p, l); return true;
      case variant_key(1, N, N, false): launch_mma<Mma, SmallTile, N, N, false>(p, l); return true;
      case variant_key(2, N, N, false): launch_mma<Mma, SkinnyTile, N, N, false>(p, l); return true;
      case variant_key(3, K, K, false): launch_mma<Mma, WideTile, K, K, false>(p, l); return true;
      case variant_key(3, K, N, false): launch_mma<Mma, WideTile, K, N, false>(p, l); return true;
      case variant_key(0, K, N, true): launch_mma<Mma, BigTile, K, N, true>(p, l); return true;
      default: return false;
    }
  }
}

template <class E>
bool run_fma(FmaTileId tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l) {
  constexpr Layout K = Layout::KMajor, N = Layout::MNMajor;
  switch (variant_key(static_cast<int>(tile), la, lb, row_norm)) {
    case variant_key(0, K, K, false): launch_fma<E, FmaLargeTile, K, K, false>(p, l); return true;
    case variant_key(1, K, K, false): launch_fma<E, FmaSmallTile, K, K, false>(p, l); return true;
    case variant_key(0, K, N, false): launch_fma<E, FmaLargeTile, K, N, false>(p, l); return true;
    case variant_key(1, K, N, false): launch_fma<E, FmaSmallTile, K, N, false>(p, l); return true;
    case variant_key(1, N, N, false): launch_fma<E, FmaSmallTile, N, N, false>(p, l); return true;
    case variant_key(0, K, N, true): launch_fma<E, FmaLargeTile, K, N, true>(p, l); return true;
    default: return false;
  }
}

// The quantized-B kernels (Problem::quant): forward x·deq(W)ᵀ (KK) and gradInput g·deq(W) (KN);
// no 128×32 tile (n ≤ 32 takes 64×64) and no MN-major A.
template <class Mma>
bool run_mma_quant(TileId tile, Layout la, Layout lb, const Params& p, const Launch& l) {
  constexpr Layout K = Layout::KMajor, N = Layout::MNMajor;
  switch (variant_key(static_cast<int>(tile), la, lb, false)) {
    case variant_key(3, K, K, false): launch_mma<Mma, WideTile, K, K, false, true>(p, l); return true;
    case variant_key(0, K, K, false): launch_mma<Mma, BigTile, K, K, false, true>(p, l); return true;
    case variant_key(1, K, K, false): launch_mma<Mma, SmallTile, K, K, false, true>(p, l); return true;
    case variant_key(0, K, N, false): launch_mma<Mma, BigTile, K, N, false, true>(p, l); return true;
    case variant_key(1, K, N, false): launch_mma<Mma, SmallTile, K, N, false, true>(p, l); return true;
    default: return false;
  }
}

template <class E>
bool run_fma_quant(FmaTileId tile, Layout la, Layout lb, const Params& p, const Launch& l) {
  constexpr Layout K = Layout::KMajor, N = Layout::MNMajor;
  switch (variant_key(static_cast<int>(tile), la, lb, false)) {
    case variant_key(0, K, K, false): launch_fma<E, FmaLargeTile, K, K, false, true>(p, l); return true;
    case variant_key(1, K, K, false): launch_fma<E, FmaSmallTile, K, K, false, true>(p, l); return true;
    case variant_key(0, K, N, false): launch_fma<E, FmaLargeTile, K, N, false, true>(p, l); return true;
    case variant_key(1, K, N, false): launch_fma<E, FmaSmallTile, K, N, false, true>(p, l); return true;
    default: return false;
  }
}

template <class E>
void launch_splitk_reduce(const Params& p, int splits, cudaStream_t st) {
  const long long threads = static_cast<long long>(p.m) * ((p.n + 3) / 4);
  simt_launch(splitk_reduce_kernel<E>, dim3(static_cast<unsigned>((threads + 255) / 256)), dim3(256), 0, st, p, splits);
  LK_CUDA_CHECK_LAUNCH("splitk_reduce_kernel launch");
}

// Per mainloop and element type, each in its own translation unit so that they compile in
// parallel (and a mutant of the mma.sync mainloop recompiles one): cuda/gemm_mma_f16.cu,
// gemm_mma_bf16.cu, gemm_mma_tf32.cu, gemm_fma_f32.cu, gemm_fma_f16.cu (float16 and bfloat16 on sm_75).
bool run_mma_f16(TileId tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l);
bool run_mma_bf16(TileId tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l);
bool run_mma_tf32(TileId tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l);
bool run_fma_f32(FmaTileId tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l);
bool run_fma_half(DType dtype, FmaTileId tile, Layout la, Layout lb, bool row_norm, const Params& p, const Launch& l);
// The Hopper mainloop (cuda/gemm_wgmma.cu, sm_90a): the TMA tensor maps of each segment pass
// (2·segment + pass), passed as a __grid_constant__ kernel parameter next to Params.
struct HopperMaps {
  ptx::TensorMap a[4], b[4];
};
// Whether the wgmma mainloop covers the problem: float16 / bfloat16, K-major A, B either way, a
// regular list of at most two plain segments (no row ranges, gathers or quantized B; a mask or gate
// between segment 0 and the rest is fine), 16-byte aligned operands and row strides (TMA), the
// store epilogue.
bool wgmma_covers(const Problem& pr);
// Its tile width: 256 when 128×256 tiles fill the SMs and no mask or gate sits between segments, else 128.
int wgmma_tile_n(const Problem& pr, bool wide_fills_sms);
// Launches it on 128×bn tiles (bn from wgmma_tile_n), no split-K.
void run_wgmma(const Problem& pr, const Params& p, int bn, const Launch& l);
int wgmma_stages(int bn);
// Quantized B: cuda/gemm_mma_quant_f16.cu, gemm_mma_quant_bf16.cu, gemm_fma_quant.cu (every dtype).
bool run_mma_quant_f16(TileId tile, Layout la, Layout lb, const Params& p, const Launch& l);
bool run_mma_quant_bf16(TileId tile, Layout la, Layout lb, const Params& p, const Launch& l);
bool run_fma_quant(DType dtype, FmaTileId tile, Layout la, Layout lb, const Params& p, const Launch& l);

}  // namespace lk::cuda_ops::gemm
