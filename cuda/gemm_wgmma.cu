// The GEMM engine's Hopper mainloop (sm_90a): TMA into 128B-swizzled shared stages, wgmma from
// shared-memory descriptors, warp-specialized. cuda/gemm.cu sends it the problems it covers
// (wgmma_covers) on compute capability 9.0; everything else stays on mma.sync / FMA.
//
// A block is three warpgroups (384 threads) on a 128×BN tile:
//   * warpgroup 0, the producer: gives back registers (setmaxnreg.dec 40), then one thread walks
//     the block's k-tiles (the K-segment cursor, both passes of a hi + lo segment) and per stage
//     waits for the consumers to free it (`empty`), arms `full` with the stage's bytes
//     (arrive.expect_tx) and issues the TMA copies: A as one 64 k × 128 row box, B as one
//     64 k × BN row box (K-major) or BN/64 boxes of 64 columns × 64 k (MN-major). Out-of-bounds
//     rows, columns and k (a rank-16 segment in a 64-wide k-tile) arrive as zeros.
//   * warpgroups 1 and 2, the consumers (setmaxnreg.inc 232): consumer c owns rows 64c … 64c + 63.
//     Per k-tile it waits on `full`, issues 4 wgmma.mma_async m64nBNk16 (all 4 even past a short
//     segment's k, where the tile holds zeros: a conditional wgmma makes ptxas serialize the
//     warpgroup around every one; a rank-16 term costs ~2% at K = 4096), commits, keeps that group in flight while retiring the previous
//     one (wait_group 1), and then frees the previous k-tile's stage (one `empty` arrival per
//     warp). The D fragment goes straight to the engine's store epilogue, two adjacent columns per
//     register pair: store_run<E, 2>, as in the mma.sync mainloop.
// Descriptors (PTX ISA, matrix descriptor; 128B swizzle: rows of 128 bytes, 8-row atoms of 1 KiB):
//   A and K-major B: start = tile + 32·ks (k-step ks of 16 values), SBO = 1024 (8 rows), LBO unused;
//   MN-major B: start = tile + 2048·ks (16 k-rows of 128 bytes), SBO = 1024 (8 k-rows), LBO = 8192
//   (the next box of 64 columns), transpose bit set.
//
// Napkin math (H100/H200 SXM, bf16, M = N = K = 4096, 128×256 tiles): a k-tile is 2·128·256·64 =
// 4.2 MFLOP against 48 KiB of TMA; at ~700 TFLOP/s over 132 SMs an SM finishes one every ~0.8 µs,
// i.e. ~60 GB/s per SM (~8 TB/s from L2, which grouped rasterization keeps mostly out of HBM). Four
// stages keep three k-tiles (~2.4 µs) in flight ahead of the tensor cores, more than the ~1 µs
// HBM latency. wgmma reads both operands from shared memory, so the consumers spend no issue slots
// on ldmatrix or fragments; their registers are the 128 accumulators of a 64×256 warpgroup tile plus
// addressing. ptxas (nvcc 13) fits every variant in the 168 registers 384 threads allow, no spills;
// setmaxnreg then moves the producer's unused share to the consumers (40 + 232: 64,512 of 65,536).
// Shared memory: STAGES × (16 KiB of A + BN·128 B of B) = 192 KiB for both tiles (4 × 48, 6 × 32).
#include <cstring>
#include <mutex>

#include "gemm_kernels.cuh"

