// The CUDA runtime as the rest of the core sees it. Implemented by cuda/runtime.cu (real CUDA
// through cudart_static, or the SIMT emulation when that file is compiled with g++) and by
// csrc/core/gpu_none.cpp in builds without CUDA. Every failure throws lk::Error; nothing aborts.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace lk::gpu {

struct DeviceInfo {
  std::string name;
  int major = 0;
  int minor = 0;
  size_t memory_bytes = 0;
};

struct Status {
  bool compiled = false;   // CUDA kernels are part of this binary
  bool emulated = false;   // kernels run on the CPU through the SIMT emulation layer
  bool available = false;  // at least one device answered
  std::string reason;      // why not available (not compiled, no driver, driver too old, no device)
  std::vector<DeviceInfo> devices;
};

// Probed once, on first use; never throws.
const Status& status();

// Makes CUDA unavailable with `reason` before anything touches the driver: the host probed the
// driver in a child process and that probe crashed, hung or found no usable device, so this
// process must never load it. No effect once status() has run.
void disable(const std::string& reason);

void* alloc(int device, size_t bytes);
void release(int device, void* ptr) noexcept;
void copy_to_device(int device, void* dst, const void* src, size_t bytes);
void copy_to_host(int device, void* dst, const void* src, size_t bytes);
void copy_on_device(int device, void* dst, const void* src, size_t bytes);
void fill_bytes(int device, void* dst, int value, size_t bytes);
void synchronize(int device);

}  // namespace lk::gpu
