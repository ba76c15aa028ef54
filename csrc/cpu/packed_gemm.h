// Pieces shared by the packed CPU GEMM kernels (csrc/cpu/lora_linear.cpp, lora_backward.cpp):
// per-thread scratch buffers, the float32 bias of the epilogues, dot-product tiles against rows of
// a weight-like matrix, row widening and masking, the split of a reduction dimension into cache
// blocks, and the packed MR-row left panels the micro-kernel of gemm_microkernel.h reads.
//
// Include only from csrc/cpu/*.cpp (inside no namespace); everything lands in
// lk::cpu::LK_SIMD_NS, so each SIMD level gets its own copy.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>

#include "core/parallel.h"
#include "cpu/gemm_microkernel.h"
#include "cpu/vec.h"

namespace lk::cpu::LK_SIMD_NS {

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// A grow-only, 64-byte aligned float buffer. The kernels keep a few per thread (thread_local), so
// after the first call of a given size nothing is allocated.
class AlignedScratch {
 public:
  AlignedScratch() = default;
  AlignedScratch(const AlignedScratch&) = delete;
  AlignedScratch& operator=(const AlignedScratch&) = delete;
  ~AlignedScratch() { release(); }

  float* floats(int64_t count) {
    const size_t needed = static_cast<size_t>(round_up(std::max<int64_t>(count, 1), 16));
    if (needed > capacity_) {
      release();
      data_ = static_cast<float*>(::operator new(needed * sizeof(float), std::align_val_t{64}));
      capacity_ = needed;
    }
    return data_;
  }

