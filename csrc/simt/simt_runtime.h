// simt_runtime.h — the CUDA runtime API subset our host code calls, for the emulated build
// (included by simt_emu.h). Device memory is host memory; every stream is synchronous: work runs
// when it is enqueued, so a wait has nothing left to wait for and only reports the device's error.
#pragma once
#include <chrono>

// The runtime API subset our code uses. These define functions that cuda_runtime_api.h declares,
// so their signatures are checked against NVIDIA's. One device (index 0), synchronous everything.
//
// After a kernel traps, simt::sticky_error holds cudaErrorLaunchFailure for the rest of the
// process, as a GPU's context stays dead after a fault: every call that touches the device (memory,
// copies, streams, stream callbacks' status, events, cudaGetLastError) returns it from then on.
// Host state and queries (cudaSetDevice, device count, properties, attributes, error names) still
// answer.
namespace simt {
inline thread_local int current_device = 0;
inline cudaError_t fail(cudaError_t e) { return last_error = e; }
inline cudaError_t sticky() { return static_cast<cudaError_t>(sticky_error.load()); }
}  // namespace simt
struct CUstream_st {};  // streams are synchronous here: a handle is only an identity
struct CUevent_st {     // an event records the host clock when it is reached (= when recorded)
  std::chrono::steady_clock::time_point at;
  bool recorded = false;
};
inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = nullptr;
  if (const cudaError_t e = simt::sticky()) return e;
  // exact size (ASan's redzone starts right after the last byte), GPU-like 256-byte alignment
  if (posix_memalign(p, 256, n ? n : 1)) {
    *p = nullptr;
    return simt::fail(cudaErrorMemoryAllocation);
  }
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return simt::sticky();
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
  if (const cudaError_t e = simt::sticky()) return e;
  if (n) std::memmove(dst, src, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemset(void* dst, int v, size_t n) {
  if (const cudaError_t e = simt::sticky()) return e;
  if (n) std::memset(dst, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t) {
  return cudaMemcpy(dst, src, n, kind);
}
inline cudaError_t cudaMemsetAsync(void* dst, int v, size_t n, cudaStream_t) { return cudaMemset(dst, v, n); }
inline cudaError_t cudaDeviceSynchronize() { return simt::sticky(); }
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  *stream = nullptr;
  if (const cudaError_t e = simt::sticky()) return e;
  *stream = new CUstream_st;
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  delete stream;
  return simt::sticky();
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return simt::sticky(); }
inline cudaError_t cudaStreamQuery(cudaStream_t) { return simt::sticky(); }
// Everything before the callback has already run: it is called at once, with the device's error
// as its status (a GPU passes the stream's error, sticky after a fault).
inline cudaError_t cudaStreamAddCallback(cudaStream_t stream, cudaStreamCallback_t callback, void* user, unsigned int flags) {
  if (flags != 0) return simt::fail(cudaErrorInvalidValue);
  callback(stream, simt::sticky(), user);
  return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = nullptr;
  if (const cudaError_t e = simt::sticky()) return e;
  *event = new CUevent_st;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  if (const cudaError_t e = simt::sticky()) return e;
  event->at = std::chrono::steady_clock::now();
  event->recorded = true;
  return cudaSuccess;
}
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return simt::sticky(); }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (const cudaError_t e = simt::sticky()) return e;
  if (!start->recorded || !end->recorded) return simt::fail(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return simt::sticky();
}
inline cudaError_t cudaGetLastError() {
  if (const cudaError_t e = simt::sticky()) return e;  // a sticky error cannot be cleared
  cudaError_t e = simt::last_error;
  simt::last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaPeekAtLastError() {
  if (const cudaError_t e = simt::sticky()) return e;
  return simt::last_error;
}
inline const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
  }
}
inline const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error (SIMT emulator)";
  }
}
inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) {
  if (d != 0) return simt::fail(cudaErrorInvalidDevice);
  simt::current_device = d;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = simt::current_device;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int d) {
  if (d != 0) return simt::fail(cudaErrorInvalidDevice);
  std::memset(prop, 0, sizeof *prop);
  std::snprintf(prop->name, sizeof prop->name, "SIMT emulator (CPU)");
  simt::emulated_cc(prop->major, prop->minor);
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  prop->totalGlobalMem = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
  prop->sharedMemPerBlock = 48 * 1024;
  prop->sharedMemPerBlockOptin = 227 * 1024;
  prop->regsPerBlock = 65536;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->multiProcessorCount = static_cast<int>(simt::worker_count());
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int d) {
  if (d != 0) return simt::fail(cudaErrorInvalidDevice);
  int major, minor;
  simt::emulated_cc(major, minor);
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = major; break;
    case cudaDevAttrComputeCapabilityMinor: *value = minor; break;
    case cudaDevAttrMultiProcessorCount: *value = static_cast<int>(simt::worker_count()); break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = 227 * 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    default: return simt::fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
template <class T>
inline cudaError_t cudaFuncSetAttribute(T*, cudaFuncAttribute, int) {
  return cudaSuccess;
}

