// ptx_golden.cu — replays recordings of a real H200 through the ptx:: wrappers (csrc/simt/simt_ptx.h)
// and compares every register of every lane, bit for bit.
//
//   ptx_golden <ptx_golden.jsonl>           (test/fixtures/gpu-golden/ptx_golden.jsonl)
//
// The recordings (test/fixtures/gpu-golden/README.md says how each case was set up) hold
// mma.sync bf16 / f16 / tf32 and ldmatrix x1 / x2 / x4 / x4.trans; every case found in the file is
// set up exactly as described there and must match. wgmma and TMA cases are skipped here: the
// emulator-only test/simt/hopper_golden.cu replays them (csrc/simt/simt_hopper.h). Then:
//   derived  checks that follow from the recordings: ldmatrix x1/x2.trans = the first registers of
//            x4.trans; x1/x2 ignore the addresses of lanes past their matrices; two chained mma
//            with d aliasing c give 2·D.
//   spec     not in the recordings, from the PTX ISA: cvt.rna.tf32.f32 rounding; tf32 mma ignoring the
//            low 13 mantissa bits of its inputs; cp.async results after the waits and zero-fill.
//            (All recorded, derived and spec checks passed on an H200 with the nvcc build of this
//            file, sm_90a and sm_80 PTX JIT, CUDA 13, driver 580.159, on 2026-12-04.)
//   emulator (SIMT_EMU only) what only the emulator can promise: a cp.async lands at its wait and not
//            before (reads before it see the 0xff poison), wait_group<1> leaves the newest group
//            pending, wait_group<0> ignores uncommitted copies, copies land when their thread
//            exits; simt_trap() ends one thread and makes the device error sticky; misaligned
//            cp.async / ldmatrix addresses, bad src_bytes and partial-warp mma die with a message
//            (each in a child process: `ptx_golden --die N`).
// One line per case; exit status 0 when everything matches, 1 otherwise.
//
// The same file is the GPU check of the nvcc wrappers (run it on a machine with an sm_80+ GPU):
//   nvcc -arch=sm_90a -std=c++17 -I csrc -x cu test/simt/ptx_golden.cu -o ptx_golden
//   ./ptx_golden test/fixtures/gpu-golden/ptx_golden.jsonl
// Emulated build: CMake target ptx_golden (LK_CUDA_EMULATED), run by scripts/test-emulated.mjs.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/half.h"
#include "simt/simt.h"
#include "golden_io.h"

// ------------------------------------------------------------------------------ kernels
enum MmaOp { kMmaBf16, kMmaF16, kMmaTf32 };

// reps chained mma.sync with d aliasing c, from c = 0; lane l's registers at a[4l..], b[2l..], d[4l..].
template <int Op>
__global__ void mma_kernel(const uint32_t* a, const uint32_t* b, float* d, int reps) {
#if defined(SIMT_DEVICE_PATH)
  const int l = threadIdx.x;
  uint32_t ra[4], rb[2];
  for (int i = 0; i < 4; ++i) ra[i] = a[4 * l + i];
  for (int i = 0; i < 2; ++i) rb[i] = b[2 * l + i];
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int rep = 0; rep < reps; ++rep) {
    if constexpr (Op == kMmaBf16) ptx::mma_m16n8k16_bf16(acc, ra, rb, acc);
    else if constexpr (Op == kMmaF16) ptx::mma_m16n8k16_f16(acc, ra, rb, acc);
    else ptx::mma_m16n8k8_tf32(acc, ra, rb, acc);
  }
  for (int i = 0; i < 4; ++i) d[4 * l + i] = acc[i];
#endif
}