 private:
  void release() {
    if (data_) ::operator delete(data_, std::align_val_t{64});
    data_ = nullptr;
    capacity_ = 0;
  }
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

// scratch(Buffer::X, count): this thread's buffer X of an enum class Buffer { …, Count }. Each enum
// type gets its own set, so a kernel keeps the buffers its calling thread shares with the workers
// (one enum) apart from those used inside one task (another): the calling thread also runs tasks.
template <class Which>
float* scratch(Which which, int64_t count) {
  thread_local AlignedScratch buffers[static_cast<int>(Which::Count)];
  return buffers[static_cast<int>(which)].floats(count);
}

// The bias [n] as float32 for the epilogues, or null: a float32 bias (float32 dtype, or bias_f32
// with float16/bfloat16 activations) is read in place, so it is added unrounded; a 16-bit one is
// widened once per call into this thread's buffer `which` (n floats, shared read-only with the workers).
template <class Which>
const float* bias_as_float(const void* bias, bool bias_f32, DType dtype, int64_t n, Which which) {
  if (!bias) return nullptr;
  if (bias_f32 || dtype == DType::Float32) return static_cast<const float*>(bias);
  float* widened = scratch(which, n);
  with_float_dtype(dtype, [&](auto tag) { widen_row<decltype(tag)::value>(bias, 0, n, widened); });
  return widened;
}

template <DType T>
using Elem = std::conditional_t<T == DType::Float32, float, uint16_t>;

template <DType T>
void* element_at(void* base, int64_t index) {
  return static_cast<Elem<T>*>(base) + index;
}

// ---- dot-product tiles: float32 rows of x against rows of a weight-like matrix ----------------
// out[i][j] (+)= Σ_k x[i][k]·w[j][k] for an RI×RJ tile: per kLanes-wide step RJ weight vectors
// and RI x vectors feed RI·RJ independent FMAs; one horizontal sum per output at the end.
template <DType T, int RI, int RJ>
void dot_tile(const float* x, int64_t ldx, const void* w, int64_t w_offset, int64_t ldw, int64_t kdim, float* out,
              int64_t ldo, bool accumulate) {
  Vec acc[RI][RJ];
  for (int i = 0; i < RI; ++i)
    for (int j = 0; j < RJ; ++j) acc[i][j] = vzero();
  int64_t k = 0;
  for (; k + kLanes <= kdim; k += kLanes) {
    Vec wv[RJ];
    for (int j = 0; j < RJ; ++j) wv[j] = vload_as_float<T>(w, w_offset + j * ldw + k);
    for (int i = 0; i < RI; ++i) {
      const Vec xv = vload(x + i * ldx + k);
      for (int j = 0; j < RJ; ++j) acc[i][j] = vfma(xv, wv[j], acc[i][j]);
    }
  }
  float sum[RI][RJ];
  for (int i = 0; i < RI; ++i)
    for (int j = 0; j < RJ; ++j) sum[i][j] = vsum(acc[i][j]);
  for (; k < kdim; ++k)
    for (int j = 0; j < RJ; ++j) {
      const float wk = load_as_float<T>(w, w_offset + j * ldw + k);
      for (int i = 0; i < RI; ++i) sum[i][j] += x[i * ldx + k] * wk;
    }
  for (int i = 0; i < RI; ++i)
    for (int j = 0; j < RJ; ++j) out[i * ldo + j] = accumulate ? out[i * ldo + j] + sum[i][j] : sum[i][j];
}

template <DType T, int RI>
void dot_tile_cols(int rj, const float* x, int64_t ldx, const void* w, int64_t w_offset, int64_t ldw, int64_t kdim,
                   float* out, int64_t ldo, bool accumulate) {
  switch (rj) {
    case 1: return dot_tile<T, RI, 1>(x, ldx, w, w_offset, ldw, kdim, out, ldo, accumulate);
    case 2: return dot_tile<T, RI, 2>(x, ldx, w, w_offset, ldw, kdim, out, ldo, accumulate);
    case 3: return dot_tile<T, RI, 3>(x, ldx, w, w_offset, ldw, kdim, out, ldo, accumulate);
    default: return dot_tile<T, RI, 4>(x, ldx, w, w_offset, ldw, kdim, out, ldo, accumulate);
  }
}

// out[i][j - j0] (+)= x[i]·w[j] for i < rows, j in [j0, j1). Weight rows outer: a group of 4
// weight rows is read from memory once and reused, from L1/L2, by every 4 rows of x.
template <DType T>
void rows_dot(const float* x, int64_t ldx, int64_t rows, const void* w, int64_t ldw, int64_t j0, int64_t j1,
              int64_t kdim, float* out, int64_t ldo, bool accumulate) {
  for (int64_t j = j0; j < j1; j += 4) {
    const int rj = static_cast<int>(std::min<int64_t>(4, j1 - j));
    for (int64_t i = 0; i < rows; i += 4) {
      const float* xi = x + i * ldx;
      float* o = out + i * ldo + (j - j0);
      switch (std::min<int64_t>(4, rows - i)) {
        case 1: dot_tile_cols<T, 1>(rj, xi, ldx, w, j * ldw, ldw, kdim, o, ldo, accumulate); break;
        case 2: dot_tile_cols<T, 2>(rj, xi, ldx, w, j * ldw, ldw, kdim, o, ldo, accumulate); break;
        case 3: dot_tile_cols<T, 3>(rj, xi, ldx, w, j * ldw, ldw, kdim, o, ldo, accumulate); break;
        default: dot_tile_cols<T, 4>(rj, xi, ldx, w, j * ldw, ldw, kdim, o, ldo, accumulate); break;
      }
    }
  }
}

// rows × k float32 copies of a row-major matrix (row stride src_stride) into dst (row stride ld).
template <DType T>
void widen_rows(const void* src, int64_t src_stride, int64_t rows, int64_t k, float* dst, int64_t ld) {
  for (int64_t i = 0; i < rows; ++i) widen_row<T>(src, i * src_stride, k, dst + i * ld);
}

// dst[i] = mask row (row0 + i) ⊙ x[i] for i < rows (k columns; mask in dtype T, x float32).
template <DType T>
void multiply_by_mask_rows(const void* mask, int64_t mask_stride, int64_t row0, int64_t rows, int64_t k,
                           const float* x, int64_t ldx, float* dst, int64_t ld) {
  for (int64_t i = 0; i < rows; ++i) {
    float* d = dst + i * ld;
    widen_row<T>(mask, (row0 + i) * mask_stride, k, d);
    int64_t kk = 0;
    for (; kk + kLanes <= k; kk += kLanes) vstore(d + kk, vmul(vload(d + kk), vload(x + i * ldx + kk)));
    for (; kk < k; ++kk) d[kk] *= x[i * ldx + kk];
  }
}

// ---- block sizes of the packed GEMMs (measured for the forward in lora_linear.cpp; the other
// packed GEMMs use the same, so that their base GEMMs run at the same speed) -------------------
// K block: the C tile is loaded and stored once per K block, 8 bytes per 2·KC = 512 FLOPs, which
// L2/L3 absorb easily (and it is prefetched at the start of the micro-kernel). A KC×NR weight
// micro-panel (AVX-512: 256·64·4 B = 64 KiB) is reused by every MR-row panel of the MC block and
// streams from L2 at 256 B per 24 FMA cycles; the MR×KC x micro-panel (6 KiB) from L2 too. The
// K + r columns are split into equal blocks near this size, so the r low-rank columns never form
// a thin block of their own (K=4096, r=16: 16 blocks of 257). Measured flat between 192 and 512.
constexpr int64_t kTargetKC = 256;
// Rows of x per inner block: MC×KC×4 B = 384 KiB stays in the 1 MiB L2 while the weight
// micro-panels stream past it.
constexpr int64_t kMCPanels = (384 + kGemmMR - 1) / kGemmMR;
// Columns per phase-2 task: N=4096 gives 4 tasks, two per core, each packing its own weight
// columns (every weight element is read and packed exactly once); the packed block is
// KC×NC×4 B = 1 MiB, in L2/L3.
constexpr int64_t kMaxNC = 1024;
// Packed [x | T] for one chunk of rows is kept in L3: at most 16 MiB (1024 rows of K=4096).
constexpr int64_t kPackedLeftBytes = int64_t{16} << 20;
// Up to this many rows, stream the weight without packing (see the top of lora_linear.cpp). Measured
// at K=N=4096 on 2 Zen4 cores: streaming wins clearly below ~48 rows (m=32: 6.9 vs 11.5 ms, the
// packed path waits on DRAM while packing weight panels that serve only a few row panels) and
// the two meet around 64-80 rows (m=64: 13.2 vs 13.8 ms; m=96: 21.6 vs 19.5 ms).
constexpr int64_t kSmallRows = 64;
// Columns per task in the small-m path: 64 weight rows of K=4096 float32 = 1 MiB per task.
constexpr int64_t kSmallColsPerTask = 64;

// ---- cache blocks of the reduction dimension and packed left panels -----------------------------
// `total` reduction columns split into `count` blocks of (at most) `width` columns.
struct KBlocks {
  int64_t count, width, total;
  int64_t begin(int64_t b) const { return b * width; }
  int64_t end(int64_t b) const { return std::min(total, (b + 1) * width); }
};

// Equal blocks near `target` wide, so that no thin block is left at the end.
inline KBlocks split_k(int64_t total, int64_t target) {
  const int64_t count = std::max<int64_t>(1, (total + target / 2) / target);
  return KBlocks{count, ceil_div(total, count), total};
}

// Packed left operand of one row chunk: K block b occupies m_pad·width·b floats on; inside it,
// row panel q is kc×MR floats at q·MR·kc, column kk of the panel at kk·MR.
struct PackedLeft {
  float* data;
  int64_t m_pad;
  const float* panel(const KBlocks& kb, int64_t b, int64_t q) const {
    return data + m_pad * kb.begin(b) + q * kGemmMR * (kb.end(b) - kb.begin(b));
  }
};

// Interleaves `rows` float32 rows (row stride ld, kb.total columns) into row panel `panel` of
// every K block; rows rows..MR of the panel are zero.
inline void pack_left_rows(const float* src, int64_t ld, int64_t rows, const KBlocks& kb, const PackedLeft& left,
                           int64_t panel) {
  for (int64_t b = 0; b < kb.count; ++b) {
    float* dst = const_cast<float*>(left.panel(kb, b, panel));
    const int64_t c0 = kb.begin(b), kc = kb.end(b) - c0;
    for (int64_t kk = 0; kk < kc; ++kk) {
      float* d = dst + kk * kGemmMR;
      int64_t i = 0;
      for (; i < rows; ++i) d[i] = src[i * ld + c0 + kk];
      for (; i < kGemmMR; ++i) d[i] = 0.0f;
    }
  }
}

// The multiply phase of a packed GEMM over `panels` MR-row panels and `cols` output columns:
// fn(q0, q1, j0, j1) for row panels [q0, q1) and columns [j0, j1). Column tasks are a multiple of
// the thread count and at most max_cols wide (NR multiples), so each task packs its own right
// panels (every right-operand element is read and packed once); with few column tasks (narrow
// output) the rows are split too, so every thread has work (those row groups then pack the same
// right columns, which are few).
template <class Fn>
void parallel_panels_by_columns(int64_t panels, int64_t cols, int64_t max_cols, Fn&& fn) {
  const int64_t threads = num_threads();
  const int64_t col_tasks_wanted = round_up(ceil_div(cols, max_cols), threads);
  const int64_t task_cols = round_up(ceil_div(cols, col_tasks_wanted), kGemmNR);
  const int64_t col_tasks = ceil_div(cols, task_cols);
  const int64_t row_groups = std::min(panels, ceil_div(2 * threads, col_tasks));
  const int64_t panels_per_group = ceil_div(panels, std::max<int64_t>(row_groups, 1));
  parallel_for(row_groups * col_tasks, [&](int64_t task, int) {
    const int64_t g = task / col_tasks, c = task % col_tasks;
    const int64_t q0 = g * panels_per_group, q1 = std::min(panels, q0 + panels_per_group);
    const int64_t j0 = c * task_cols, j1 = std::min(cols, j0 + task_cols);
    if (q0 < q1) fn(q0, q1, j0, j1);
  });
}

}  // namespace lk::cpu::LK_SIMD_NS
