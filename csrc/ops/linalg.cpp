// The one place that picks a backend for linalg.svd and linalg.qr.
#include "linalg.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/status.h"
#include "cpu/dispatch/kernels.h"
#if defined(LK_WITH_CUDA)
#include "cuda/linalg.cuh"
#endif

namespace lk {
namespace {

void check_sizes(const char* op, int64_t batch, int64_t m, int64_t n) {
  if (batch < 0 || m < 0 || n < 0) {
    fail(op, ErrorCode::Shape, "sizes must be ≥ 0, got batch " + std::to_string(batch) + ", m " + std::to_string(m) + ", n " + std::to_string(n));
  }
}

void check_params(const SvdParams& p) {
  constexpr const char* op = "linalg.svd";
  check_sizes(op, p.batch, p.m, p.n);
  const int64_t k = std::min(p.m, p.n);
  if (p.keep < (k > 0 ? 1 : 0) || p.keep > k) {
    fail(op, ErrorCode::Shape, "keep must be in [1, min(m, n) = " + std::to_string(k) + "], got " + std::to_string(p.keep));
  }
  if (p.full_matrices && p.keep != k) fail(op, ErrorCode::Shape, "full_matrices needs keep = min(m, n) = " + std::to_string(k) + ", got " + std::to_string(p.keep));
  if (p.max_sweeps < 1) fail(op, ErrorCode::Argument, "max_sweeps must be ≥ 1, got " + std::to_string(p.max_sweeps));
  if (!(p.tol >= 0) || !std::isfinite(p.tol)) fail(op, ErrorCode::Argument, "tol must be a finite number ≥ 0, got " + std::to_string(p.tol));
  if ((p.u == nullptr) != (p.vh == nullptr)) fail(op, ErrorCode::Argument, "u and vh must be given both or neither");
  if (p.batch > 0 && (!p.a || !p.s || !p.sweeps)) fail(op, ErrorCode::Argument, "a, s and sweeps must not be null");
}

void check_params(const QrParams& p) {
  constexpr const char* op = "linalg.qr";
  check_sizes(op, p.batch, p.m, p.n);
  if (p.batch > 0 && (!p.a || !p.q)) fail(op, ErrorCode::Argument, "a and q must not be null");
}

}  // namespace

void svd(const SvdParams& p, Device device) {
  check_params(p);
  if (p.batch == 0) return;
  if (device.is_cpu()) return cpu::svd(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::svd(p, device.index);
#else
  throw Error(ErrorCode::Device, "linalg.svd: CUDA support was not compiled into this binary");
#endif
}

void qr(const QrParams& p, Device device) {
  check_params(p);
  if (p.batch == 0) return;
  if (device.is_cpu()) return cpu::qr(p);
#if defined(LK_WITH_CUDA)
  return cuda_ops::qr(p, device.index);
#else
  throw Error(ErrorCode::Device, "linalg.qr: CUDA support was not compiled into this binary");
#endif
}

}  // namespace lk