// A 1 KiB shared buffer whose 16-bit word e holds e; lane l passes the address of byte 32·l
// (= ((l/8)·8 + l%8)·32, the recorded setup), or, with ignored_from < 32, lanes >= ignored_from
// pass a misaligned address (ldmatrix must not use it). out[4l + i] = register i of lane l.
template <int NM, bool Trans>
__global__ void ldmatrix_kernel(uint32_t* out, int ignored_from) {
#if defined(SIMT_DEVICE_PATH)
  SIMT_DYNAMIC_SHARED(uint16_t, buf);
  const int l = threadIdx.x;
  for (int e = l; e < 512; e += 32) buf[e] = static_cast<uint16_t>(e);
  __syncthreads();
  const unsigned char* row = reinterpret_cast<const unsigned char*>(buf) + 32 * l + (l >= ignored_from ? 8 : 0);
  uint32_t r[NM];
  if constexpr (NM == 1 && !Trans) ptx::ldmatrix_x1(r, row);
  else if constexpr (NM == 2 && !Trans) ptx::ldmatrix_x2(r, row);
  else if constexpr (NM == 4 && !Trans) ptx::ldmatrix_x4(r, row);
  else if constexpr (NM == 1) ptx::ldmatrix_x1_trans(r, row);
  else if constexpr (NM == 2) ptx::ldmatrix_x2_trans(r, row);
  else ptx::ldmatrix_x4_trans(r, row);
  for (int i = 0; i < NM; ++i) out[4 * l + i] = r[i];
#endif
}

__global__ void cvt_kernel(const float* in, uint32_t* out, int n) {
#if defined(SIMT_DEVICE_PATH)
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = ptx::cvt_rna_tf32(in[i]);
#endif
}

// cp.async checks, one warp; result slot s of thread t is res[kSlots·t + s] (1 = as expected).
enum CpSlot {
  kGroup0AfterWait1,   // wait_group 1 landed the older group
  kGroup1AfterWait0,   // wait_group 0 landed the newer one
  kZeroFill0,          // src_bytes 0 (src nullptr): 16 zero bytes
  kZeroFill5,          // src_bytes 5: 5 bytes, then 11 zeros
  kZeroFill16,         // src_bytes 16: the 16 bytes
  kEmuBeforeWait,      // emulator: both stages still poisoned before any wait
  kEmuNewestPending,   // emulator: after wait_group 1 the newest group is still poisoned
  kEmuOpenGroup,       // emulator: wait_group 0 did not land the uncommitted copies
  kSlots
};
constexpr int kCpSmem = 1024 + 48 * 32;

__device__ inline bool bytes_equal(const unsigned char* a, const unsigned char* b, int n) {
  for (int i = 0; i < n; ++i)
    if (a[i] != b[i]) return false;
  return true;
}
__device__ inline bool bytes_all(const unsigned char* a, unsigned char v, int n) {
  for (int i = 0; i < n; ++i)
    if (a[i] != v) return false;
  return true;
}

__global__ void cp_async_kernel(const unsigned char* src, int* res) {
#if defined(SIMT_DEVICE_PATH)
  SIMT_DYNAMIC_SHARED(unsigned char, sm);
  const int t = threadIdx.x;
  int* r = res + kSlots * t;
  unsigned char* st0 = sm + 16 * t;
  unsigned char* st1 = sm + 512 + 16 * t;
  unsigned char* z = sm + 1024 + 48 * t;
  const unsigned char* g0 = src + 16 * t;
  const unsigned char* g1 = src + 512 + 16 * t;
  ptx::cp_async_16(st0, g0);
  ptx::cp_async_commit();  // group 0
  ptx::cp_async_16(st1, g1);
  ptx::cp_async_commit();  // group 1
#if defined(SIMT_EMU)
  r[kEmuBeforeWait] = bytes_all(st0, 0xff, 16) && bytes_all(st1, 0xff, 16);
#endif
  ptx::cp_async_wait<1>();
  r[kGroup0AfterWait1] = bytes_equal(st0, g0, 16);
#if defined(SIMT_EMU)
  r[kEmuNewestPending] = bytes_all(st1, 0xff, 16);
#endif
  ptx::cp_async_16(z, nullptr, 0);  // an open group: not committed yet
  ptx::cp_async_16(z + 16, g0, 5);
  ptx::cp_async_16(z + 32, g1, 16);
  ptx::cp_async_wait<0>();
  r[kGroup1AfterWait0] = bytes_equal(st1, g1, 16);
#if defined(SIMT_EMU)
  r[kEmuOpenGroup] = bytes_all(z, 0xff, 48);
#endif
  ptx::cp_async_commit();
  ptx::cp_async_wait<0>();
  r[kZeroFill0] = bytes_all(z, 0, 16);
  r[kZeroFill5] = bytes_equal(z + 16, g0, 5) && bytes_all(z + 21, 0, 11);
  r[kZeroFill16] = bytes_equal(z + 32, g1, 16);
#endif
}

