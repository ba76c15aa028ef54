// CUDA entries of linalg.svd and linalg.qr (implemented in cuda/linalg.cu). Plain C++: included by
// csrc/ops/linalg.cpp when LK_WITH_CUDA is defined. Enqueued on the device's stream; device
// pointers; the params were checked by the caller; throw lk::Error.
#pragma once
#include "ops/linalg.h"

namespace lk::cuda_ops {

void svd(const SvdParams& p, int device);
void qr(const QrParams& p, int device);

}  // namespace lk::cuda_ops
