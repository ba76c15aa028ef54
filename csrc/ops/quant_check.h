// What memory safety needs of a quantized weight (QuantWeight, csrc/ops/quant.h): sizes, a valid
// block size and the pointers its format reads. Shared by the quantize / dequantize ops and
// quant.matmul; the TypeScript layer has already said what was wrong in the user's terms.
#pragma once
#include "quant.h"

namespace lk {

// Throws lk::Error naming `op`.
void check_quant_weight(const char* op, const QuantWeight& w);

}  // namespace lk
