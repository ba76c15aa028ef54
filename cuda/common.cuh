// Helpers shared by the CUDA ops (cuda/<op>.cu): error checks that become lk::Error, element
// load/store for the three float dtypes, small integer math, device properties and a scratch
// buffer. Written in the kernel subset of csrc/simt/simt.h, so it compiles with nvcc and, for the
// emulated build, with g++.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <mutex>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "simt/simt.h"
#if defined(SIMT_EMU)
#include "core/half.h"
#endif

namespace lk::cuda_ops {

// ---- errors ----------------------------------------------------------------------------------
// A failed CUDA call → lk::Error naming `what`, the CUDA error and the source line
// (ERR_OUT_OF_MEMORY, ERR_DEVICE or ERR_CUDA). A sticky error (the context died: a kernel
// faulted) is blamed on the ops enqueued since the last wait instead, like a failed wait
// (cuda/runtime.cu).
[[noreturn]] void throw_cuda(cudaError_t e, const char* what, const char* file, int line);

// Whether the Hopper kernels (LK_WGMMA_MAINLOOP below) may run on a device of compute capability
// cc (major·10 + minor): 9.0, with a binary that holds sm_90a code (LK_CUDA_SM90A: 90a in the
// build's arch list) or the emulator (which runs them when SIMT_EMU_CC=9.0).
inline bool wgmma_device(int cc) {
#if defined(SIMT_EMU) || defined(LK_CUDA_SM90A)
  return cc == 90;
#else
  (void)cc;
  return false;  // the kernels are traps in this binary
#endif
}

// A TMA tensor map of 16-bit elements, 128B swizzle, zeros out of bounds (the Hopper kernels'
// operands): dims innermost first and box in elements (box[0] = 64: one 128-byte swizzled row),
// the outer dims' strides in elements. Encoded through the driver entry point; a refusal throws
// ERR_CUDA naming `what`. Defined in cuda/runtime.cu.
ptx::TensorMap tma_map_16bit(const char* what, const void* base, std::initializer_list<long long> dims,
                             std::initializer_list<long long> strides, std::initializer_list<uint32_t> box);

}  // namespace lk::cuda_ops

// The Hopper kernels (TMA + wgmma: cuda/gemm_wgmma.cu, cuda/flash_lora_wgmma.cu). The nvcc device
// pass compiles their bodies only for sm_90a (other archs get a trap: nothing launches them
// there); the emulator compiles them always.
#if defined(SIMT_EMU) || defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LK_WGMMA_MAINLOOP 1
#endif

