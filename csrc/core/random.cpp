#include "random.h"

#include <cmath>

#include <string>

#include "half.h"
#include "parallel.h"
#include "status.h"

namespace lk {
namespace {

// splitmix64 finalizer: a strong 64-bit mix, enough for test and benchmark data.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Box–Muller on a pair of uniforms derived from (seed, pair index): two samples per pair.
inline void normal_pair(uint64_t seed, uint64_t pair, double& z0, double& z1) {
  const uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ull + mix64(pair));
  const uint64_t h2 = mix64(h ^ 0xd1b54a32d192ed03ull);
  const double u1 = (static_cast<double>(h >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  const double u2 = static_cast<double>(h2 >> 11) * 0x1.0p-53;         // [0, 1)
  const double radius = std::sqrt(-2.0 * std::log(u1));
  z0 = radius * std::cos(6.283185307179586 * u2);
  z1 = radius * std::sin(6.283185307179586 * u2);
}

template <typename Store>
void fill(int64_t count, uint64_t seed, Store store) {
  const int64_t pairs = (count + 1) / 2;
  const int64_t chunk = 1 << 14;
  parallel_for((pairs + chunk - 1) / chunk, [&](int64_t task, int) {
    const int64_t end = std::min(pairs, (task + 1) * chunk);
    for (int64_t p = task * chunk; p < end; ++p) {
      double z0, z1;
      normal_pair(seed, static_cast<uint64_t>(p), z0, z1);
      store(2 * p, z0);
      if (2 * p + 1 < count) store(2 * p + 1, z1);
    }
  });
}

}  // namespace

void fill_randn(void* dst, DType dtype, int64_t count, uint64_t seed) {
  switch (dtype) {
    case DType::Float32:
      fill(count, seed, [p = static_cast<float*>(dst)](int64_t i, double v) { p[i] = static_cast<float>(v); });
      break;
    case DType::Float16:
      fill(count, seed, [p = static_cast<uint16_t*>(dst)](int64_t i, double v) { p[i] = float_to_fp16(static_cast<float>(v)); });
      break;
    case DType::BFloat16:
      fill(count, seed, [p = static_cast<uint16_t*>(dst)](int64_t i, double v) { p[i] = float_to_bf16(static_cast<float>(v)); });
      break;
    case DType::Int8:
      fill(count, seed, [p = static_cast<int8_t*>(dst)](int64_t i, double v) {
        p[i] = static_cast<int8_t>(std::lround(std::fmax(-128.0, std::fmin(127.0, v * 32.0))));
      });
      break;
    case DType::UInt8:
      fill(count, seed, [p = static_cast<uint8_t*>(dst)](int64_t i, double v) {
        p[i] = static_cast<uint8_t>(std::lround(std::fmax(0.0, std::fmin(255.0, 128.0 + v * 32.0))));
      });
      break;
    case DType::Int32:
      fill(count, seed, [p = static_cast<int32_t*>(dst)](int64_t i, double v) { p[i] = static_cast<int32_t>(std::lround(v * 1000.0)); });
      break;
    default:  // storage-only dtypes (float64, int64, fp8, ...): Tensor.randn rejects them first
      throw Error(ErrorCode::DType, std::string("fillRandn: no random fill for ") + dtype_name(dtype));
  }
}

}  // namespace lk
