// Multi-adapter LoRA forward on CUDA (the math: csrc/ops/lora_multi.h), on the GEMM engine (or,
// for m ≤ 16 rows, the decode GEMV's BGMV).
//
// 0. Host: the ids and ranks (4·(m + L) bytes) are checked before anything reads A or B through
//    them (lk::group_rows_by_adapter), so a bad id is ERR_ARGUMENT, never an out-of-bounds read.
//    Given as numbers (p.small_args_on_host) they are already here and go up with the scales in one
//    asynchronous copy; as device tensors they are copied back, a wait for the work queued before
//    this op. The same pass groups the rows by adapter (a stable counting sort): the
//    engine then works on the grouped order, x rows gathered through `order`, y rows scattered
//    back through it, so that a 128-row tile holds few adapters.
// 1. Shrink: T = scale_id·x·A[id]ᵀ in grouped order, [m, rMax] in the dtype (16-bit: hi + lo,
//    as in lora.forward, so that T·Bᵀ carries ~float32 T, not T rounded once). Each 128-row tile
//    gets one segment per adapter it holds (x rows of the other adapters read as zero, A rows past
//    the adapter's rank never read), and the epilogue zeroes columns past each row's rank.
// 2. y = [T | … | x]·[B[l₁] | … | W]ᵀ + bias: each row tile adds one low-rank segment (k = rank)
//    per adapter it holds, then the shared x·Wᵀ; y is stored once, through the scatter.
//    Where the engine would run x·Wᵀ on wgmma (sm_90a), which takes regular segment lists only,
//    the step splits in two: the low-rank segments alone into a float32 [m, n] scratch (natural
//    row order, through the scatter), then x·Wᵀ on wgmma with that scratch as the epilogue's
//    addend, one rounding as before. Napkin math (K = N = 4096, bf16, H200): the scratch costs 8
//    bytes per output (written once, read once), ~0.2 ns at ~4.5 TB/s, against 2·4096 FLOP of x·Wᵀ
//    per output, ~1.2 ns at ~700 TFLOP/s on wgmma: +15%, where the fused mma.sync mainloop runs at
//    roughly 0.6 of wgmma's rate (+65%).
// Napkin math (M = 1024, K = N = 4096, r = 16, 64 adapters uniform, bf16): grouped, a 128-row tile
// holds ~9 adapters, so the main mainloop runs 9 half-empty k-tiles of low-rank work next to 128
// of x·Wᵀ (~7%); the shrink reads x once and each adapter's A once per tile.
#include <algorithm>
#include <climits>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common.cuh"
#include "gemm.cuh"
#include "gemv.cuh"
#include "lora_linear.cuh"
#include "lora_multi.cuh"