#if defined(SIMT_EMU)
// Threads 0-15 issue a copy and exit without waiting; threads 16-31 pass the barrier once those
// have exited and find the copies landed. (Emulator semantics: on a GPU this is undefined.)
__global__ void cp_async_exit_kernel(const unsigned char* src, int* res) {
  SIMT_DYNAMIC_SHARED(unsigned char, sm);
  const int t = threadIdx.x;
  if (t < 16) {
    ptx::cp_async_16(sm + 16 * t, src + 16 * t);
    ptx::cp_async_commit();
    return;
  }
  __syncthreads();
  res[t - 16] = bytes_equal(sm + 16 * (t - 16), src + 16 * (t - 16), 16);
}

// Thread 37 (warp 1, lane 5) traps; the others still meet at a barrier and a shuffle.
__global__ void trap_kernel(int* out) {
  const int t = threadIdx.x;
  if (t == 37) simt_trap();
  __syncthreads();
  const int v = __shfl_sync(0xffffffffu, t, (t + 1) % 32);
  out[t] = 1000 + v;
}

// Misuses that must die with a message (run in a child process).
__global__ void die_kernel(int which, const unsigned char* g) {
  SIMT_DYNAMIC_SHARED(unsigned char, sm);
  const int l = threadIdx.x;
  switch (which) {
    case 0: ptx::cp_async_16(sm + 8, g); break;
    case 1: ptx::cp_async_16(sm, g + 4); break;
    case 2: ptx::cp_async_16(sm, g, 17); break;
    case 3: {
      uint32_t r[1];
      ptx::ldmatrix_x1(r, sm + 16 * l + (l == 3 ? 8 : 0));
      break;
    }
    default: {
      uint32_t a[4] = {0, 0, 0, 0}, b[2] = {0, 0};
      float d[4] = {0, 0, 0, 0};
      ptx::mma_m16n8k16_bf16(d, a, b, d);  // launched with 16 threads: a partial warp
      break;
    }
  }
}
using golden::DeathCase;
const DeathCase kDeath[] = {
    {"cp.async misaligned shared destination", "destination is not 16-byte aligned"},
    {"cp.async misaligned global source", "global source is not 16-byte aligned"},
    {"cp.async src_bytes 17", "src_bytes must be 0..16"},
    {"ldmatrix misaligned row (lane 3)", "row address of lane 3"},
    {"mma.sync in a partial warp", "needs all 32 lanes"},
};
#endif