namespace lk::cuda_ops::gemm {

template <int BN_>
struct WgmmaTile {
  static constexpr int BM = 128, BN = BN_, BK = 64;  // BK: 64 16-bit values, one 128-byte swizzled row
  static constexpr int NT = 384, CONSUMERS = 2;
  static constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
  static constexpr int STAGES = 192 * 1024 / STAGE_BYTES;
  static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES + 2 * STAGES * 8;  // + the full / empty mbarriers
  static_assert(BN % 64 == 0 && BN <= 256, "wgmma N: a multiple of 64 up to 256");
};

#if defined(SIMT_DEVICE_PATH) && defined(LK_WGMMA_MAINLOOP)
template <class E, int N, bool TransB>
__device__ __forceinline__ void wgmma_step(float (&acc)[N / 2], uint64_t da, uint64_t db) {
  if constexpr (std::is_same_v<E, BF16>) ptx::wgmma_m64k16_f32_bf16<N, false, TransB>(acc, da, db, true);
  else ptx::wgmma_m64k16_f32_f16<N, false, TransB>(acc, da, db, true);
}

template <class E, class Tile, Layout LB>
__device__ __forceinline__ void wgmma_gemm(const Params& p, const HopperMaps& maps) {
  constexpr int BK = Tile::BK, STAGES = Tile::STAGES, KSTEPS = BK / 16;
  SIMT_DYNAMIC_SHARED(unsigned char, smem);
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + STAGES * Tile::STAGE_BYTES);
  uint64_t* empty = full + STAGES;
  const TileCoord tc = tile_coord<Tile::BM, Tile::BN>(p);
  const SegmentList list{nullptr, p.num_segments};
  int total = 0;
  for (int i = 0; i < list.count; ++i) total += tiles_of<BK>(list.get(p, i));
  if (threadIdx.x == 0) {
    for (int s = 0; s < STAGES; ++s) {
      ptx::mbarrier_init(&full[s], 1);
      ptx::mbarrier_init(&empty[s], 4 * Tile::CONSUMERS);
    }
    ptx::fence_mbarrier_init();
  }
  __syncthreads();
  Cursor<BK> cur;
  if (total > 0) cur.start(p, list, 0);
  const int warpgroup = static_cast<int>(threadIdx.x) / 128;

  if (warpgroup == 0) {
    ptx::setmaxnreg_dec<40>();
    if (threadIdx.x != 0) return;
    for (int kt = 0; kt < total; ++kt) {
      const int s = kt % STAGES;
      ptx::mbarrier_wait_parity(&empty[s], (kt / STAGES + 1) & 1);  // round 0: a fresh barrier passes parity 1
      unsigned char* a = smem + s * Tile::STAGE_BYTES;
      unsigned char* b = a + Tile::A_BYTES;
      const int map = 2 * cur.index + (cur.second_pass() ? 1 : 0), k0 = cur.k0();
      ptx::mbarrier_arrive_expect_tx(&full[s], Tile::STAGE_BYTES);
      ptx::cp_async_bulk_tensor_2d_g2s(a, &maps.a[map], k0, tc.m0, &full[s]);
      if constexpr (LB == Layout::KMajor) {
        ptx::cp_async_bulk_tensor_2d_g2s(b, &maps.b[map], k0, tc.n0, &full[s]);
      } else {
#pragma unroll
        for (int c = 0; c < Tile::BN / 64; ++c) ptx::cp_async_bulk_tensor_2d_g2s(b + c * 8192, &maps.b[map], tc.n0 + 64 * c, k0, &full[s]);
      }
      cur.next(p, list);
    }
    return;
  }

