// Shared pieces of the N-API binding: tensor descriptors from JS, device memory ownership,
// error conversion and the sync/async runner. The TypeScript layer (lib/) validates arguments
// for the user; this layer re-checks only what memory safety needs.
#pragma once
#include <napi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/device.h"
#include "core/dtype.h"
#include "core/status.h"

namespace lk::binding {

// Device memory owned by a JS tensor, from the caching allocator. Shared: an in-flight async op
// keeps it alive after dispose() until its promise settles. (Freeing it earlier would be safe too:
// the block goes back to the cache, and its next owner's work is ordered after the kernel on the
// device's stream.)
struct DeviceMemory {
  int device;
  void* ptr;
  size_t bytes;
  DeviceMemory(int device, size_t bytes);
  ~DeviceMemory();
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
};

// What a JS device buffer (a Napi::External tagged kDeviceBufferTag) points at; dispose() empties it.
struct DeviceBufferBox {
  std::shared_ptr<DeviceMemory> memory;
};
extern const napi_type_tag kDeviceBufferTag;

// JS objects (and device memory) that must outlive an async job.
class KeepAlive {
 public:
  void hold(const Napi::Value& value);
  void hold(std::shared_ptr<DeviceMemory> memory) { device_.push_back(std::move(memory)); }
  void release();

 private:
  std::vector<Napi::Reference<Napi::Value>> refs_;
  std::vector<std::shared_ptr<DeviceMemory>> device_;
};

// A tensor argument resolved to a raw pointer. Row-major, contiguous.
struct TensorArg {
  void* data = nullptr;
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  Device device;
  size_t bytes = 0;  // bytes available behind data

  int64_t numel() const;
  int64_t dim(int i) const { return shape[i < 0 ? shape.size() + i : i]; }
  int ndim() const { return static_cast<int>(shape.size()); }
};

// Reads `obj[name]` as a tensor descriptor { dtype, shape, device, data | buffer }.
// Checks that the memory behind it covers shape × dtype. Throws lk::Error naming `name`.
TensorArg tensor_arg(const Napi::Object& obj, const char* name, KeepAlive& keep);
// Same, but an absent/undefined/null property gives nullopt-like { data = nullptr }.
TensorArg optional_tensor_arg(const Napi::Object& obj, const char* name, KeepAlive& keep);

double number_arg(const Napi::Object& obj, const char* name, double fallback);
bool bool_arg(const Napi::Object& obj, const char* name, bool fallback);

// Throws `code` with "<op>: <message>" unless ok.
void expect(bool ok, ErrorCode code, const char* op, const std::string& message);

// A bias in the dtype of x, or float32 when x is float16/bfloat16 (added in float32 before the one
// rounding); ERR_DTYPE otherwise. Returns whether it is that float32 bias (the params' bias_f32).
bool mixed_bias(const TensorArg& bias, DType x, const char* op);

// The descriptor object an op entry takes as its one argument (ERR_ARGUMENT otherwise).
Napi::Object descriptor(const Napi::CallbackInfo& info, const char* op);

// A contiguous part of `dtype` with exactly `numel` elements on `device`.
void expect_part(const TensorArg& t, const char* op, const char* name, DType dtype, int64_t numel, const Device& device);

// Throws a JS Error carrying `code` (the TS layer turns it into LoraKernelsError).
[[noreturn]] void throw_js(Napi::Env env, ErrorCode code, const std::string& message);

// Runs an op on `device`. Any lk::Error or std::exception thrown by work becomes a JS error /
// rejection with a code; never an abort.
//   CPU:  `work` runs now (sync), or on the job thread, returning a Promise (async).
//   CUDA: `work` only enqueues on the device's stream, so it runs now, on the calling thread, in
//         both forms: stream order is call order, whether sync and async calls are mixed or not.
//         The sync form returns without waiting; the async form's Promise settles when the device
//         has finished that work (a stream callback, no thread waits), `keep` alive until then.
Napi::Value run(Napi::Env env, bool async, Device device, KeepAlive keep, std::function<void()> work);

// Wraps a callback so that lk::Error thrown while reading arguments becomes a JS exception.
Napi::Value guarded(Napi::Env env, const std::function<Napi::Value()>& body);

void register_lora_linear(Napi::Env env, Napi::Object exports);
void register_lora_multi(Napi::Env env, Napi::Object exports);
void register_dora(Napi::Env env, Napi::Object exports);
void register_quant(Napi::Env env, Napi::Object exports);
void register_quant_matmul(Napi::Env env, Napi::Object exports);
void register_quant_activations(Napi::Env env, Napi::Object exports);
void register_linalg(Napi::Env env, Napi::Object exports);
void register_flash_lora(Napi::Env env, Napi::Object exports);

}  // namespace lk::binding
