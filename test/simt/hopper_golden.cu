// hopper_golden.cu — replays the H200 recordings of wgmma and TMA (test/fixtures/gpu-golden/) through
// the emulated sm_90 wrappers of csrc/simt/simt_hopper.h and compares them bit for bit.
//
//   hopper_golden <file.jsonl>...   (ptx_golden.jsonl and ptx_golden_tma.jsonl)
//
// recorded  every "wgmma.mma_async…m64n64k16.f32.bf16.bf16" and "cp.async.bulk.tensor.2d bf16" line
//           of the files, set up as their README says (other cases are ptx_golden's and skipped);
// negative  what must go wrong: a TMA tile read before its mbarrier wait is still the 0xff poison;
//           a try_wait on the wrong parity of a fresh barrier returns at once with the tile not
//           there; every swizzled wgmma case replayed with another swizzle mode in its descriptors
//           mismatches the recording; accumulators read before wgmma.wait_group are NaN; and, each
//           in a child process (hopper_golden --die N), dies with a message: a wait on a phase that
//           never completes (wrong parity, missing tx bytes) → DEADLOCK, a thread ending with a
//           wgmma not waited for, a wgmma without wgmma.fence, an mbarrier used before init, a
//           bar.sync short of its thread count (DEADLOCK), a count that is not a multiple of 32;
// spec      not recorded: a 3-D TMA with 64B swizzle and out-of-bounds boxes against a host model;
//           TMA 128B tiles consumed by chained wgmma (4 k-steps, start + 32 bytes) for bf16 N = 256
//           and f16 N = 24 against a host GEMM; an mbarrier with 2 arrivals and tx bytes completing
//           only when all three reach zero, and its state-token wait; two warpgroups taking turns
//           through named barriers (bar.sync / bar.arrive) alternate strictly;
// emulator  two wgmma groups: wait_group 1 retires the older (= the recording), the newer stays NaN.
// It runs on the emulator only (its negative cases test the emulator's model; on a GPU they would
// hang or pass silently). nvcc compiles it with -DHOPPER_GOLDEN_COMPILE_ONLY for sm_90a as the check
// that the nvcc wrappers of simt_hopper.h build (npm run lint:cuda). Exit status 0 when all pass.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/half.h"
#include "simt/simt.h"
#include "golden_io.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // "the ABI for passing 64-byte aligned parameters changed in GCC 4.6" (TensorMap by value)
#endif

#if !defined(SIMT_EMU) && !defined(HOPPER_GOLDEN_COMPILE_ONLY)
#error "hopper_golden.cu runs on the emulator; nvcc only compiles it, with -DHOPPER_GOLDEN_COMPILE_ONLY (npm run lint:cuda)"
#endif

// ------------------------------------------------------------------------------ kernels
constexpr int kTileBytes = 16384;  // the recordings' A and B buffers
constexpr int kBarOffset = 2 * kTileBytes;
constexpr int kSmem = kBarOffset + 64;
// The wgmma replays: wrong-swizzle descriptors may read past the two buffers (0xff poison: NaN).
constexpr int kWgSmem = 65536;

struct WgCase {
  int offA, offB, lbo, sbo, mode;
};

// A and B (kTileBytes each) into shared memory at sm and sm + kTileBytes, by the block's 128 threads.
__device__ void stage_tiles(unsigned char* sm, const uint16_t* a, const uint16_t* b) {
  uint16_t* sa = reinterpret_cast<uint16_t*>(sm);
  uint16_t* sb = reinterpret_cast<uint16_t*>(sm + kTileBytes);
  for (int e = threadIdx.x; e < kTileBytes / 2; e += 128) {
    sa[e] = a[e];
    sb[e] = b[e];
  }
  __syncthreads();
}

// One warpgroup: A, B = gen(e, 3), gen(e, 4) in two 16 KiB buffers; D (scale-d 0) to out[32·t + i];
// early[32·t + i] = the accumulators read right after the issue (before wait_group).
template <bool TA, bool TB>
__global__ void wgmma_kernel(const uint16_t* a, const uint16_t* b, WgCase c, float* out, float* early) {
  SIMT_DYNAMIC_SHARED(unsigned char, sm);
  const int t = threadIdx.x;
  stage_tiles(sm, a, b);
  ptx::fence_proxy_async();
  const uint64_t da = ptx::make_wgmma_desc(sm + c.offA, c.lbo, c.sbo, c.mode);
  const uint64_t db = ptx::make_wgmma_desc(sm + kTileBytes + c.offB, c.lbo, c.sbo, c.mode);
  float d[32];
  for (int i = 0; i < 32; ++i) d[i] = 12345.f;  // scale-d 0 must ignore it
  ptx::wgmma_fence();
  ptx::wgmma_m64k16_f32_bf16<64, TA, TB>(d, da, db, false);
  ptx::wgmma_commit_group();
  for (int i = 0; i < 32; ++i) early[32 * t + i] = d[i];
  ptx::wgmma_wait_group<0>();
  for (int i = 0; i < 32; ++i) out[32 * t + i] = d[i];
}