  ptx::setmaxnreg_inc<232>();
  const int consumer = warpgroup - 1, warp = static_cast<int>(threadIdx.x) / 32 % 4, lane = static_cast<int>(threadIdx.x) % 32;
  // Register i of the D fragment: row 16·warp + lane/4 + 8·((i >> 1) & 1), column 8·(i >> 2) + 2·(lane % 4) + (i & 1).
  const int row0 = tc.m0 + 64 * consumer + 16 * warp + lane / 4, col0 = tc.n0 + 2 * (lane % 4);
  // The mask / gate between segments: 128×128 tiles only (the dispatcher's choice). With 128
  // accumulators per thread (128×256) its loop spills under the 168-register cap of 384 threads.
  const int seg0_tiles = Tile::BN <= 128 && (p.acc_mask || p.acc_col_scale) && list.count > 1 ? tiles_of<BK>(list.get(p, 0)) : -1;
  float acc[Tile::BN / 2];
#pragma unroll
  for (int i = 0; i < Tile::BN / 2; ++i) acc[i] = 0.f;
  for (int kt = 0; kt < total; ++kt) {
    const int s = kt % STAGES;
    ptx::mbarrier_wait_parity(&full[s], (kt / STAGES) & 1);
    unsigned char* a = smem + s * Tile::STAGE_BYTES + consumer * 64 * 128;
    unsigned char* b = smem + s * Tile::STAGE_BYTES + Tile::A_BYTES;
    ptx::wgmma_fence_operand(acc);
    ptx::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks) {
      const uint64_t da = ptx::make_wgmma_desc(a + 32 * ks, 16, 1024, 1);
      if constexpr (LB == Layout::KMajor) wgmma_step<E, Tile::BN, false>(acc, da, ptx::make_wgmma_desc(b + 32 * ks, 16, 1024, 1));
      else wgmma_step<E, Tile::BN, true>(acc, da, ptx::make_wgmma_desc(b + 2048 * ks, 8192, 1024, 1));
    }
    ptx::wgmma_commit_group();
    if (Tile::BN <= 128 && kt == seg0_tiles - 1) {
      // The end of segment 0: the backward's dropout mask (dT·A, elementwise) or quant.matmul's
      // gate (per column) scales its term before the later segments add to it; all of it retired first.
      ptx::wgmma_wait_group<0>();
      ptx::wgmma_fence_operand(acc);
#pragma unroll
      for (int i = 0; i < Tile::BN / 2; ++i) {
        const int row = row0 + 8 * ((i >> 1) & 1), col = col0 + 8 * (i >> 2) + (i & 1);
        if (row < p.m && col < p.n)
          acc[i] *= (p.acc_mask ? load_elem<E>(p.acc_mask, static_cast<long long>(row) * p.acc_mask_stride + col) : 1.f) *
                    (p.acc_col_scale ? p.acc_col_scale[col] : 1.f);
      }
    } else {
      ptx::wgmma_wait_group<1>();
    }
    ptx::wgmma_fence_operand(acc);
    // One arrival per warp, once all its lanes retired k-tile kt - 1 (wait_group is warp-aligned on
    // a GPU; the barrier keeps a lane from releasing a stage its neighbours still read where lanes
    // run apart, as in the emulator's threads backend, where it was a lost phase).
    __syncwarp();
    if (kt > 0 && lane == 0) ptx::mbarrier_arrive(&empty[(kt - 1) % STAGES]);
    cur.next(p, list);
  }
  ptx::wgmma_wait_group<0>();
  ptx::wgmma_fence_operand(acc);

#pragma unroll
  for (int i = 0; i < Tile::BN / 2; i += 2) {
    const float pair[2] = {acc[i], acc[i + 1]};
    store_run<E, 2>(p.epi, p.m, p.n, row0 + 8 * ((i >> 1) & 1), col0 + 8 * (i >> 2), pair);
  }
}
#endif

template <class E, class Tile, Layout LB>
__global__ void __launch_bounds__(Tile::NT) gemm_wgmma_kernel(const __grid_constant__ Params p, const __grid_constant__ HopperMaps maps) {
#if defined(SIMT_DEVICE_PATH)
#if defined(LK_WGMMA_MAINLOOP)
  wgmma_gemm<E, Tile, LB>(p, maps);
#else
  simt_trap();  // not an sm_90a binary: the dispatcher never picks this kernel here
#endif
#endif
}

namespace {

// A 2-D tensor map of 16-bit elements, 128B swizzle, box_inner × box_outer: inner × outer elements
// at base with rows `stride` elements apart. Maps are cached by those values (cuTensorMapEncodeTiled
// is a driver call per operand and launch otherwise); a map holds nothing else.
ptx::TensorMap tensor_map(const Problem& pr, const void* base, long long inner, long long outer, long long stride, uint32_t box_outer) {
  struct Entry {
    const void* base;
    long long inner, outer, stride;
    uint32_t box_outer;
    ptx::TensorMap map;
  };
  static std::mutex mu;
  static Entry cache[64];
  static unsigned used = 0, next = 0;
  const std::lock_guard<std::mutex> lock(mu);
  for (unsigned i = 0; i < used; ++i) {
    const Entry& e = cache[i];
    if (e.base == base && e.inner == inner && e.outer == outer && e.stride == stride && e.box_outer == box_outer) return e.map;
  }
  const Entry e{base, inner, outer, stride, box_outer, tma_map_16bit(pr.what, base, {inner, outer}, {stride}, {64, box_outer})};
  cache[next] = e;
  next = (next + 1) % 64;
  used = used < 64 ? used + 1 : 64;
  return e.map;
}

template <class E, int BN, Layout LB>
void launch_wgmma(const Params& p, const HopperMaps& maps, const Launch& l) {
  using Tile = WgmmaTile<BN>;
  auto* kernel = gemm_wgmma_kernel<E, Tile, LB>;
  opt_in_smem(kernel, Tile::SMEM_BYTES, l.device);
  simt_launch(kernel, dim3(l.m_tiles * l.n_tiles), dim3(Tile::NT), Tile::SMEM_BYTES, l.st, p, maps);
  LK_CUDA_CHECK_LAUNCH("gemm_wgmma_kernel launch");
}

}  // namespace

