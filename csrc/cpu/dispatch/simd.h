// Run-time SIMD level of this CPU. Kernel sources in csrc/cpu/*.cpp are compiled once per level
// (namespaces lk::cpu::avx512 / avx2 / neon / scalar, see CMakeLists.txt); this picks one.
#pragma once

namespace lk::cpu {

enum class SimdLevel { Scalar, Avx2, Avx512, Neon };

// Detected once. The environment variable LK_SIMD=scalar|avx2|avx512|neon may lower the level
// (for tests and benchmarks); asking for more than the CPU has is ignored.
SimdLevel simd_level();
const char* simd_level_name(SimdLevel level);

}  // namespace lk::cpu
