// CUDA entries of Flash-LoRA-Attention: the forward (with the split-KV decode path) in
// cuda/flash_lora.cu, the backward in cuda/flash_lora_backward.cu. Plain C++: included by
// csrc/ops/flash_lora.cpp, which g++ compiles, when LK_WITH_CUDA is defined.
#pragma once
#include "ops/flash_lora.h"

namespace lk::cuda_ops {

// Stream-ordered on the device's stream like every op (device pointers; params already checked
// by csrc/ops/flash_lora.cpp). Throw lk::Error: ERR_DEVICE, ERR_UNSUPPORTED (sizes beyond int),
// ERR_CUDA.
void flash_lora_forward(const FlashLoraParams& p, int device);
void flash_lora_backward(const FlashLoraBackwardParams& p, int device);

}  // namespace lk::cuda_ops