namespace lk::cuda_ops {

void lora_forward_multi(const LoraMultiParams& given, int device) {
  if (given.m == 0) return;
  const cudaStream_t st = begin_op(device, "lora.forwardMulti");
  check_engine_sizes("lora.forwardMulti", given.m, given.k, given.n, given.r_max);

  // 0. The ids and ranks on the host (the caller's numbers, or read back: a wait for the work
  //    queued before this op), checked and grouped before anything reads A or B through them.
  const int32_t* ids = given.adapter_ids;
  const int32_t* ranks = given.ranks;
  std::vector<int32_t> read_back;  // [ids (m) | ranks (L)]
  if (!given.small_args_on_host) {
    read_back.resize(static_cast<size_t>(given.m + (given.ranks ? given.num_adapters : 0)));
    LK_CUDA_CHECK(cudaMemcpyAsync(read_back.data(), ids, static_cast<size_t>(given.m) * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
    if (ranks)
      LK_CUDA_CHECK(cudaMemcpyAsync(read_back.data() + given.m, ranks, static_cast<size_t>(given.num_adapters) * sizeof(int32_t),
                                    cudaMemcpyDeviceToHost, st));
    LK_CUDA_CHECK(cudaStreamSynchronize(st));
    ids = read_back.data();
    ranks = ranks ? read_back.data() + given.m : nullptr;
  }
  const AdapterSegments groups = group_rows_by_adapter(ids, given.m, ranks, given.num_adapters, given.r_max, "lora.forwardMulti");

  // Host numbers go up in one copy, [ids (m) | ranks (L) | scales (L)] as 4-byte words (pageable:
  // staged before the call returns), and p points the kernels at it.
  LoraMultiParams p = given;
  std::optional<DeviceScratch> small_args;
  if (given.small_args_on_host) {
    const size_t m = static_cast<size_t>(given.m), l = static_cast<size_t>(given.num_adapters);
    std::vector<int32_t> up(m + 2 * l);
    std::copy(ids, ids + m, up.begin());
    if (ranks) std::copy(ranks, ranks + l, up.begin() + m);
    std::memcpy(up.data() + m + l, given.scales, l * sizeof(float));
    small_args.emplace(device, up.size() * sizeof(int32_t));
    int32_t* dev = small_args->as<int32_t>();
    LK_CUDA_CHECK(cudaMemcpyAsync(dev, up.data(), up.size() * sizeof(int32_t), cudaMemcpyHostToDevice, st));
    p.adapter_ids = dev;
    p.ranks = ranks ? dev + m : nullptr;
    p.scales = reinterpret_cast<const float*>(dev + m + l);
  }
  if (p.m <= kGemvMaxRows) return lora_forward_multi_decode(p, device, st);

  const int m = static_cast<int>(p.m), k = static_cast<int>(p.k), n = static_cast<int>(p.n), r_max = static_cast<int>(p.r_max);
  const size_t es = dtype_size(p.dtype);
  const long long t_stride = low_rank_stride(p.dtype, r_max);

  // The shared x·Wᵀ + bias in natural row order; run on its own only where wgmma takes it.
  gemm::Problem base;
  base.dtype = p.dtype;
  base.m = m;
  base.n = n;
  base.seg[0] = {p.x, p.weight, p.x_stride, p.weight_stride, k, 0, m, INT_MAX, false};
  base.num_segments = 1;
  base.epi.bias = p.bias;
  base.epi.bias_f32 = p.bias_f32;
  base.epi.out = p.y;
  base.epi.out_stride = p.y_stride;
  base.what = "lora.forwardMulti";
  const bool base_apart = gemm::runs_on_wgmma(base, device);

  // Per row tile: the adapters it holds, as engine segments (shrink lists, then main lists).
  const int tiles = static_cast<int>(ceil_div<long long>(m, gemm::kTileListRows));
  std::vector<gemm::Segment> shrink_segments, main_segments;
  std::vector<int> shrink_begin{0}, main_begin{0};
  std::vector<int> row_group(static_cast<size_t>(m));
  for (int64_t s = 0; s < groups.count(); ++s)
    for (int64_t i = groups.begin[s]; i < groups.begin[s + 1]; ++i) row_group[i] = groups.adapter[s];

  // The device buffer: T (dtype), then the segment lists, begin offsets, order and groups.
  const size_t t_elems = static_cast<size_t>(m) * t_stride;
  const bool t_split = split_low_rank(p.dtype);  // T as hi + lo, as in lora.forward
  const size_t t_bytes = (t_split ? 2 : 1) * t_elems * es;
  for (int tile = 0; tile < tiles; ++tile) {
    const int lo = tile * gemm::kTileListRows, hi = std::min(m, lo + gemm::kTileListRows);
    for (int64_t s = 0; s < groups.count(); ++s) {
      const int l = groups.adapter[s];
      const int s_lo = static_cast<int>(std::max<int64_t>(groups.begin[s], lo));
      const int s_hi = static_cast<int>(std::min<int64_t>(groups.begin[s + 1], hi));
      if (l < 0 || s_lo >= s_hi) continue;
      const int rank = static_cast<int>(ranks ? ranks[l] : p.r_max);
      shrink_segments.push_back({p.x, static_cast<const unsigned char*>(p.a) + p.a_offset(l) * es, p.x_stride, p.k, k, s_lo, s_hi,
                                 rank, true});
      main_segments.push_back({nullptr /* T, set below */, static_cast<const unsigned char*>(p.b) + p.b_offset(l) * es, t_stride,
                               p.r_max, rank, s_lo, s_hi, INT_MAX, false});
    }
    if (!base_apart) main_segments.push_back({p.x, p.weight, p.x_stride, p.weight_stride, k, 0, m, INT_MAX, true});
    shrink_begin.push_back(static_cast<int>(shrink_segments.size()));
    main_begin.push_back(static_cast<int>(main_segments.size()));
  }

  auto align = [](size_t v) { return (v + 255) / 256 * 256; };
  const size_t seg_bytes = sizeof(gemm::Segment);
  const size_t off_shrink = align(t_bytes);
  const size_t off_main = align(off_shrink + shrink_segments.size() * seg_bytes);
  const size_t off_shrink_begin = align(off_main + main_segments.size() * seg_bytes);
  const size_t off_main_begin = align(off_shrink_begin + shrink_begin.size() * sizeof(int));
  const size_t off_order = align(off_main_begin + main_begin.size() * sizeof(int));
  const size_t off_group = align(off_order + static_cast<size_t>(m) * sizeof(int));
  const size_t off_low_rank = align(off_group + static_cast<size_t>(m) * sizeof(int));
  const size_t total = off_low_rank + (base_apart ? static_cast<size_t>(m) * n * sizeof(float) : 0);
  DeviceScratch scratch(device, total);
  unsigned char* dev = scratch.as<unsigned char>();
  for (gemm::Segment& s : main_segments) {
    if (s.a) continue;
    s.a = dev;
    if (t_split) s.a_lo = dev + t_elems * es;
  }
  std::vector<unsigned char> host(off_low_rank - off_shrink);
  auto put = [&](size_t offset, const void* src, size_t bytes) {
    if (bytes) std::memcpy(host.data() + offset - off_shrink, src, bytes);  // an empty list has no data()
  };
  put(off_shrink, shrink_segments.data(), shrink_segments.size() * seg_bytes);
  put(off_main, main_segments.data(), main_segments.size() * seg_bytes);
  put(off_shrink_begin, shrink_begin.data(), shrink_begin.size() * sizeof(int));
  put(off_main_begin, main_begin.data(), main_begin.size() * sizeof(int));
  put(off_order, groups.order.data(), static_cast<size_t>(m) * sizeof(int));
  put(off_group, row_group.data(), static_cast<size_t>(m) * sizeof(int));
  // Pageable host memory: the copy is staged before the call returns, so `host` may go.
  LK_CUDA_CHECK(cudaMemcpyAsync(dev + off_shrink, host.data(), host.size(), cudaMemcpyHostToDevice, st));
  const int* order = reinterpret_cast<const int*>(dev + off_order);

  // 1. T (grouped order) = scale_id·x[order]·A[id]ᵀ
  gemm::Problem shrink;
  shrink.dtype = p.dtype;
  shrink.m = m;
  shrink.n = r_max;
  shrink.tile_segments = reinterpret_cast<const gemm::Segment*>(dev + off_shrink);
  shrink.tile_segment_begin = reinterpret_cast<const int*>(dev + off_shrink_begin);
  shrink.row_index = order;
  shrink.epi.row_group = reinterpret_cast<const int*>(dev + off_group);
  shrink.epi.group_rank = p.ranks;
  shrink.epi.group_scale = p.scales;
  shrink.epi.out = dev;
  shrink.epi.out_lo = t_split ? dev + t_elems * es : nullptr;
  shrink.epi.out_stride = t_stride;
  shrink.what = "lora.forwardMulti";
  gemm::run(shrink, device, st);

  // 2. y[order] = Σ_adapters T·B[l]ᵀ + x[order]·Wᵀ + bias, or apart: the low-rank sum into the
  //    float32 scratch (every element stored, zeros where a row has no adapter), then the base.
  gemm::Problem main;
  main.dtype = p.dtype;
  main.m = m;
  main.n = n;
  main.tile_segments = reinterpret_cast<const gemm::Segment*>(dev + off_main);
  main.tile_segment_begin = reinterpret_cast<const int*>(dev + off_main_begin);
  main.row_index = order;
  main.epi.row_index = order;
  main.what = "lora.forwardMulti";
  if (base_apart) {
    float* low_rank = reinterpret_cast<float*>(dev + off_low_rank);
    main.epi.out = low_rank;
    main.epi.out_stride = n;
    main.epi.out_f32 = true;
    gemm::run(main, device, st);
    base.epi.addend = low_rank;
    base.epi.addend_stride = n;
    gemm::run(base, device, st);
    return;
  }
  main.epi.bias = p.bias;
  main.epi.bias_f32 = p.bias_f32;
  main.epi.out = p.y;
  main.epi.out_stride = p.y_stride;
  gemm::run(main, device, st);
}

}  // namespace lk::cuda_ops