// Two wgmma groups on two accumulator sets (the recorded setup of case c): after wait_group<1>
// the older group is written and the newer one still NaN (mid0 = d0, mid1 = d1 then); after
// wait_group<0> both (out0, out1). 32 registers per thread each.
__global__ void wgmma_groups_kernel(const uint16_t* a, const uint16_t* b, WgCase c, float* mid0, float* mid1, float* out0, float* out1) {
  SIMT_DYNAMIC_SHARED(unsigned char, sm);
  const int t = threadIdx.x;
  stage_tiles(sm, a, b);
  const uint64_t da = ptx::make_wgmma_desc(sm + c.offA, c.lbo, c.sbo, c.mode);
  const uint64_t db = ptx::make_wgmma_desc(sm + kTileBytes + c.offB, c.lbo, c.sbo, c.mode);
  float d0[32], d1[32];
  ptx::wgmma_fence();
  ptx::wgmma_m64k16_f32_bf16<64>(d0, da, db, false);
  ptx::wgmma_commit_group();
  ptx::wgmma_m64k16_f32_bf16<64>(d1, da, db, false);
  ptx::wgmma_commit_group();
  ptx::wgmma_wait_group<1>();
  for (int i = 0; i < 32; ++i) mid0[32 * t + i] = d0[i], mid1[32 * t + i] = d1[i];
  ptx::wgmma_wait_group<0>();
  for (int i = 0; i < 32; ++i) out0[32 * t + i] = d0[i], out1[32 * t + i] = d1[i];
}

// 2-D TMA of the recordings: thread 0 inits the barrier, arrives with expect_tx of the box bytes
// and issues the copy; everyone waits; out = the tile. early = the tile read before any wait.
// wrong_parity: first a try_wait on parity 1 (the "preceding" phase of a fresh barrier): flag[0]
// = its result, then early is read.
__global__ void tma2d_kernel(__grid_constant__ const ptx::TensorMap map, int x0, int y0, int words, uint16_t* out,
                             uint16_t* early, int wrong_parity, int* flag) {
  SIMT_DYNAMIC_SHARED(unsigned char, sm);
  uint16_t* tile = reinterpret_cast<uint16_t*>(sm);
  uint64_t* bar = reinterpret_cast<uint64_t*>(sm + kBarOffset);
  const int t = threadIdx.x;
  if (t == 0) {
    ptx::mbarrier_init(bar, 1);
    ptx::fence_mbarrier_init();
  }
  __syncthreads();
  if (t == 0) {
    ptx::mbarrier_arrive_expect_tx(bar, static_cast<uint32_t>(2 * words));
    ptx::cp_async_bulk_tensor_2d_g2s(tile, &map, x0, y0, bar);
  }
  if (wrong_parity) {
    const bool r = ptx::mbarrier_try_wait_parity(bar, 1);
    if (t == 0) flag[0] = r;
  }
  for (int e = t; e < words; e += blockDim.x) early[e] = tile[e];
  __syncthreads();
  ptx::mbarrier_wait_parity(bar, 0);
  for (int e = t; e < words; e += blockDim.x) out[e] = tile[e];
}

// 3-D TMA: box BX × BY × BZ at (x0, y0, z0); out = the tile.
__global__ void tma3d_kernel(__grid_constant__ const ptx::TensorMap map, int x0, int y0, int z0, int bytes, unsigned char* out) {
  SIMT_DYNAMIC_SHARED(unsigned char, sm);
  uint64_t* bar = reinterpret_cast<uint64_t*>(sm + kBarOffset);
  const int t = threadIdx.x;
  if (t == 0) {
    ptx::mbarrier_init(bar, 1);
    ptx::fence_mbarrier_init();
  }
  __syncthreads();
  if (t == 0) {
    ptx::mbarrier_arrive_expect_tx(bar, static_cast<uint32_t>(bytes));
    ptx::cp_async_bulk_tensor_3d_g2s(sm, &map, x0, y0, z0, bar);
  }
  ptx::mbarrier_wait_parity(bar, 0);
  for (int e = t; e < bytes; e += blockDim.x) out[e] = sm[e];
}