// LK_CUDA_CHECK(cudaMemcpy(...)) → lk::Error naming the call, the CUDA error and the source line.
#define LK_CUDA_CHECK(call)                                                                    \
  do {                                                                                         \
    const cudaError_t lk_err_ = (call);                                                        \
    if (lk_err_ != cudaSuccess) ::lk::cuda_ops::throw_cuda(lk_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After simt_launch(...): a bad configuration or a missing kernel image for this GPU.
#define LK_CUDA_CHECK_LAUNCH(what)                                                            \
  do {                                                                                        \
    const cudaError_t lk_err_ = cudaGetLastError();                                           \
    if (lk_err_ != cudaSuccess) ::lk::cuda_ops::throw_cuda(lk_err_, what, __FILE__, __LINE__); \
  } while (0)

namespace lk::cuda_ops {

// ---- integer helpers -------------------------------------------------------------------------
template <class T>
__host__ __device__ __forceinline__ constexpr T ceil_div(T a, T b) {
  return (a + b - 1) / b;
}

// ---- warp helpers ----------------------------------------------------------------------------
constexpr unsigned kFullMask = 0xffffffffu;  // every lane of a warp in a shuffle

#if defined(SIMT_DEVICE_PATH)
// max over the 32 lanes (fmaxf: a NaN lane is ignored unless every lane is NaN), in every lane.
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o >= 1; o /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}
#endif

// ---- element types ---------------------------------------------------------------------------
// Storage is float or raw 16-bit patterns (uint16_t), like the tensors the binding hands us.
// to_float / from_float round to nearest even; pack2 (16-bit types) rounds two floats into one
// 32-bit register, a in the low half (one cvt.rn.{bf16x2,f16x2}.f32 on the GPU).
struct F32 {
  using storage = float;
  static constexpr DType dtype = DType::Float32;
  static __device__ __forceinline__ float to_float(float v) { return v; }
  static __device__ __forceinline__ float from_float(float v) { return v; }
};
struct F16 {
  using storage = uint16_t;
  static constexpr DType dtype = DType::Float16;
#if defined(SIMT_EMU)
  static __device__ __forceinline__ float to_float(uint16_t v) { return ::lk::fp16_to_float(v); }
  static __device__ __forceinline__ uint16_t from_float(float v) { return ::lk::float_to_fp16(v); }
#else
  static __device__ __forceinline__ float to_float(uint16_t v) { return __half2float(__ushort_as_half(v)); }
  static __device__ __forceinline__ uint16_t from_float(float v) { return __half_as_ushort(__float2half_rn(v)); }
#endif
#if defined(SIMT_EMU) || !defined(SIMT_DEVICE_PATH)
  static __device__ __forceinline__ uint32_t pack2(float a, float b) { return from_float(a) | static_cast<uint32_t>(from_float(b)) << 16; }
#else
  static __device__ __forceinline__ uint32_t pack2(float a, float b) {
    const __half2 h = __floats2half2_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
#endif
};
struct BF16 {
  using storage = uint16_t;
  static constexpr DType dtype = DType::BFloat16;
#if defined(SIMT_EMU)
  static __device__ __forceinline__ float to_float(uint16_t v) { return ::lk::bf16_to_float(v); }
  static __device__ __forceinline__ uint16_t from_float(float v) { return ::lk::float_to_bf16(v); }
#else
  static __device__ __forceinline__ float to_float(uint16_t v) { return __uint_as_float(static_cast<unsigned>(v) << 16); }
  static __device__ __forceinline__ uint16_t from_float(float v) { return __bfloat16_as_ushort(__float2bfloat16_rn(v)); }
#endif
#if defined(SIMT_EMU) || !defined(SIMT_DEVICE_PATH)
  static __device__ __forceinline__ uint32_t pack2(float a, float b) { return from_float(a) | static_cast<uint32_t>(from_float(b)) << 16; }
#else
  static __device__ __forceinline__ uint32_t pack2(float a, float b) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
#endif
};

// The one place where a runtime dtype becomes an element type: fn(F32{}), fn(F16{}) or fn(BF16{}).
template <class Fn>
void with_element(DType dtype, const char* what, Fn&& fn) {
  switch (dtype) {
    case DType::Float32: return fn(F32{});
    case DType::Float16: return fn(F16{});
    case DType::BFloat16: return fn(BF16{});
    default: break;
  }
  throw Error(ErrorCode::Unsupported, std::string(what) + " (cuda): no kernel for dtype=" + dtype_name(dtype));
}

// A 1-D grid of `block_threads`-thread blocks covering `threads` threads (ERR_UNSUPPORTED past the
// 2³¹ − 1 blocks a launch allows).
inline dim3 grid_for(long long threads, int block_threads, const char* what) {
  const long long blocks = ceil_div<long long>(threads, block_threads);
  if (blocks > 0x7fffffffLL)
    throw Error(ErrorCode::Unsupported, std::string(what) + " (cuda): " + std::to_string(threads) + " threads exceed the launch grid");
  return dim3(static_cast<unsigned>(blocks));
}

// ---- device properties (cached per device) ---------------------------------------------------
struct DeviceProps {
  int cc = 0;  // compute capability × 10, e.g. 90
  int sm_count = 0;
};

inline DeviceProps device_props(int device) {
  static std::mutex mu;
  static std::vector<DeviceProps> cache;
  std::lock_guard<std::mutex> g(mu);
  if (device < 0) throw Error(ErrorCode::Device, "invalid CUDA device index " + std::to_string(device));
  if (static_cast<size_t>(device) < cache.size() && cache[device].cc) return cache[device];
  int major = 0, minor = 0, sms = 0;
  LK_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  LK_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  LK_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  if (cache.size() <= static_cast<size_t>(device)) cache.resize(device + 1);
  cache[device] = DeviceProps{major * 10 + minor, sms};
  return cache[device];
}

// ---- stream-ordered execution ----------------------------------------------------------------
// Every CUDA op starts with begin_op: it makes `device` current for this host thread, records the
// op's name (a fault inside one of its kernels is reported naming it at the next wait) and returns
// the device's stream, on which the op enqueues all its work and returns without waiting.
// `op` is kept, not copied: pass a string literal.
cudaStream_t begin_op(int device, const char* op);

// Adds to this thread's description of its current op (see gpu::last_op_plan): the engine and the
// GEMV say which mainloop, tile and split they launched.
void note_plan(const std::string& kernels);

// Device scratch for one op, from the caching allocator (core/gpu.h): returned to the cache when the
// op's host code leaves its scope. Stream order makes that safe while its kernels still run: the
// next user of the block is enqueued on the same stream, after them.
class DeviceScratch {
 public:
  DeviceScratch(int device, size_t bytes);
  ~DeviceScratch();
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }

 private:
  int device_;
  void* ptr_;
};

}  // namespace lk::cuda_ops
