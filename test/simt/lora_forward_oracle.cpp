// Standalone oracle for lk::cuda_ops::lora_forward on the SIMT emulator (no node, no GPU).
//
// scripts/mutants.mjs compiles this file with g++ together with a copy of cuda/lora_linear.cu
// (the real one, or a mutant of it) against csrc/simt, and runs it once per SIMT_EMU_SCHED. Every
// case below is computed by the emulated CUDA kernels and compared with a float64 reference on the
// same (dtype-rounded) inputs; outputs are poisoned with NaN first, so an element the kernels never
// write fails too. Exit status: 0 all cases match, 1 a mismatch, 2 an lk::Error was thrown.
//
// The cases are small and odd on purpose and cover every path lora_forward can take with
// SIMT_EMU_WORKERS=2 (the device then reports 2 SMs, which decides the tile size): the float32
// SGEMM with small and large tiles, the WMMA kernel for float16 / bfloat16 / TF32 with small and
// large tiles, 16-byte vector loads and scalar edge loads, several rank slices in the epilogue
// (r > 16), split-K in the low-rank kernel (small m, k ≥ 512), no adapter (r = 0), padded strides.
//
// Build by hand (scripts/mutants.mjs adds ASan + UBSan and -O1):
//   g++ -std=c++17 -Icsrc -Icuda -isystem /usr/local/cuda/include -Wno-unknown-pragmas
//       -x c++ cuda/lora_linear.cu -x none test/simt/lora_forward_oracle.cpp -lboost_context -pthread
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/half.h"
#include "core/status.h"
#include "lora_linear.cuh"
#include "simt/simt.h"

namespace {

using lk::DType;

struct Case {
  const char* name;
  DType dtype;
  long long m, k, n, r;
  bool bias, mask, tf32;
  float scale;
  long long x_pad = 0, y_pad = 0;  // extra elements per row (strides larger than the row)
};

const Case kCases[] = {
    // name                                   dtype             m    k    n    r   bias   mask   tf32  scale
    {"f32 sgemm small tile, scalar loads", DType::Float32, 37, 45, 77, 33, true, true, false, 0.5f},
    {"f32 sgemm large tile, vector loads", DType::Float32, 130, 64, 150, 20, true, false, false, 2.0f},
    {"f16 wmma small tile, vector loads", DType::Float16, 29, 72, 50, 17, true, true, false, 1.0f},
    {"bf16 wmma large tile, scalar loads", DType::BFloat16, 131, 45, 70, 33, false, false, false, 0.25f},
    {"f32 tf32 wmma", DType::Float32, 20, 40, 33, 5, true, false, true, 1.0f},
    {"f16 decode, split-K low-rank kernel", DType::Float16, 3, 600, 45, 16, true, false, false, 2.0f},
    {"f32 no adapter (r = 0)", DType::Float32, 65, 19, 65, 0, true, false, false, 1.0f},
    {"bf16 padded strides", DType::BFloat16, 17, 33, 21, 3, true, true, false, 0.5f, 7, 3},
};

uint64_t rng_state = 0x243F6A8885A308D3ull;
double uniform() {  // xorshift64*, in [-1, 1)
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return static_cast<double>((rng_state * 0x2545F4914F6CDD1Dull) >> 11) / 4503599627370496.0 - 1.0;
}

size_t elem_size(DType d) { return d == DType::Float32 ? 4 : 2; }

// A host matrix in the dtype's storage plus the exact value of every stored element.
struct HostMat {
  long long rows = 0, cols = 0, stride = 0;
  std::vector<unsigned char> bytes;
  std::vector<double> value;  // rows × cols, row-major, no padding
};

void store(DType d, unsigned char* p, float v) {
  if (d == DType::Float32) std::memcpy(p, &v, 4);
  else {
    const uint16_t h = d == DType::Float16 ? lk::float_to_fp16(v) : lk::float_to_bf16(v);
    std::memcpy(p, &h, 2);
  }
}
double load(DType d, const unsigned char* p) {
  if (d == DType::Float32) {
    float v;
    std::memcpy(&v, p, 4);
    return v;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return d == DType::Float16 ? lk::fp16_to_float(h) : lk::bf16_to_float(h);
}

// gen(i, j) gives the value before rounding to the dtype; padding holds a huge value, so a kernel
// that reads it makes the result wrong.
template <class Gen>
HostMat make(DType d, long long rows, long long cols, long long pad, Gen gen) {
  HostMat h;
  h.rows = rows;
  h.cols = cols;
  h.stride = cols + pad;
  const size_t es = elem_size(d);
  // Exact size: the last row has no padding, so reading past it leaves the allocation (ASan).
  const long long elems = rows ? (rows - 1) * h.stride + cols : 0;
  h.bytes.assign(static_cast<size_t>(elems) * es, 0);
  h.value.assign(static_cast<size_t>(rows * cols), 0.0);
  for (long long i = 0; i < rows; ++i) {
    for (long long j = 0; j < h.stride && i * h.stride + j < elems; ++j) {
      unsigned char* p = h.bytes.data() + static_cast<size_t>(i * h.stride + j) * es;
      if (j >= cols) {
        store(d, p, 1.0e4f);
        continue;
      }
      store(d, p, static_cast<float>(gen(i, j)));
      h.value[static_cast<size_t>(i * cols + j)] = load(d, p);
    }
  }
  return h;
}

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "oracle: %s failed: %s\n", what, cudaGetErrorString(e));
    std::exit(2);
  }
}