// ------------------------------------------------------------------------------ host
namespace {

using golden::check;
using golden::DevBuf;
using golden::gen;
using golden::string_field;
using golden::synced;
uint32_t fbits(float f) { return lk::float_to_bits(f); }

// Registers of 32 lanes, 4 slots each (unused slots ignored), as raw bits.
using Regs = std::vector<uint32_t>;

Regs run_mma(int op, int reps, uint32_t low_bits = 0) {
  std::vector<uint32_t> a(32 * 4), b(32 * 2);
  for (uint32_t l = 0; l < 32; ++l) {
    if (op == kMmaTf32) {
      for (uint32_t j = 0; j < 4; ++j) a[4 * l + j] = fbits(static_cast<float>(gen(4 * l + j, 1))) | low_bits;
      for (uint32_t j = 0; j < 2; ++j) b[2 * l + j] = fbits(static_cast<float>(gen(2 * l + j, 2))) | low_bits;
    } else {
      auto h = [&](int v) -> uint32_t {
        return op == kMmaBf16 ? lk::float_to_bf16(static_cast<float>(v)) : lk::float_to_fp16(static_cast<float>(v));
      };
      for (uint32_t j = 0; j < 8; ++j) a[4 * l + j / 2] |= h(gen(8 * l + j, 1)) << (16 * (j & 1));
      for (uint32_t j = 0; j < 4; ++j) b[2 * l + j / 2] |= h(gen(4 * l + j, 2)) << (16 * (j & 1));
    }
  }
  DevBuf<uint32_t> da(a.size(), a.data()), db(b.size(), b.data());
  DevBuf<float> dd(32 * 4);
  if (op == kMmaBf16) simt_launch(mma_kernel<kMmaBf16>, dim3(1), dim3(32), 0, 0, da.p, db.p, dd.p, reps);
  else if (op == kMmaF16) simt_launch(mma_kernel<kMmaF16>, dim3(1), dim3(32), 0, 0, da.p, db.p, dd.p, reps);
  else simt_launch(mma_kernel<kMmaTf32>, dim3(1), dim3(32), 0, 0, da.p, db.p, dd.p, reps);
  if (!synced("mma launch")) return {};
  Regs r(32 * 4);
  const std::vector<float> d = dd.get();
  for (size_t i = 0; i < d.size(); ++i) r[i] = fbits(d[i]);
  return r;
}

template <int NM, bool Trans>
Regs run_ldmatrix(int ignored_from = 32) {
  DevBuf<uint32_t> out(32 * 4);
  simt_launch(ldmatrix_kernel<NM, Trans>, dim3(1), dim3(32), 1024, 0, out.p, ignored_from);
  if (!synced("ldmatrix launch")) return {};
  return out.get();
}

// ---- minimal jsonl reading: "case" (a string), numeric fields, "lanes" (array of number arrays)
struct Golden {
  std::string name;
  std::string line;
  std::vector<std::vector<double>> lanes;
};

int g_failures = 0;

// Compares got (32 lanes × 4 slots) with expected[lane][i], as float bits or as uint32.
bool compare(const char* label, const std::string& name, const Regs& got, const std::vector<std::vector<double>>& expected,
             bool as_float, double scale = 1.0) {
  int bad = 0, regs = 0;
  if (got.size() != 32 * 4 || expected.size() != 32) {
    std::printf("FAIL %-8s %s: %zu lanes expected, run %s\n", label, name.c_str(), expected.size(),
                got.empty() ? "failed" : "gave a wrong size");
    ++g_failures;
    return false;
  }
  for (int l = 0; l < 32; ++l) {
    if (expected[l].size() > 4) {
      std::printf("FAIL %-8s %s: lane %d has %zu registers (at most 4 expected)\n", label, name.c_str(), l,
                  expected[l].size());
      ++g_failures;
      return false;
    }
    for (size_t i = 0; i < expected[l].size(); ++i, ++regs) {
      const uint32_t want = as_float ? fbits(static_cast<float>(expected[l][i] * scale))
                                     : static_cast<uint32_t>(expected[l][i]);
      const uint32_t have = got[4 * l + i];
      if (want == have) continue;
      if (bad++ < 6) {
        if (as_float)
          std::printf("     lane %2d reg %zu: expected %g (0x%08x), got %g (0x%08x)\n", l, i, lk::bits_to_float(want),
                      want, lk::bits_to_float(have), have);
        else
          std::printf("     lane %2d reg %zu: expected 0x%08x, got 0x%08x\n", l, i, want, have);
      }
    }
  }
  if (bad) {
    std::printf("FAIL %-8s %s: %d of %d registers differ\n", label, name.c_str(), bad, regs);
    ++g_failures;
    return false;
  }
  std::printf("ok   %-8s %s (32 lanes, %d registers)\n", label, name.c_str(), regs);
  return true;
}

void report(const char* label, const std::string& name, bool ok, const std::string& detail = "") {
  std::printf("%s %-8s %s%s%s\n", ok ? "ok  " : "FAIL", label, name.c_str(), detail.empty() ? "" : ": ",
              detail.c_str());
  if (!ok) ++g_failures;
}

std::vector<std::vector<double>> first_regs(const std::vector<std::vector<double>>& lanes, size_t n) {
  std::vector<std::vector<double>> r;
  for (const auto& l : lanes) r.emplace_back(l.begin(), l.begin() + static_cast<std::ptrdiff_t>(std::min(n, l.size())));
  return r;
}

const char* const kMmaBf16Name = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32";
const char* const kMmaF16Name = "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32";
const char* const kMmaTf32Name = "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32";
const char* const kLdNames[] = {"ldmatrix.sync.aligned.m8n8.x1.shared.b16", "ldmatrix.sync.aligned.m8n8.x2.shared.b16",
                                "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
                                "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"};

void spec_cvt() {
  struct C {
    uint32_t in, out;
  };
  const C cases[] = {
      {0x3f800000u, 0x3f800000u},  // 1: exact
      {0x3f800fffu, 0x3f800000u},  // below half an ulp: down
      {0x3f801000u, 0x3f802000u},  // a tie: away from zero (ties-to-even would stay at 1)
      {0xbf801000u, 0xbf802000u},  // negative tie: away from zero
      {0x3f803000u, 0x3f804000u},  // a tie with an odd tf32 mantissa
      {0x3f801001u, 0x3f802000u},  // above half: up
      {0x40490fdbu, 0x40490000u},  // pi
      {0x00000000u, 0x00000000u},
      {0x80000000u, 0x80000000u},
      {0x7f800000u, 0x7f800000u},  // +inf
      {0xff800000u, 0xff800000u},  // -inf
  };
  const int n = static_cast<int>(sizeof cases / sizeof cases[0]);
  std::vector<float> in(n);
  for (int i = 0; i < n; ++i) in[i] = lk::bits_to_float(cases[i].in);
  DevBuf<float> din(n, in.data());
  DevBuf<uint32_t> dout(n);
  simt_launch(cvt_kernel, dim3(1), dim3(32), 0, 0, din.p, dout.p, n);
  bool ok = synced("cvt launch");
  std::string detail;
  if (ok) {
    const std::vector<uint32_t> got = dout.get();
    for (int i = 0; i < n; ++i)
      if (got[i] != cases[i].out) {
        char b[96];
        std::snprintf(b, sizeof b, "%s0x%08x -> 0x%08x, expected 0x%08x", detail.empty() ? "" : "; ", cases[i].in,
                      got[i], cases[i].out);
        detail += b;
        ok = false;
      }
  }
  report("spec", "cvt.rna.tf32.f32 (11 values: ties away from zero, inf, zeros)", ok, detail);
}

void spec_cp_async() {
  std::vector<unsigned char> src(1024);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i % 251 + 1);  // never 0 or 0xff
  DevBuf<unsigned char> dsrc(src.size(), src.data());
  DevBuf<int> dres(32 * kSlots);
  simt_launch(cp_async_kernel, dim3(1), dim3(32), kCpSmem, 0, dsrc.p, dres.p);
  const bool launched = synced("cp.async launch");
  std::vector<int> res = dres.get();
  auto slot = [&](int s, const char* label, const char* name) {
    int bad = 0;
    for (int t = 0; t < 32; ++t) bad += res[kSlots * t + s] != 1;
    report(label, name, launched && bad == 0, bad ? std::to_string(bad) + " of 32 threads saw other bytes" : "");
  };
  slot(kGroup0AfterWait1, "spec", "cp.async: wait_group 1 lands the older of two committed groups");
  slot(kGroup1AfterWait0, "spec", "cp.async: wait_group 0 lands every committed group");
  slot(kZeroFill0, "spec", "cp.async: src_bytes 0 (src nullptr) writes 16 zero bytes");
  slot(kZeroFill5, "spec", "cp.async: src_bytes 5 copies 5 bytes and zero-fills 11");
  slot(kZeroFill16, "spec", "cp.async: src_bytes 16 copies 16 bytes");
#if defined(SIMT_EMU)
  slot(kEmuBeforeWait, "emulator", "cp.async: nothing lands before a wait (reads see the 0xff poison)");
  slot(kEmuNewestPending, "emulator", "cp.async: wait_group 1 leaves the newest group pending");
  slot(kEmuOpenGroup, "emulator", "cp.async: wait_group 0 does not land uncommitted copies");
#endif
}