// TMA → wgmma: A (64 × 64, K inner) and B (N × 64, K inner) loaded with 128B swizzle (two
// copies on one barrier), then 4 chained wgmma k-steps with K-major 128B descriptors
// (SBO 1024, start + 32 bytes per k-step). out[NR·t + i] = D.
template <int N, ptx::WgKind Kind>
__global__ void tma_wgmma_kernel(__grid_constant__ const ptx::TensorMap ma, __grid_constant__ const ptx::TensorMap mb, float* out) {
  SIMT_DYNAMIC_SHARED(unsigned char, sm);
  unsigned char* sa = sm;
  unsigned char* sb = sm + 8192;
  uint64_t* bar = reinterpret_cast<uint64_t*>(sm + 8192 + 128 * N);
  const int t = threadIdx.x;
  if (t == 0) {
    ptx::mbarrier_init(bar, 1);
    ptx::fence_mbarrier_init();
  }
  __syncthreads();
  if (t == 0) {
    ptx::mbarrier_arrive_expect_tx(bar, 8192 + 128 * N);
    ptx::cp_async_bulk_tensor_2d_g2s(sa, &ma, 0, 0, bar);
    ptx::cp_async_bulk_tensor_2d_g2s(sb, &mb, 0, 0, bar);
  }
  ptx::mbarrier_wait_parity(bar, 0);
  float d[N / 2];
  ptx::wgmma_fence();
  for (int ks = 0; ks < 4; ++ks) {
    const uint64_t da = ptx::make_wgmma_desc(sa + 32 * ks, 16, 1024, 1);
    const uint64_t db = ptx::make_wgmma_desc(sb + 32 * ks, 16, 1024, 1);
    if constexpr (Kind == ptx::kWgBf16) ptx::wgmma_m64k16_f32_bf16<N>(d, da, db, ks > 0);
    else ptx::wgmma_m64k16_f32_f16<N>(d, da, db, ks > 0);
  }
  ptx::wgmma_commit_group();
  ptx::wgmma_wait_group<0>();
  for (int i = 0; i < N / 2; ++i) out[(N / 2) * t + i] = d[i];
}

// mbarrier with 2 arrivals and tx bytes (no copies: thread 1 does complete_tx by hand).
// res: [0] phase 0 done after one arrival (want 0), [1] after both arrivals but 16 tx bytes
// outstanding (want 0), [2] after complete_tx (want 1), [3] the token wait (want 1), [4] parity 1
// not done (want 0), [5] test_wait parity 0 (want 1).
__global__ void mbar_spec_kernel(int* res) {
  SIMT_DYNAMIC_SHARED(unsigned char, sm);
  uint64_t* bar = reinterpret_cast<uint64_t*>(sm);
  const int t = threadIdx.x;
  if (t == 0) ptx::mbarrier_init(bar, 2);
  __syncthreads();
  uint64_t token = 0;
  if (t == 0) token = ptx::mbarrier_arrive_expect_tx(bar, 16);
  __syncthreads();
  if (t == 0) res[0] = ptx::mbarrier_test_wait_parity(bar, 0);
  __syncthreads();
  if (t == 1) token = ptx::mbarrier_arrive(bar);
  __syncthreads();
  if (t == 0) res[1] = ptx::mbarrier_test_wait_parity(bar, 0);
  __syncthreads();
  if (t == 1) ptx::mbarrier_complete_tx(bar, 16);
  __syncthreads();
  if (t == 0) res[2] = ptx::mbarrier_test_wait_parity(bar, 0);
  if (t == 1) res[3] = ptx::mbarrier_try_wait(bar, token);
  if (t == 2) res[4] = ptx::mbarrier_test_wait_parity(bar, 1);
  if (t == 3) res[5] = ptx::mbarrier_test_wait_parity(bar, 0);
}

// Named barriers as a ping-pong: two warpgroups take kTurns turns each, strictly alternating
// (group 0 first: group 1's arrive opens its first turn), each turn's first thread logging its
// group. A sync that did not wait lets a group run ahead (forward schedule: 0,0,…); an arrive that
// waited would deadlock.
constexpr int kTurns = 5;
__global__ void named_pingpong_kernel(int* log) {
  SIMT_DYNAMIC_SHARED(int, sm);
  const int t = threadIdx.x, group = t / 128;
  if (t == 0) sm[0] = 0;
  __syncthreads();
  if (group == 1) ptx::named_barrier_arrive(1, 256);
  for (int turn = 0; turn < kTurns; ++turn) {
    ptx::named_barrier_sync(1 + group, 256);
    if (t % 128 == 0) log[sm[0]++] = group;
    if (!(group == 1 && turn == kTurns - 1)) ptx::named_barrier_arrive(2 - group, 256);
  }
}

