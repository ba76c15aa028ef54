// Reproducible normal samples: element i of a tensor with seed s is a pure function of (s, i),
// so the values do not depend on thread count, backend or device (device tensors are filled on
// the host and copied).
#pragma once
#include <cstdint>

#include "dtype.h"

namespace lk {

void fill_randn(void* dst, DType dtype, int64_t count, uint64_t seed);

}  // namespace lk
