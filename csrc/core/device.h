// Where a tensor lives. device index -1 is host memory; 0.. are CUDA devices.
#pragma once
#include <cstdint>

namespace lk {

struct Device {
  int32_t index = -1;
  bool is_cpu() const { return index < 0; }
  bool is_cuda() const { return index >= 0; }
};

}  // namespace lk
