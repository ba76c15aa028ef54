// The GEMM engine's dispatcher: problem → mainloop, tile, split-K → launch (cuda/gemm.cuh says what
// the engine computes; cuda/gemm_kernels.cuh holds the kernels).
//
// Choices, with the napkin math behind them (H100/H200: 132 SMs):
//   * mainloop: wgmma (cuda/gemm_wgmma.cu) on compute capability 9.0 with an sm_90a binary, for the
//     problems it covers (float16 / bfloat16, plain segments, TMA-aligned operands) once 128×128
//     tiles give half a wave (smaller products keep mma.sync's split-K); otherwise mma.sync for
//     float16 / bfloat16 on sm_80+ (and float32 when TF32 is allowed), the exact FMA mainloop otherwise (float32, and every dtype on sm_75); a quantized B operand picks
//     their dequantizing variants (no TF32: float32 stays exact on FMA);
//   * tile: n ≤ 32 (the low-rank shrinks, gradB) → 128×32; 128×256 (64×64 per warp: the least
//     shared-memory traffic per MMA) once it gives two waves of blocks (M = N = 4096: 512 blocks);
//     128×128 once it gives half a wave (M = 512, N = 4096: 128 blocks); else 64×64;
//   * split-K: when the tiles fill less than one wave and K is long (skinny products such as
//     gradA = dTᵀ·xm with m = r = 16 rows and K = tokens), K is cut into at most 16 splits of at
//     least 4 k-tiles, each writing float32 partials that one kernel sums in split order before the
//     epilogue (deterministic; costs splits·m·n·4 bytes of scratch, ~1 MB for gradA at r = 16, K = 4096).
#include <algorithm>
#include <string>

#include "gemm_kernels.cuh"