#if defined(SIMT_EMU)
void emulator_only(const char* self) {
  {
    std::vector<unsigned char> src(256);
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<unsigned char>(i % 251 + 1);
    DevBuf<unsigned char> dsrc(src.size(), src.data());
    DevBuf<int> dres(16);
    simt_launch(cp_async_exit_kernel, dim3(1), dim3(32), 256, 0, dsrc.p, dres.p);
    const bool launched = synced("cp.async exit launch");
    int bad = 0;
    for (int v : dres.get()) bad += v != 1;
    report("emulator", "cp.async: copies still pending when their thread exits land then", launched && bad == 0);
  }
  {
    const int before = simt::sticky_error.load();
    std::vector<int> init(64, -1);
    DevBuf<int> out(64, init.data());
    simt_launch(trap_kernel, dim3(1), dim3(64), 0, 0, out.p);
    // Emulated device memory is host memory: read it directly (the runtime shims now report the
    // sticky error instead of copying, as a dead GPU context would).
    const int* o = out.p;
    int others = 0;
    for (int t = 0; t < 64; ++t) others += t != 37 && o[t] >= 1000;
    const int sticky = simt::sticky_error.load();
    const bool ok = before == cudaSuccess && sticky == cudaErrorLaunchFailure && o[37] == -1 && others == 63;
    report("emulator", "simt_trap(): the thread exits, 63 others finish, sticky cudaErrorLaunchFailure", ok,
           ok ? "" : "sticky " + std::to_string(sticky) + ", " + std::to_string(others) + " others finished");
    simt::sticky_error = cudaSuccess;  // this process goes on testing
  }
  for (size_t i = 0; i < sizeof kDeath / sizeof kDeath[0]; ++i) {
    std::string detail;
    const bool ok = golden::dies_as_expected(self, i, kDeath[i], &detail);
    report("emulator", std::string("dies: ") + kDeath[i].name, ok, detail);
  }
}