// Misuses that must die with a message (child process).
__global__ void die_kernel(int which, __grid_constant__ const ptx::TensorMap map) {
  SIMT_DYNAMIC_SHARED(unsigned char, sm);
  uint64_t* bar = reinterpret_cast<uint64_t*>(sm + kBarOffset);
  const int t = threadIdx.x;
  if (which == 5) {  // half the block syncs on a barrier of the whole block's count
    if (t < 64) ptx::named_barrier_sync(1, 128);
    return;
  }
  if (which == 6) {
    ptx::named_barrier_sync(1, 100);
    return;
  }
  if (which == 4) {  // used before init: the 0xff poison
    if (t == 0) ptx::mbarrier_arrive(bar);
    return;
  }
  if (which == 2 || which == 3) {
    ptx::make_wgmma_desc(sm, 16, 1024, 1);
    float d[4] = {0, 0, 0, 0};
    if (which == 2) ptx::wgmma_fence();
    ptx::wgmma_m64k16_f32_bf16<8>(d, ptx::make_wgmma_desc(sm, 128, 256, 0), ptx::make_wgmma_desc(sm, 128, 256, 0), false);
    ptx::wgmma_commit_group();
    return;  // which 2: no wait_group; which 3: no fence (dies at the issue)
  }
  if (t == 0) ptx::mbarrier_init(bar, 1);
  __syncthreads();
  if (t == 0) {
    ptx::mbarrier_arrive_expect_tx(bar, which == 1 ? 2 * 2048 : 2048);  // 1: expects twice the box
    ptx::cp_async_bulk_tensor_2d_g2s(sm, &map, 0, 0, bar);
  }
  ptx::mbarrier_wait_parity(bar, 0);
  if (which == 0) ptx::mbarrier_wait_parity(bar, 1);  // the next phase: nobody arrives
}
using golden::DeathCase;
const DeathCase kDeath[] = {
    {"mbarrier wait on parity 1 after phase 0 completed, no arrivals follow", "mbarrier phase that never completes"},
    {"mbarrier expect_tx of twice the TMA box bytes", "mbarrier phase that never completes"},
    {"a thread ends with a wgmma not waited for (no wait_group)", "not retired by a wgmma.wait_group"},
    {"wgmma.mma_async without wgmma.fence", "without a wgmma.fence"},
    {"mbarrier arrive before mbarrier.init", "was not initialized"},
    {"bar.sync 1, 128 reached by 64 threads", "in a named barrier (bar.sync) short of its thread count"},
    {"bar.sync with a thread count that is not a multiple of 32", "must be a multiple of 32"},
};

// ------------------------------------------------------------------------------ host
namespace {
int g_failures = 0, g_ok = 0;
void report(const char* label, const std::string& name, bool ok, const std::string& detail = "") {
  std::printf("%s %-8s %s%s%s\n", ok ? "ok  " : "FAIL", label, name.c_str(), detail.empty() ? "" : ": ", detail.c_str());
  if (ok) ++g_ok;
  else ++g_failures;
}
using golden::DevBuf;
using golden::gen;
using golden::number_field;
using golden::parse_rows;
using golden::string_field;
using golden::synced;
// ---- wgmma
std::vector<uint16_t> gen_bf16(uint32_t salt) {
  std::vector<uint16_t> v(kTileBytes / 2);
  for (uint32_t e = 0; e < v.size(); ++e) v[e] = lk::float_to_bf16(static_cast<float>(gen(e, salt)));
  return v;
}
// Runs the recorded setup; returns D (128 × 32) and the accumulators seen before the wait.
bool run_wgmma(const WgCase& c, bool ta, bool tb, std::vector<float>& d, std::vector<float>& early) {
  static const std::vector<uint16_t> a = gen_bf16(3), b = gen_bf16(4);
  DevBuf<uint16_t> da(a.size(), a.data()), db(b.size(), b.data());
  DevBuf<float> out(128 * 32), ear(128 * 32);
  if (ta && tb) simt_launch(wgmma_kernel<true, true>, dim3(1), dim3(128), kWgSmem, 0, da.p, db.p, c, out.p, ear.p);
  else if (ta) simt_launch(wgmma_kernel<true, false>, dim3(1), dim3(128), kWgSmem, 0, da.p, db.p, c, out.p, ear.p);
  else if (tb) simt_launch(wgmma_kernel<false, true>, dim3(1), dim3(128), kWgSmem, 0, da.p, db.p, c, out.p, ear.p);
  else simt_launch(wgmma_kernel<false, false>, dim3(1), dim3(128), kWgSmem, 0, da.p, db.p, c, out.p, ear.p);
  if (!synced("wgmma launch")) return false;
  d = out.get();
  early = ear.get();
  return true;
}
// Number of registers differing from the recording (-1: wrong shape).
int diff_regs(const std::vector<float>& d, const std::vector<std::vector<double>>& rows, std::string* first) {
  if (rows.size() != 128) return -1;
  int bad = 0;
  for (int t = 0; t < 128; ++t) {
    if (rows[t].size() != 32) return -1;
    for (int i = 0; i < 32; ++i) {
      const uint32_t want = lk::float_to_bits(static_cast<float>(rows[t][i])), have = lk::float_to_bits(d[32 * t + i]);
      if (want != have && bad++ == 0 && first) {
        char b[120];
        std::snprintf(b, sizeof b, "thread %d reg %d: expected %g, got %g", t, i, lk::bits_to_float(want), lk::bits_to_float(have));
        *first = b;
      }
    }
  }
  return bad;
}

// ---- TMA
const char* kSwz[] = {"none", "32B", "64B", "128B"};
ptx::TmaSwizzle swizzle_of(const std::string& s, bool& ok) {
  ok = true;
  for (int i = 0; i < 4; ++i)
    if (s == kSwz[i]) return static_cast<ptx::TmaSwizzle>(i);
  ok = false;
  return ptx::kTmaSwizzleNone;
}
}  // namespace