void* to_device(const HostMat& h) {
  void* p = nullptr;
  check(cudaMalloc(&p, h.bytes.size()), "cudaMalloc");
  check(cudaMemcpy(p, h.bytes.data(), h.bytes.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
  return p;
}

// Returns the number of mismatching elements (and prints the first few).
long long run_case(const Case& c) {
  const DType d = c.dtype;
  HostMat x = make(d, c.m, c.k, c.x_pad, [](long long, long long) { return uniform(); });
  HostMat w = make(d, c.n, c.k, 0, [](long long, long long) { return uniform(); });
  HostMat bias = make(d, c.bias ? 1 : 0, c.n, 0, [](long long, long long) { return uniform(); });
  HostMat mask = make(d, c.mask ? c.m : 0, c.k, c.x_pad, [](long long, long long) { return uniform() < -0.5 ? 0.0 : 4.0 / 3.0; });
  HostMat a = make(d, c.r, c.k, 0, [](long long, long long) { return uniform(); });
  HostMat b = make(d, c.r ? c.n : 0, c.r, 0, [](long long, long long) { return uniform(); });

  // y: poisoned with all-ones bytes (NaN in every float dtype), padding included.
  const long long y_stride = c.n + c.y_pad;
  const size_t es = elem_size(d);
  const size_t y_bytes = static_cast<size_t>((c.m - 1) * y_stride + c.n) * es;
  void* y = nullptr;
  check(cudaMalloc(&y, y_bytes), "cudaMalloc");
  check(cudaMemset(y, 0xff, y_bytes), "cudaMemset");

  lk::LoraForwardParams p;
  p.dtype = d;
  p.m = c.m;
  p.k = c.k;
  p.n = c.n;
  p.r = c.r;
  p.x = to_device(x);
  p.x_stride = x.stride;
  p.weight = to_device(w);
  p.weight_stride = w.stride;
  p.bias = c.bias ? to_device(bias) : nullptr;
  p.a = c.r ? to_device(a) : nullptr;
  p.a_stride = a.stride;
  p.b = c.r ? to_device(b) : nullptr;
  p.b_stride = b.stride;
  p.dropout_mask = c.mask ? to_device(mask) : nullptr;
  p.mask_stride = mask.stride;
  p.scale = c.scale;
  p.y = y;
  p.y_stride = y_stride;
  p.allow_tf32 = c.tf32;
  try {
    lk::cuda_ops::lora_forward(p, 0);
  } catch (const lk::Error& e) {
    std::fprintf(stderr, "oracle: %s: lk::Error %s: %s\n", c.name, lk::error_code_name(e.code()), e.what());
    std::exit(2);
  }
  std::vector<unsigned char> out(y_bytes);
  check(cudaMemcpy(out.data(), y, y_bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
  for (const void* ptr : {p.x, p.weight, p.bias, p.a, p.b, p.dropout_mask, static_cast<const void*>(y)})
    if (ptr) cudaFree(const_cast<void*>(ptr));

  // float64 reference; `mag` is the same sum over absolute values (the scale of rounding errors).
  // Tolerance: float32 accumulation (TF32: 10-bit mantissa inputs) plus rounding of the output.
  const double acc_eps = c.tf32 ? 3e-3 : 1e-5 * std::sqrt(static_cast<double>(c.k + c.r) + 1.0);
  const double out_eps = d == DType::Float32 ? 0.0 : d == DType::Float16 ? 1.0 / 1024 : 1.0 / 128;
  std::vector<double> t(static_cast<size_t>(c.r)), t_abs(static_cast<size_t>(c.r));
  long long bad = 0;
  for (long long i = 0; i < c.m; ++i) {
    for (long long q = 0; q < c.r; ++q) {
      double s = 0, s_abs = 0;
      for (long long kk = 0; kk < c.k; ++kk) {
        const double xv = x.value[i * c.k + kk] * (c.mask ? mask.value[i * c.k + kk] : 1.0);
        s += xv * a.value[q * c.k + kk];
        s_abs += std::fabs(xv * a.value[q * c.k + kk]);
      }
      t[q] = c.scale * s;
      t_abs[q] = std::fabs(c.scale) * s_abs;
    }
    for (long long j = 0; j < c.n; ++j) {
      double ref = 0, mag = 0;
      for (long long kk = 0; kk < c.k; ++kk) {
        ref += x.value[i * c.k + kk] * w.value[j * c.k + kk];
        mag += std::fabs(x.value[i * c.k + kk] * w.value[j * c.k + kk]);
      }
      for (long long q = 0; q < c.r; ++q) {
        ref += t[q] * b.value[j * c.r + q];
        mag += t_abs[q] * std::fabs(b.value[j * c.r + q]);
      }
      if (c.bias) {
        ref += bias.value[j];
        mag += std::fabs(bias.value[j]);
      }
      const double got = load(d, out.data() + static_cast<size_t>(i * y_stride + j) * es);
      const double tol = acc_eps * mag + out_eps * std::fabs(ref) + 1e-30;
      if (!(std::fabs(got - ref) <= tol)) {
        if (bad < 5)
          std::fprintf(stderr, "oracle: %s: y[%lld, %lld] = %.9g, expected %.9g (|diff| %.3g > tol %.3g)\n", c.name, i,
                       j, got, ref, std::fabs(got - ref), tol);
        ++bad;
      }
    }
  }
  // The padding of y must be left alone.
  for (long long i = 0; i + 1 < c.m; ++i)
    for (long long j = c.n; j < y_stride; ++j) {
      unsigned char* e = out.data() + static_cast<size_t>(i * y_stride + j) * es;
      for (size_t byte = 0; byte < es; ++byte)
        if (e[byte] != 0xff) {
          if (bad < 5) std::fprintf(stderr, "oracle: %s: padding y[%lld, %lld] was written\n", c.name, i, j);
          ++bad;
          break;
        }
    }
  return bad;
}

}  // namespace

int main() {
  const char* sched = std::getenv("SIMT_EMU_SCHED");
  long long failed_cases = 0;
  for (const Case& c : kCases) {
    const long long bad = run_case(c);
    std::printf("oracle [%s] %-40s m=%-4lld k=%-4lld n=%-4lld r=%-3lld %s\n", sched ? sched : "forward", c.name, c.m, c.k,
                c.n, c.r, bad ? "MISMATCH" : "ok");
    if (bad) {
      std::printf("oracle:   %lld of %lld elements wrong\n", bad, c.m * c.n);
      ++failed_cases;
    }
  }
  std::fflush(stdout);
  return failed_cases ? 1 : 0;
}