namespace lk::cuda_ops::gemm {
namespace {


// sumsq[i] = Σ_t row_norm_partial[t][i] over the column tiles t, in order.
__global__ void __launch_bounds__(256) row_norm_reduce_kernel(Params p, int column_tiles) {
#if defined(SIMT_DEVICE_PATH)
  const long long row = static_cast<long long>(blockIdx.x) * 256 + threadIdx.x;
  if (row >= p.m) return;
  float s = 0.f;
  for (int t = 0; t < column_tiles; ++t) s += p.row_norm_partial[static_cast<long long>(t) * p.m + row];
  p.row_norm.sumsq[row] = s;
#endif
}

[[noreturn]] void unsupported(const Problem& pr, const std::string& why) {
  throw Error(ErrorCode::Unsupported, std::string(pr.what) + " (cuda): " + why + " (m=" + std::to_string(pr.m) +
                                          ", n=" + std::to_string(pr.n) + ", dtype=" + dtype_name(pr.dtype) + ")");
}

// A quantized B whose rows are 16-byte aligned in memory, so that the stages take its codes (and
// NF4 absmax chunks) with cp.async: NF4 with k % 32 == 0 (a row is k/2 bytes), ternary with
// ⌈k/4⌉ % 16 == 0, aligned pointers. Otherwise the kernels read each element from global memory.
bool staged(const QuantWeight& q) {
  const auto aligned = [](const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; };
  if (q.format == QuantFormat::Nf4) return q.k % 32 == 0 && aligned(q.packed) && aligned(q.absmax);
  return ternary::row_bytes(q.k) % 16 == 0 && aligned(q.packed);
}

const char* layout_name(Layout la, Layout lb) {
  if (la == Layout::KMajor) return lb == Layout::KMajor ? "KK" : "KN";
  return lb == Layout::KMajor ? "NK" : "NN";
}

}  // namespace

const char* preferred_mainloop(int cc) { return wgmma_device(cc) ? "wgmma" : cc >= 80 ? "mma.sync" : "fma"; }

namespace {
// wgmma takes a problem it covers once 128×128 tiles give at least half a wave; smaller ones
// (decode-sized) keep mma.sync, whose split-K fills the SMs.
bool hopper_takes(const Problem& pr, const DeviceProps& props) {
  const long long tiles = ceil_div<long long>(pr.m, 128) * ceil_div<long long>(pr.n, 128);
  return wgmma_device(props.cc) && wgmma_covers(pr) && tiles * 2 >= props.sm_count;
}
}  // namespace

bool runs_on_wgmma(const Problem& pr, int device) { return pr.m > 0 && pr.n > 0 && hopper_takes(pr, device_props(device)); }

// y = epilogue(Σ_z partials) in the dtype.
void splitk_reduce(DType dtype, const Params& p, int splits, cudaStream_t st) {
  switch (dtype) {
    case DType::Float32: return launch_splitk_reduce<F32>(p, splits, st);
    case DType::Float16: return launch_splitk_reduce<F16>(p, splits, st);
    case DType::BFloat16: return launch_splitk_reduce<BF16>(p, splits, st);
    default: break;
  }
  throw Error(ErrorCode::Unsupported, std::string("gemm: no split-K reduction for dtype=") + dtype_name(dtype));
}

void run(const Problem& pr, int device, cudaStream_t st) {
  if (pr.m <= 0 || pr.n <= 0) return;
  const DeviceProps props = device_props(device);
  const bool half = pr.dtype == DType::Float16 || pr.dtype == DType::BFloat16;
  bool quant = false;
  for (int i = 0; i < pr.num_segments; ++i) quant |= pr.seg[i].quant_b;
  const bool mma = props.cc >= 80 && (half || (pr.dtype == DType::Float32 && pr.allow_tf32 && !quant));
  const bool row_norm = pr.row_norm.sumsq != nullptr;
  const bool nn = pr.a_layout == Layout::MNMajor;
  if (quant && (pr.tile_segments || row_norm || nn || !pr.quant.packed || (pr.quant.format == QuantFormat::Nf4 && !pr.quant.absmax)))
    unsupported(pr, "a quantized B needs a regular segment list, a K-major A and a float32 absmax");
  auto tiles_of = [&](int bm, int bn) { return ceil_div<long long>(pr.m, bm) * ceil_div<long long>(pr.n, bn); };
  const bool hopper = hopper_takes(pr, props);
  const int bk = hopper ? 64 : mma ? 64 / static_cast<int>(dtype_size(pr.dtype)) : FmaLargeTile::BK;

  // ---- tile
  int tile = 0, bm, bn;
  if (hopper) {
    bm = 128;
    bn = wgmma_tile_n(pr, tiles_of(128, 256) >= props.sm_count);
  } else if (mma) {
    const bool big = row_norm || pr.tile_segments || (!nn && pr.m > 64 && tiles_of(128, 128) * 2 >= props.sm_count);
    const bool wide = !row_norm && !nn && pr.n > 128 && tiles_of(128, 256) >= 2 * props.sm_count;
    if (pr.n <= 32 && !row_norm && !quant) tile = static_cast<int>(TileId::Skinny), bm = 128, bn = 32;
    else if (wide && (!quant || pr.b_layout == Layout::KMajor)) tile = static_cast<int>(TileId::Wide), bm = 128, bn = 256;
    else if (big && !nn) tile = static_cast<int>(TileId::Big), bm = bn = 128;
    else tile = static_cast<int>(TileId::Small), bm = bn = 64;
  } else {
    const bool large = row_norm || pr.tile_segments || (!nn && pr.m > 64 && pr.n > 64 && tiles_of(128, 128) * 2 >= props.sm_count);
    if (large) tile = static_cast<int>(FmaTileId::Large), bm = bn = 128;
    else tile = static_cast<int>(FmaTileId::Small), bm = bn = 64;
  }
  if (pr.tile_segments && bm != kTileListRows) unsupported(pr, "per-tile segment lists need 128-row tiles");
  const long long m_tiles = ceil_div<long long>(pr.m, bm), n_tiles = ceil_div<long long>(pr.n, bn);
  if (m_tiles * n_tiles > INT_MAX) unsupported(pr, "the output exceeds the launch grid");

  // ---- split-K (regular segment lists only)
  long long total_kt = 0;
  for (int i = 0; i < pr.num_segments; ++i) total_kt += segment_tiles(pr.seg[i], bk);
  if (total_kt > INT_MAX / 2) unsupported(pr, "K is too long");
  int splits = 1;
  if (!hopper && !pr.tile_segments && !row_norm && m_tiles * n_tiles < props.sm_count) {
    const long long want = ceil_div<long long>(props.sm_count, m_tiles * n_tiles);
    splits = static_cast<int>(std::max<long long>(1, std::min<long long>({want, 16, total_kt / 4})));
  }
  const int per_split = pr.tile_segments ? INT_MAX / 2 : static_cast<int>(std::max<long long>(1, ceil_div<long long>(total_kt, splits)));
  if (!pr.tile_segments) splits = static_cast<int>(std::max<long long>(1, ceil_div<long long>(total_kt, per_split)));

  Params p{};
  p.m = pr.m;
  p.n = pr.n;
  p.seg0 = pr.seg[0];
  p.seg1 = pr.seg[1];
  p.num_segments = pr.num_segments;
  p.tile_segments = pr.tile_segments;
  p.tile_segment_begin = pr.tile_segment_begin;
  p.row_index = pr.row_index;
  p.acc_mask = pr.acc_mask;
  p.acc_mask_stride = pr.acc_mask_stride;
  p.acc_col_scale = pr.acc_col_scale;
  p.quant = pr.quant;
  p.quant_shift = quant::block_shift(pr.quant.block_size);
  p.quant_staged = quant && staged(pr.quant);
  p.ktiles_per_split = per_split;
  p.epi = pr.epi;
  p.row_norm = pr.row_norm;

  const size_t partial_floats = splits > 1 ? static_cast<size_t>(splits) * pr.m * pr.n : row_norm ? static_cast<size_t>(n_tiles) * pr.m : 0;
  DeviceScratch partial(device, partial_floats * sizeof(float));
  p.partial = splits > 1 ? partial.as<float>() : nullptr;
  p.row_norm_partial = row_norm ? partial.as<float>() : nullptr;

  const Launch l{static_cast<int>(m_tiles), static_cast<int>(n_tiles), splits, st, device};
  bool launched = false;
  const Layout la = pr.a_layout, lb = pr.b_layout;
  if (hopper) {
    run_wgmma(pr, p, bn, l);
    launched = true;
  } else if (quant) {
    if (mma && pr.dtype == DType::Float16) launched = run_mma_quant_f16(static_cast<TileId>(tile), la, lb, p, l);
    else if (mma) launched = run_mma_quant_bf16(static_cast<TileId>(tile), la, lb, p, l);
    else launched = run_fma_quant(pr.dtype, static_cast<FmaTileId>(tile), la, lb, p, l);
  } else if (mma) {
    const TileId t = static_cast<TileId>(tile);
    if (pr.dtype == DType::Float16) launched = run_mma_f16(t, la, lb, row_norm, p, l);
    else if (pr.dtype == DType::BFloat16) launched = run_mma_bf16(t, la, lb, row_norm, p, l);
    else launched = run_mma_tf32(t, la, lb, row_norm, p, l);
  } else {
    const FmaTileId t = static_cast<FmaTileId>(tile);
    if (pr.dtype == DType::Float32) launched = run_fma_f32(t, la, lb, row_norm, p, l);
    else launched = run_fma_half(pr.dtype, t, la, lb, row_norm, p, l);
  }
  if (!launched)
    unsupported(pr, std::string("no kernel for ") + (mma ? "mma.sync" : "fma") + " tile " + std::to_string(bm) + "x" +
                        std::to_string(bn) + " layouts " + layout_name(pr.a_layout, pr.b_layout) + (row_norm ? " row-norm" : ""));
  if (splits > 1) splitk_reduce(pr.dtype, p, splits, st);
  if (row_norm) {
    simt_launch(row_norm_reduce_kernel, dim3(static_cast<unsigned>(ceil_div<long long>(pr.m, 256))), dim3(256), 0, st, p,
                static_cast<int>(n_tiles));
    LK_CUDA_CHECK_LAUNCH("row_norm_reduce_kernel launch");
  }
  const std::string mainloop = hopper ? "wgmma " : mma ? (pr.dtype == DType::Float32 ? "mma.sync tf32 " : "mma.sync ") : "fma ";
  note_plan(mainloop + dtype_name(pr.dtype) + " " + std::to_string(bm) + "x" + std::to_string(bn) + " " +
            layout_name(pr.a_layout, pr.b_layout) + (hopper ? " tma " + std::to_string(wgmma_stages(bn)) + " stages" : "") +
              (splits > 1 ? " split-k " + std::to_string(splits) : "") + (row_norm ? " row-norm" : "") +
            (!quant ? "" : std::string(" dequant ") + (pr.quant.format == QuantFormat::Nf4 ? "nf4" : "ternary") +
                               (mma && !p.quant_staged ? " element loads" : "")));
}

}  // namespace lk::cuda_ops::gemm