int wgmma_tile_n(const Problem& pr, bool wide_fills_sms) {
  // The mask / gate between segments runs on 128×128 only (see wgmma_gemm).
  return wide_fills_sms && !pr.acc_mask && !pr.acc_col_scale ? 256 : 128;
}

bool wgmma_covers(const Problem& pr) {
  if ((pr.dtype != DType::BFloat16 && pr.dtype != DType::Float16) || pr.a_layout != Layout::KMajor) return false;
  if (pr.tile_segments || pr.row_norm.sumsq || pr.num_segments > 2) return false;
  for (int i = 0; i < pr.num_segments; ++i) {
    const Segment& s = pr.seg[i];
    if (s.quant_b || s.gather || s.rows_lo > 0 || s.rows_hi < pr.m || s.cols_hi < pr.n) return false;
    if (s.k == 0) continue;
    // TMA: 16-byte aligned bases and row strides (16-bit elements: strides in multiples of 8).
    const auto tma_aligned = [](const void* ptr, long long stride) {
      return !ptr || (reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && stride % 8 == 0);
    };
    if (!tma_aligned(s.a, s.a_stride) || !tma_aligned(s.a_lo, s.a_stride) || !tma_aligned(s.b, s.b_stride) || !tma_aligned(s.b_lo, s.b_stride))
      return false;
  }
  return true;
}

void run_wgmma(const Problem& pr, const Params& p, int bn, const Launch& l) {
  HopperMaps maps{};
  for (int i = 0; i < pr.num_segments; ++i) {
    const Segment& s = pr.seg[i];
    if (s.k == 0) continue;
    for (int pass = 0; pass < (s.a_lo || s.b_lo ? 2 : 1); ++pass) {
      const void* a = pass && s.a_lo ? s.a_lo : s.a;
      const void* b = pass && s.b_lo ? s.b_lo : s.b;
      maps.a[2 * i + pass] = tensor_map(pr, a, s.k, pr.m, s.a_stride, 128);
      maps.b[2 * i + pass] = pr.b_layout == Layout::KMajor ? tensor_map(pr, b, s.k, pr.n, s.b_stride, static_cast<uint32_t>(bn))
                                                           : tensor_map(pr, b, pr.n, s.k, s.b_stride, 64);
    }
  }
  const bool kk = pr.b_layout == Layout::KMajor;
  if (pr.dtype == DType::BFloat16) {
    if (bn == 256) kk ? launch_wgmma<BF16, 256, Layout::KMajor>(p, maps, l) : launch_wgmma<BF16, 256, Layout::MNMajor>(p, maps, l);
    else kk ? launch_wgmma<BF16, 128, Layout::KMajor>(p, maps, l) : launch_wgmma<BF16, 128, Layout::MNMajor>(p, maps, l);
  } else {
    if (bn == 256) kk ? launch_wgmma<F16, 256, Layout::KMajor>(p, maps, l) : launch_wgmma<F16, 256, Layout::MNMajor>(p, maps, l);
    else kk ? launch_wgmma<F16, 128, Layout::KMajor>(p, maps, l) : launch_wgmma<F16, 128, Layout::MNMajor>(p, maps, l);
  }
}

int wgmma_stages(int bn) { return bn == 256 ? WgmmaTile<256>::STAGES : WgmmaTile<128>::STAGES; }

}  // namespace lk::cuda_ops::gemm
