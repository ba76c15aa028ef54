// csrc/core/gpu.h on the CUDA runtime. Real builds link cudart_static, so this binary loads on
// machines without a driver: the first status() call probes, and a missing or old driver is a
// reason string, never a load failure or abort. In the LK_CUDA_EMULATED build the same file is
// compiled with g++ against csrc/simt (the runtime calls below are the emulator's shims) and the
// one device is "SIMT emulator (CPU)".
#include <mutex>
#include <string>

#include "common.cuh"
#include "core/gpu.h"
#include "core/status.h"

namespace lk::gpu {
namespace {

std::string cuda_error_text(cudaError_t e) {
  return std::string(cudaGetErrorString(e)) + " (" + cudaGetErrorName(e) + ")";
}

std::string version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

Status compiled_status() {
  Status st;
  st.compiled = true;
#if defined(SIMT_EMU)
  st.emulated = true;
#endif
  return st;
}

Status probe() {
  Status st = compiled_status();
  // A CUDA 13 runtime needs a driver that speaks CUDA 13 (minor version compatibility within 13.x).
  constexpr int kNeeded = (CUDART_VERSION / 1000) * 1000;
  int driver = 0;
  cudaError_t e = cudaDriverGetVersion(&driver);
  if (e != cudaSuccess) {
    st.reason = "cudaDriverGetVersion failed: " + cuda_error_text(e);
    return st;
  }
  if (driver == 0) {
    st.reason = "no CUDA driver found (libcuda.so.1 could not be loaded)";
    return st;
  }
  const std::string too_old = "driver too old for CUDA " + version_text(CUDART_VERSION) + " (needs a driver for CUDA ≥ " +
                              version_text(kNeeded) + ", found one for CUDA " + version_text(driver) + ")";
  if (driver < kNeeded) {
    st.reason = too_old;
    return st;
  }
  int count = 0;
  e = cudaGetDeviceCount(&count);
  if (e == cudaErrorNoDevice || (e == cudaSuccess && count == 0)) {
    st.reason = "no CUDA device (the driver reports none; check CUDA_VISIBLE_DEVICES)";
    return st;
  }
  if (e == cudaErrorInsufficientDriver) {
    st.reason = too_old;
    return st;
  }
  if (e != cudaSuccess) {
    st.reason = "CUDA initialisation failed: " + cuda_error_text(e);
    return st;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    e = cudaGetDeviceProperties(&prop, i);
    if (e != cudaSuccess) {
      st.devices.clear();
      st.reason = "cudaGetDeviceProperties(" + std::to_string(i) + ") failed: " + cuda_error_text(e);
      return st;
    }
    DeviceInfo d;
    d.name = prop.name;
    d.major = prop.major;
    d.minor = prop.minor;
    d.memory_bytes = prop.totalGlobalMem;
    st.devices.push_back(d);
  }
  (void)cudaGetLastError();  // probing must not leave a sticky error for the first op
  st.available = true;
  return st;
}

// Checks the index and makes `device` current for this host thread. `what` names the call.
void select(int device, const char* what) {
  const Status& st = status();
  if (!st.available) throw Error(ErrorCode::Device, std::string(what) + ": CUDA is not available: " + st.reason);
  if (device < 0 || static_cast<size_t>(device) >= st.devices.size())
    throw Error(ErrorCode::Device, std::string(what) + ": CUDA device " + std::to_string(device) + " does not exist (" +
                                       std::to_string(st.devices.size()) + " device(s))");
  const cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) throw Error(ErrorCode::Device, std::string(what) + ": cudaSetDevice(" + std::to_string(device) + ") failed: " + cuda_error_text(e));
}

[[noreturn]] void fail(cudaError_t e, const std::string& what) {
  (void)cudaGetLastError();  // clear a non-sticky error so that later calls start clean
  throw Error(e == cudaErrorMemoryAllocation ? ErrorCode::OutOfMemory : ErrorCode::Cuda, what + " failed: " + cuda_error_text(e));
}

std::mutex gate_mutex;
std::string disabled_reason;  // set by disable() before the first status(), under gate_mutex

}  // namespace

void disable(const std::string& reason) {
  std::lock_guard<std::mutex> lock(gate_mutex);
  disabled_reason = reason;
}

const Status& status() {
  static const Status s = [] {
    {
      std::lock_guard<std::mutex> lock(gate_mutex);
      if (!disabled_reason.empty()) {
        Status st = compiled_status();
        st.reason = disabled_reason;
        return st;
      }
    }
    try {
      return probe();
    } catch (...) {  // status() never throws
      Status st = compiled_status();
      st.reason = "CUDA probe failed unexpectedly";
      return st;
    }
  }();
  return s;
}

void* alloc(int device, size_t bytes) {
  select(device, "deviceAlloc");
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
  if (e != cudaSuccess)
    fail(e, "cudaMalloc(" + std::to_string(bytes) + " bytes) on device " + std::to_string(device));
  return p;
}

void release(int device, void* ptr) noexcept {
  if (!ptr) return;
  if (cudaSetDevice(device) != cudaSuccess) return;
  (void)cudaFree(ptr);
  (void)cudaGetLastError();
}

void copy_to_device(int device, void* dst, const void* src, size_t bytes) {
  select(device, "copyToDevice");
  const cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) fail(e, "cudaMemcpy host→device (" + std::to_string(bytes) + " bytes)");
}

void copy_to_host(int device, void* dst, const void* src, size_t bytes) {
  select(device, "copyToHost");
  const cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost);
  if (e != cudaSuccess) fail(e, "cudaMemcpy device→host (" + std::to_string(bytes) + " bytes)");
}

void copy_on_device(int device, void* dst, const void* src, size_t bytes) {
  select(device, "copyOnDevice");
  const cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice);
  if (e != cudaSuccess) fail(e, "cudaMemcpy device→device (" + std::to_string(bytes) + " bytes)");
}

void fill_bytes(int device, void* dst, int value, size_t bytes) {
  select(device, "fillBytes");
  const cudaError_t e = cudaMemset(dst, value, bytes);
  if (e != cudaSuccess) fail(e, "cudaMemset(" + std::to_string(bytes) + " bytes)");
}

void synchronize(int device) {
  select(device, "synchronize");
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) fail(e, "cudaDeviceSynchronize on device " + std::to_string(device));
}

}  // namespace lk::gpu

namespace lk::cuda_ops {

// Interim: the legacy default stream (ordered with every cudaMemcpy and cudaFree). The
// stream-ordered runtime replaces this with one stream per device.
cudaStream_t begin_op(int device, const char* op) {
  (void)op;
  use_device(device);
  return 0;
}

DeviceScratch::DeviceScratch(int device, size_t bytes) : device_(device), ptr_(gpu::alloc(device, bytes)) {}
DeviceScratch::~DeviceScratch() { gpu::release(device_, ptr_); }

}  // namespace lk::cuda_ops