// --die N: the child process of the death tests.
static int die_mode(int which) {
  std::vector<uint16_t> g(64 * 64, 1);
  DevBuf<uint16_t> dg(g.size(), g.data());
  ptx::TensorMap map;
  const uint64_t dims[2] = {64, 64}, strides[1] = {128};
  const uint32_t box[2] = {64, 16};
  ptx::tensor_map_encode_tiled(&map, 2, 2, dg.p, dims, strides, box, ptx::kTmaSwizzle128B);
  simt_launch(die_kernel, dim3(1), dim3(128), kSmem, 0, which, map);
  synced("die launch");
  std::printf("die mode %d: the kernel did not die\n", which);
  return 0;
}

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (argc == 3 && !std::strcmp(argv[1], "--die")) return die_mode(std::atoi(argv[2]));
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <ptx_golden.jsonl> [<ptx_golden_tma.jsonl> ...]\n", argv[0]);
    return 2;
  }
  std::printf("hopper_golden: the emulated sm_90 wrappers (simt_hopper.h) against the H200 recordings\n");
  int n_wgmma = 0, n_tma = 0, n_other = 0, n_swz_neg = 0;
  bool groups_checked = false;
  for (int fi = 1; fi < argc; ++fi) {
    FILE* f = std::fopen(argv[fi], "rb");
    if (!f) {
      std::fprintf(stderr, "hopper_golden: cannot open %s\n", argv[fi]);
      return 2;
    }
    std::vector<std::string> lines;
    std::string line;
    for (int c; (c = std::fgetc(f)) != EOF;) {
      if (c != '\n') line += static_cast<char>(c);
      else if (!line.empty()) lines.push_back(std::move(line)), line.clear();
    }
    if (!line.empty()) lines.push_back(line);
    std::fclose(f);
    const char* base = std::strrchr(argv[fi], '/') ? std::strrchr(argv[fi], '/') + 1 : argv[fi];
    int idx = 0;
    for (const std::string& l : lines) {
      ++idx;
      const std::string name = string_field(l, "case");
      std::vector<std::vector<double>> rows;
      const bool has_rows = parse_rows(l, "rows", rows) || parse_rows(l, "lanes", rows);
      char tag[64];
      std::snprintf(tag, sizeof tag, "%s:%d ", base, idx);
      if (name == "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16") {
        ++n_wgmma;
        const WgCase c{static_cast<int>(number_field(l, "offA", 0)), static_cast<int>(number_field(l, "offB", 0)), static_cast<int>(number_field(l, "lbo", 0)),
                       static_cast<int>(number_field(l, "sbo", 0)), static_cast<int>(number_field(l, "swizzle_mode", 0))};
        const bool ta = number_field(l, "trans_a", 0) != 0, tb = number_field(l, "trans_b", 0) != 0;
        char desc[320];
        std::snprintf(desc, sizeof desc, "%swgmma m64n64k16 bf16 trans_a %d trans_b %d offA %d offB %d lbo %d sbo %d swizzle %d", tag, ta,
                      tb, c.offA, c.offB, c.lbo, c.sbo, c.mode);
        std::vector<float> d, early;
        if (!has_rows || !run_wgmma(c, ta, tb, d, early)) {
          report("recorded", desc, false, "cannot parse or run");
          continue;
        }
        std::string first;
        const int bad = diff_regs(d, rows, &first);
        report("recorded", desc, bad == 0, bad ? std::to_string(bad) + " of 4096 registers differ; " + first : "");
        if (!ta && !tb && c.mode == 0 && !groups_checked) {  // once: wait_group<1> / <0> on two groups
          groups_checked = true;
          static const std::vector<uint16_t> a = gen_bf16(3), b = gen_bf16(4);
          DevBuf<uint16_t> da(a.size(), a.data()), db(b.size(), b.data());
          DevBuf<float> m0(4096), m1(4096), o0(4096), o1(4096);
          simt_launch(wgmma_groups_kernel, dim3(1), dim3(128), kWgSmem, 0, da.p, db.p, c, m0.p, m1.p, o0.p, o1.p);
          const bool ran = synced("wgmma groups launch");
          int nan1 = 0;
          for (float v : m1.get()) nan1 += std::isnan(v);
          const int b0 = diff_regs(m0.get(), rows, nullptr), b1 = diff_regs(o0.get(), rows, nullptr), b2 = diff_regs(o1.get(), rows, nullptr);
          report("emulator", std::string(desc) + ": two groups: wait_group 1 writes the older (= recording), the newer stays NaN; wait_group 0 both",
                 ran && b0 == 0 && nan1 == 4096 && b1 == 0 && b2 == 0,
                 "older " + std::to_string(b0) + " differ, newer " + std::to_string(nan1) + " of 4096 NaN, after wait 0: " + std::to_string(b1) + " / " +
                     std::to_string(b2) + " differ");
        }
        int not_nan = 0;
        for (float v : early) not_nan += !std::isnan(v);
        report("negative", std::string(desc) + ": accumulators read before wait_group are NaN", not_nan == 0,
               not_nan ? std::to_string(not_nan) + " were not" : "");
        if (c.mode != 0) {  // every other swizzle mode must mismatch the recording
          for (int m = 0; m < 4; ++m) {
            if (m == c.mode) continue;
            WgCase w = c;
            w.mode = m;
            ++n_swz_neg;
            const bool ran = run_wgmma(w, ta, tb, d, early);
            const int wrong = ran ? diff_regs(d, rows, nullptr) : -1;
            report("negative", std::string(desc) + ": replayed with swizzle mode " + std::to_string(m) + " mismatches", ran && wrong > 0,
                   ran ? std::to_string(wrong) + " registers differ" : "did not run");
          }
        }
      } else if (name == "cp.async.bulk.tensor.2d bf16") {
        ++n_tma;
        const int GX = static_cast<int>(number_field(l, "GX", 0)), GY = static_cast<int>(number_field(l, "GY", 0));
        const int BX = static_cast<int>(number_field(l, "BX", 0)), BY = static_cast<int>(number_field(l, "BY", 0));
        const int x0 = static_cast<int>(number_field(l, "x0", 0)), y0 = static_cast<int>(number_field(l, "y0", 0));
        bool swz_ok;
        const ptx::TmaSwizzle sw = swizzle_of(string_field(l, "swizzle"), swz_ok);
        char desc[320];
        std::snprintf(desc, sizeof desc, "%sTMA 2-D bf16 %dx%d box %dx%d swizzle %s at (%d, %d)", tag, GX, GY, BX, BY,
                      string_field(l, "swizzle").c_str(), x0, y0);
        std::vector<uint16_t> g(static_cast<size_t>(GX) * GY);
        for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<uint16_t>(i);
        DevBuf<uint16_t> dg(g.size(), g.data());
        ptx::TensorMap map;
        const uint64_t dims[2] = {static_cast<uint64_t>(GX), static_cast<uint64_t>(GY)}, strides[1] = {2ull * GX};
        const uint32_t box[2] = {static_cast<uint32_t>(BX), static_cast<uint32_t>(BY)};
        const char* why = "";
        if (!swz_ok || !has_rows || ptx::tensor_map_encode_tiled(&map, 2, 2, dg.p, dims, strides, box, sw, ptx::kTmaOobFillZero, &why)) {
          report("recorded", desc, false, std::string("cannot set up: ") + why);
          continue;
        }
        const int words = BX * BY;
        for (int wrong = 0; wrong < 2; ++wrong) {
          DevBuf<uint16_t> out(words), early(words);
          DevBuf<int> flag(1);
          simt_launch(tma2d_kernel, dim3(1), dim3(128), kSmem, 0, map, x0, y0, words, out.p, early.p, wrong, flag.p);
          const bool ran = synced("tma launch");
          const std::vector<uint16_t> o = out.get(), e = early.get();
          int bad = 0, not_poison = 0;
          std::string first;
          for (int y = 0; y < BY && ran; ++y)
            for (int x = 0; x < BX; ++x) {
              const uint16_t want = static_cast<uint16_t>(y < static_cast<int>(rows.size()) && x < static_cast<int>(rows[y].size()) ? rows[y][x] : -1);
              if (o[y * BX + x] != want && bad++ == 0) first = "row " + std::to_string(y) + " col " + std::to_string(x) + ": expected " +
                                                               std::to_string(want) + ", got " + std::to_string(o[y * BX + x]);
              not_poison += e[y * BX + x] != 0xffff;
            }
          if (!wrong) {
            report("recorded", desc, ran && bad == 0 && static_cast<int>(rows.size()) == BY, bad ? std::to_string(bad) + " words differ; " + first : "");
            report("negative", std::string(desc) + ": the tile read before the mbarrier wait is stale (0xff poison)", ran && not_poison == 0,
                   std::to_string(not_poison) + " words had landed");
          } else {
            const int f0 = flag.get()[0];
            report("negative", std::string(desc) + ": try_wait.parity 1 on a fresh barrier returns true at once, tile stale; parity 0 then gets it",
                   ran && f0 == 1 && not_poison == 0 && bad == 0,
                   "returned " + std::to_string(f0) + ", " + std::to_string(not_poison) + " words had landed, " + std::to_string(bad) + " wrong after");
          }
        }
      } else {
        ++n_other;
      }
    }
  }

  // ---- spec: 3-D TMA, 64B swizzle, boxes partly outside (negative coordinates included)
  {
    const int GX = 40, GY = 7, GZ = 5, BX = 32, BY = 4, BZ = 3;
    std::vector<uint16_t> g(GX * GY * GZ);
    for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<uint16_t>(i + 1);
    DevBuf<uint16_t> dg(g.size(), g.data());
    ptx::TensorMap map;
    const uint64_t dims[3] = {GX, GY, GZ}, strides[2] = {2 * 48, 2 * 48 * 8};  // padded pitches: row 48 elements, plane 8 rows
    std::vector<uint16_t> gp(48 * 8 * GZ, 0);
    for (int z = 0; z < GZ; ++z)
      for (int y = 0; y < GY; ++y)
        for (int x = 0; x < GX; ++x) gp[(z * 8 + y) * 48 + x] = g[(z * GY + y) * GX + x];
    DevBuf<uint16_t> dgp(gp.size(), gp.data());
    const uint32_t box[3] = {BX, BY, BZ};
    const char* why = "";
    const int enc = ptx::tensor_map_encode_tiled(&map, 2, 3, dgp.p, dims, strides, box, ptx::kTmaSwizzle64B, ptx::kTmaOobFillZero, &why);
    const int coords[3][3] = {{0, 0, 0}, {20, 5, 3}, {-8, -2, -1}};
    for (const auto& c : coords) {
      const int bytes = 2 * BX * BY * BZ;
      DevBuf<unsigned char> out(bytes);
      if (!enc) simt_launch(tma3d_kernel, dim3(1), dim3(64), kSmem, 0, map, c[0], c[1], c[2], bytes, out.p);
      const bool ran = !enc && synced("tma3d launch");
      const std::vector<unsigned char> o = out.get();
      int bad = 0;
      for (int z = 0; z < BZ && ran; ++z)
        for (int y = 0; y < BY; ++y)
          for (int x = 0; x < BX; ++x) {
            const int gx = c[0] + x, gy = c[1] + y, gz = c[2] + z;
            const uint16_t want = gx >= 0 && gx < GX && gy >= 0 && gy < GY && gz >= 0 && gz < GZ ? g[(gz * GY + gy) * GX + gx] : 0;
            uint32_t a = 2 * (((z * BY) + y) * BX + x);
            a ^= (a >> 3) & 0x30u;  // 64B swizzle, smem buffer at window address 0
            uint16_t have;
            std::memcpy(&have, &o[a], 2);
            bad += have != want;
          }
      report("spec", "TMA 3-D bf16 40x7x5 (padded strides) box 32x4x3 swizzle 64B at (" + std::to_string(c[0]) + ", " + std::to_string(c[1]) + ", " +
                         std::to_string(c[2]) + ") = host model",
             ran && bad == 0, enc ? why : std::to_string(bad) + " elements differ");
    }
  }

  // ---- spec: TMA 128B tiles → 4 chained wgmma k-steps
  auto tma_wgmma = [](auto n_tag, auto kind_tag, const char* label) {
    constexpr int N = decltype(n_tag)::value;
    constexpr ptx::WgKind Kind = decltype(kind_tag)::value;
    std::vector<uint16_t> a(64 * 64), b(N * 64);
    std::vector<double> fa(a.size()), fb(b.size());
    auto enc = [&](int v) { return Kind == ptx::kWgBf16 ? lk::float_to_bf16(static_cast<float>(v)) : lk::float_to_fp16(static_cast<float>(v)); };
    for (size_t i = 0; i < a.size(); ++i) fa[i] = gen(static_cast<uint32_t>(i), 7), a[i] = enc(static_cast<int>(fa[i]));
    for (size_t i = 0; i < b.size(); ++i) fb[i] = gen(static_cast<uint32_t>(i), 8), b[i] = enc(static_cast<int>(fb[i]));
    DevBuf<uint16_t> da(a.size(), a.data()), db(b.size(), b.data());
    ptx::TensorMap ma, mb;
    const uint64_t dimsa[2] = {64, 64}, dimsb[2] = {64, static_cast<uint64_t>(N)}, strides[1] = {128};
    const uint32_t boxa[2] = {64, 64}, boxb[2] = {64, static_cast<uint32_t>(N)};
    const int e1 = ptx::tensor_map_encode_tiled(&ma, 2, 2, da.p, dimsa, strides, boxa, ptx::kTmaSwizzle128B);
    const int e2 = ptx::tensor_map_encode_tiled(&mb, 2, 2, db.p, dimsb, strides, boxb, ptx::kTmaSwizzle128B);
    DevBuf<float> out(128 * (N / 2));
    if (!e1 && !e2) simt_launch(tma_wgmma_kernel<N, Kind>, dim3(1), dim3(128), 8192 + 128 * N + 64, 0, ma, mb, out.p);
    const bool ran = !e1 && !e2 && synced("tma→wgmma launch");
    const std::vector<float> o = out.get();
    int bad = 0;
    for (int t = 0; t < 128 && ran; ++t)
      for (int i = 0; i < N / 2; ++i) {
        const int w = t / 32, g = (t % 32) >> 2, q = t & 3;
        const int m = 16 * w + g + 8 * ((i >> 1) & 1), n = 8 * (i >> 2) + 2 * q + (i & 1);
        double acc = 0;
        for (int k = 0; k < 64; ++k) acc += fa[m * 64 + k] * fb[n * 64 + k];
        bad += o[(N / 2) * t + i] != static_cast<float>(acc);
      }
    report("spec", label, ran && bad == 0, std::to_string(bad) + " registers differ from the host GEMM");
  };
  tma_wgmma(std::integral_constant<int, 256>{}, std::integral_constant<ptx::WgKind, ptx::kWgBf16>{},
            "TMA 128B tiles A 64x64, B 256x64 -> 4 chained wgmma m64n256k16 bf16 (start + 32 B per k-step) = host GEMM");
  tma_wgmma(std::integral_constant<int, 24>{}, std::integral_constant<ptx::WgKind, ptx::kWgF16>{},
            "TMA 128B tiles A 64x64, B 24x64 -> 4 chained wgmma m64n24k16 f16 = host GEMM");

  // ---- spec: mbarrier arrival count + tx bytes
  {
    DevBuf<int> res(6);
    simt_launch(mbar_spec_kernel, dim3(1), dim3(32), 64, 0, res.p);
    const bool ran = synced("mbarrier launch");
    const std::vector<int> r = res.get();
    const int want[6] = {0, 0, 1, 1, 0, 1};
    std::string got;
    bool ok = ran;
    for (int i = 0; i < 6; ++i) got += std::to_string(r[i]), ok = ok && r[i] == want[i];
    report("spec", "mbarrier count 2 + expect_tx 16: completes only when both arrivals and complete_tx are in; token and parity waits", ok,
           "got " + got + ", want 001101");
  }

  // ---- spec: named barriers, two warpgroups in turns
  {
    DevBuf<int> log(2 * kTurns);
    simt_launch(named_pingpong_kernel, dim3(1), dim3(256), 64, 0, log.p);
    const bool ran = synced("named barrier launch");
    const std::vector<int> r = log.get();
    bool ok = ran;
    std::string got;
    for (int i = 0; i < 2 * kTurns; ++i) got += std::to_string(r[i]), ok = ok && r[i] == i % 2;
    report("spec", "bar.sync / bar.arrive 256 on barriers 1, 2: two warpgroups of 128 alternate turns, arrive never waits", ok,
           "got " + got + ", want 0101010101");
  }

  // ---- death tests (child processes)
  for (size_t i = 0; i < sizeof kDeath / sizeof kDeath[0]; ++i) {
    std::string detail;
    const bool ok = golden::dies_as_expected(argv[0], i, kDeath[i], &detail);
    report("negative", std::string("dies: ") + kDeath[i].name, ok, detail);
  }

  std::printf("hopper_golden: %d wgmma and %d TMA recorded cases replayed (%d other cases left to ptx_golden), %d wrong-swizzle replays; "
              "%d checks ok, %s\n",
              n_wgmma, n_tma, n_other, n_swz_neg, g_ok, g_failures ? (std::to_string(g_failures) + " FAILED").c_str() : "everything matches");
  return g_failures ? 1 : 0;
}
