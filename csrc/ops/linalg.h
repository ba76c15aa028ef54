// linalg.svd and linalg.qr: batched float32 factorizations of any m × n, the params of their two
// ops. Every operand is addressed through explicit strides (batch, row, column, in elements), so a
// caller passes a transposed view or writes a transposed result without a copy: linalg.svdLowRank
// and linalg.svdProduct in lib/ops/linalg.ts keep their thin factors as rows and factor their
// transposes this way.
//
// SVD: one-sided Jacobi (Hestenes). A tall matrix (m > n) is first reduced by Householder QR to its
// n × n R factor; a wide one is factored as its transpose. Columns are rotated in pairs by the
// Rutishauser formula until every pair is orthogonal to a relative tolerance (|a_iᵀa_j| ≤
// tol·‖a_i‖‖a_j‖); the singular values are the column norms, sorted descending. sweeps[i] reports
// the sweeps matrix i took, or −1 when it did not converge within max_sweeps (the op then reports
// the failure; a NaN or infinity in a matrix never converges).
//
// QR: Householder, reduced (q [m, k], r [k, n], k = min(m, n)); r's diagonal is made ≥ 0 so the
// factorization is unique for a full-rank a.
#pragma once
#include <cstdint>

#include "../core/device.h"

namespace lk {

// An operand [batch, rows, cols] of float32: element (b, i, j) at data[b·batch + i·row + j·col].
struct MatrixArg {
  int64_t batch_stride = 0, row_stride = 0, col_stride = 0;
};

struct SvdParams {
  int64_t batch = 0, m = 0, n = 0;
  // The leading singular triplets written: 1 ≤ keep ≤ min(m, n) (min(m, n) for the whole economy SVD).
  int64_t keep = 0;
  // u gets m columns and vh n rows (the orthogonal completions) instead of keep; keep = min(m, n) then.
  bool full_matrices = false;
  int32_t max_sweeps = 30;
  // The relative orthogonality a pair must reach (see the top); 0: the default, ε_float32 = 2^-23.
  float tol = 0.0f;
  const float* a = nullptr;
  MatrixArg a_layout;
  float* s = nullptr;  // [batch, keep] contiguous
  float* u = nullptr;  // [batch, m, keep or m] through u_layout; null: values only (vh null too)
  MatrixArg u_layout;
  float* vh = nullptr;  // [batch, keep or n, n] through vh_layout
  MatrixArg vh_layout;
  int32_t* sweeps = nullptr;  // [batch], on the op's device
};

struct QrParams {
  int64_t batch = 0, m = 0, n = 0;
  const float* a = nullptr;
  MatrixArg a_layout;
  float* q = nullptr;  // [batch, m, min(m, n)]
  MatrixArg q_layout;
  float* r = nullptr;  // [batch, min(m, n), n]; null: q only
  MatrixArg r_layout;
};

// Check what memory safety needs and run on `device`. Throw lk::Error.
void svd(const SvdParams& params, Device device);
void qr(const QrParams& params, Device device);

}  // namespace lk
