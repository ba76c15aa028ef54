#include "simd.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#if defined(_MSC_VER)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

namespace lk::cpu {
namespace {

#if defined(__x86_64__) || defined(_M_X64)
void cpuid(int leaf, int sub, unsigned regs[4]) {
#if defined(_MSC_VER)
  int r[4];
  __cpuidex(r, leaf, sub);
  for (int i = 0; i < 4; ++i) regs[i] = static_cast<unsigned>(r[i]);
#else
  __cpuid_count(leaf, sub, regs[0], regs[1], regs[2], regs[3]);
#endif
}

unsigned long long xgetbv0() {
#if defined(_MSC_VER)
  return _xgetbv(0);
#else
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
#endif
}

SimdLevel detect() {
  unsigned r1[4], r7[4];
  cpuid(1, 0, r1);
  const bool osxsave = r1[2] & (1u << 27), fma = r1[2] & (1u << 12), f16c = r1[2] & (1u << 29);
  if (!osxsave) return SimdLevel::Scalar;
  const unsigned long long xcr0 = xgetbv0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6, zmm_state = (xcr0 & 0xe6) == 0xe6;
  cpuid(7, 0, r7);
  const bool avx2 = r7[1] & (1u << 5);
  const bool avx512f = r7[1] & (1u << 16), avx512dq = r7[1] & (1u << 17), avx512bw = r7[1] & (1u << 30),
             avx512vl = r7[1] & (1u << 31);
  if (ymm_state && zmm_state && avx2 && fma && f16c && avx512f && avx512dq && avx512bw && avx512vl) return SimdLevel::Avx512;
  if (ymm_state && avx2 && fma && f16c) return SimdLevel::Avx2;
  return SimdLevel::Scalar;
}
#elif defined(__aarch64__) || defined(_M_ARM64)
SimdLevel detect() { return SimdLevel::Neon; }
#else
SimdLevel detect() { return SimdLevel::Scalar; }
#endif

SimdLevel apply_override(SimdLevel detected) {
  const char* env = std::getenv("LK_SIMD");
  if (!env) return detected;
  SimdLevel wanted = detected;
  if (!std::strcmp(env, "scalar")) wanted = SimdLevel::Scalar;
  else if (!std::strcmp(env, "avx2")) wanted = SimdLevel::Avx2;
  else if (!std::strcmp(env, "avx512")) wanted = SimdLevel::Avx512;
  else if (!std::strcmp(env, "neon")) wanted = SimdLevel::Neon;
  const bool x86_lowering = detected != SimdLevel::Neon && wanted != SimdLevel::Neon && wanted <= detected;
  const bool arm_lowering = detected == SimdLevel::Neon && (wanted == SimdLevel::Scalar || wanted == SimdLevel::Neon);
  return (x86_lowering || arm_lowering) ? wanted : detected;
}

}  // namespace

SimdLevel simd_level() {
  static const SimdLevel level = apply_override(detect());
  return level;
}

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::Avx512: return "avx512";
    case SimdLevel::Avx2: return "avx2";
    case SimdLevel::Neon: return "neon";
    case SimdLevel::Scalar: return "scalar";
  }
  return "scalar";
}

}  // namespace lk::cpu
