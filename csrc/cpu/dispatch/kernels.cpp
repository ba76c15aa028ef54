#include "kernels.h"

#include "simd.h"

namespace lk::cpu {

#if defined(LK_HAVE_SIMD_AVX512)
#define LK_CASE_AVX512(name, args) case SimdLevel::Avx512: return avx512::name args;
#else
#define LK_CASE_AVX512(name, args)
#endif
#if defined(LK_HAVE_SIMD_AVX2)
#define LK_CASE_AVX2(name, args) case SimdLevel::Avx2: return avx2::name args;
#else
#define LK_CASE_AVX2(name, args)
#endif
#if defined(LK_HAVE_SIMD_NEON)
#define LK_CASE_NEON(name, args) case SimdLevel::Neon: return neon::name args;
#else
#define LK_CASE_NEON(name, args)
#endif

#define LK_CPU_DEFINE_ONE(name, params, args) \
  void name params {                          \
    switch (simd_level()) {                   \
      LK_CASE_AVX512(name, args)              \
      LK_CASE_AVX2(name, args)                \
      LK_CASE_NEON(name, args)                \
      default: return scalar::name args;      \
    }                                         \
  }

LK_CPU_KERNEL_LIST(LK_CPU_DEFINE_ONE)

}  // namespace lk::cpu