int die_mode(int which) {
  std::vector<unsigned char> src(64, 1);
  DevBuf<unsigned char> dsrc(src.size(), src.data());
  simt_launch(die_kernel, dim3(1), dim3(which == 4 ? 16 : 32), 1024, 0, which, static_cast<const unsigned char*>(dsrc.p));
  synced("die launch");
  std::printf("die mode %d: the kernel did not die\n", which);
  return 0;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // one line at a time, in order with stderr (the trap report)
#if defined(SIMT_EMU)
  if (argc == 3 && !std::strcmp(argv[1], "--die")) return die_mode(std::atoi(argv[2]));
#endif
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <ptx_golden.jsonl>\n", argv[0]);
    return 2;
  }
  FILE* f = std::fopen(argv[1], "rb");
  if (!f) {
    std::fprintf(stderr, "ptx_golden: cannot open %s\n", argv[1]);
    return 2;
  }
  std::vector<Golden> cases;
  {
    std::string line;
    for (int c; (c = std::fgetc(f)) != EOF;) {
      if (c != '\n') {
        line += static_cast<char>(c);
        continue;
      }
      if (!line.empty()) cases.push_back({string_field(line, "case"), line, {}});
      line.clear();
    }
    if (!line.empty()) cases.push_back({string_field(line, "case"), line, {}});
    std::fclose(f);
  }
#if defined(SIMT_EMU)
  std::printf("ptx_golden: the emulated ptx:: wrappers against %s\n", argv[1]);
#else
  std::printf("ptx_golden: the nvcc ptx:: wrappers on the GPU against %s\n", argv[1]);
#endif

  int recorded = 0, skipped = 0;
  bool seen_mma[3] = {false, false, false}, seen_ld[4] = {false, false, false, false};
  std::vector<std::vector<double>> x4_trans, mma_d[3];
  for (Golden& g : cases) {
    if (g.name.rfind("wgmma.", 0) == 0 || g.name.rfind("cp.async.bulk", 0) == 0) {
      ++skipped;
      continue;
    }
    if (g.name.empty() || !golden::parse_rows(g.line, "lanes", g.lanes)) {
      report("recorded", g.name.empty() ? std::string("(a line without \"case\")") : g.name, false, "cannot parse the line");
      continue;
    }
    ++recorded;
    int mma = -1, ld = -1;
    if (g.name == kMmaBf16Name) mma = kMmaBf16;
    else if (g.name == kMmaF16Name) mma = kMmaF16;
    else if (g.name == kMmaTf32Name) mma = kMmaTf32;
    for (int i = 0; i < 4; ++i)
      if (g.name == kLdNames[i]) ld = i;
    if (mma >= 0) {
      seen_mma[mma] = true;
      mma_d[mma] = g.lanes;
      compare("recorded", g.name, run_mma(mma, 1), g.lanes, true);
    } else if (ld >= 0) {
      seen_ld[ld] = true;
      const double stride = golden::number_field(g.line, "rowstride", 32);
      if (stride != 32) {
        report("recorded", g.name, false, "rowstride " + std::to_string(stride) + " (this replay sets up 32)");
        continue;
      }
      const Regs r = ld == 0 ? run_ldmatrix<1, false>() : ld == 1 ? run_ldmatrix<2, false>()
                                                  : ld == 2 ? run_ldmatrix<4, false>() : run_ldmatrix<4, true>();
      compare("recorded", g.name, r, g.lanes, false);
      if (ld == 3) x4_trans = g.lanes;
    } else {
      report("recorded", g.name, false, "no replay for this case");
    }
  }
  for (int i = 0; i < 3; ++i)
    if (!seen_mma[i]) report("recorded", i == 0 ? kMmaBf16Name : i == 1 ? kMmaF16Name : kMmaTf32Name, false, "missing from the file");
  for (int i = 0; i < 4; ++i)
    if (!seen_ld[i]) report("recorded", kLdNames[i], false, "missing from the file");

  // Derived from the recordings.
  if (!x4_trans.empty()) {
    compare("derived", "ldmatrix x1.trans = register 0 of the recorded x4.trans", run_ldmatrix<1, true>(),
            first_regs(x4_trans, 1), false);
    compare("derived", "ldmatrix x2.trans = registers 0-1 of the recorded x4.trans", run_ldmatrix<2, true>(),
            first_regs(x4_trans, 2), false);
  }
  for (const Golden& g : cases) {
    if (g.name == kLdNames[0]) compare("derived", "ldmatrix x1 ignores the addresses of lanes 8-31", run_ldmatrix<1, false>(8), g.lanes, false);
    if (g.name == kLdNames[1]) compare("derived", "ldmatrix x2 ignores the addresses of lanes 16-31", run_ldmatrix<2, false>(16), g.lanes, false);
  }
  const char* chained[3] = {"mma bf16 twice, d aliasing c = 2 x recorded D", "mma f16 twice, d aliasing c = 2 x recorded D",
                            "mma tf32 twice, d aliasing c = 2 x recorded D"};
  for (int i = 0; i < 3; ++i)
    if (seen_mma[i]) compare("derived", chained[i], run_mma(i, 2), mma_d[i], true, 2.0);

  // From the PTX ISA, not recorded.
  if (seen_mma[kMmaTf32])
    compare("spec", "mma tf32 ignores the low 13 mantissa bits (inputs | 0x1fff = recorded D)", run_mma(kMmaTf32, 1, 0x1fffu),
            mma_d[kMmaTf32], true);
  spec_cvt();
  spec_cp_async();
#if defined(SIMT_EMU)
  emulator_only(argv[0]);
#endif

  std::printf("ptx_golden: %d recorded cases replayed (%d wgmma / TMA cases skipped: hopper_golden replays them); %s\n", recorded, skipped,
              g_failures ? (std::to_string(g_failures) + " FAILED").c_str() : "everything matches");
  return g_failures ? 1 : 0;
}
