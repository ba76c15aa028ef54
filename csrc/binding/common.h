// Shared pieces of the N-API binding: tensor descriptors from JS, device memory ownership,
// error conversion and the sync/async runner. The TypeScript layer (lib/) validates arguments
// for the user; this layer re-checks only what memory safety needs.
#pragma once
#include <napi.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
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
  std::string name;  // the descriptor field it came from, for messages ("x", "weight.packed")
  void* data = nullptr;
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  Device device;
  size_t bytes = 0;  // bytes available behind data

  int64_t numel() const;
  int64_t dim(int i) const { return shape[i < 0 ? shape.size() + i : i]; }
  int ndim() const { return static_cast<int>(shape.size()); }
};

// The fields of a JS descriptor object (an op's argument, or a descriptor nested in it). Every
// failure throws lk::Error "<op>: <message>"; a nested descriptor's fields are named
// "<outer>.<field>". Tensors read through it stay alive as long as the op's KeepAlive.
class Descriptor {
 public:
  Napi::Value value(const char* field) const { return obj_.Get(field); }
  // Present and neither undefined nor null.
  bool given(const char* field) const;
  // { dtype, shape, device, data | buffer }, its memory checked to cover shape × dtype.
  TensorArg tensor(const char* field) const;
  // Same; an absent (undefined / null) field gives { data = nullptr }.
  TensorArg optional_tensor(const char* field) const;
  double number(const char* field, double fallback) const;
  bool boolean(const char* field, bool fallback) const;
  // An integer in [low, high]; required, or `fallback` when absent.
  int64_t integer(const char* field, int64_t low, int64_t high) const;
  int64_t integer(const char* field, int64_t low, int64_t high, int64_t fallback) const;
  Descriptor nested(const char* field) const;

  void expect(bool ok, ErrorCode code, const std::string& message) const;
  // Each tensor of `ts` with data (absent and empty ones pass) is `dtype` on the device of `ref`.
  void expect_placed(std::initializer_list<const TensorArg*> ts, DType dtype, const TensorArg& ref) const;
  // `t` is exactly `numel` elements of `dtype` on the device of `ref`.
  void expect_part(const TensorArg& t, DType dtype, int64_t numel, const TensorArg& ref) const;
  // A bias (absent passes) on the device of x, in the dtype of x or float32 when x is float16 /
  // bfloat16 (added in float32 before the one rounding). Returns the params' bias_f32: whether it
  // is that float32 bias.
  bool expect_bias(const TensorArg& bias, const TensorArg& x) const;

 protected:
  Descriptor(std::string op, Napi::Object obj, std::string prefix, KeepAlive* keep)
      : op_(std::move(op)), obj_(obj), prefix_(std::move(prefix)), keep_(keep) {}

 private:
  TensorArg read_tensor(const char* field, bool optional) const;
  std::string op_;
  Napi::Object obj_;
  std::string prefix_;
  KeepAlive* keep_;
};

// One call of an op entry: its one argument, the descriptor object (ERR_ARGUMENT otherwise), named
// "<op>Async" for the async form. Owns the KeepAlive of everything read through it until run()
// hands it to the op.
class OpArgs : public Descriptor {
 public:
  OpArgs(const Napi::CallbackInfo& info, const char* op, bool async);
  OpArgs(const OpArgs&) = delete;
  OpArgs& operator=(const OpArgs&) = delete;
  // run() below in this call's form (sync or async), keeping its tensors alive for `work`.
  Napi::Value run(const Device& device, std::function<void()> work);

 private:
  Napi::Env env_;
  bool async_;
  KeepAlive keep_;
};

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

// Registers exports[name] = entry(info, false) and exports[name + "Async"] = entry(info, true),
// each guarded: the one place an op's sync and async entry points are made.
using OpEntry = Napi::Value (*)(const Napi::CallbackInfo& info, bool async);
void export_op(Napi::Env env, Napi::Object exports, const char* name, OpEntry entry);

void register_lora_linear(Napi::Env env, Napi::Object exports);
void register_lora_multi(Napi::Env env, Napi::Object exports);
void register_dora(Napi::Env env, Napi::Object exports);
void register_quant(Napi::Env env, Napi::Object exports);
void register_quant_matmul(Napi::Env env, Napi::Object exports);
void register_quant_activations(Napi::Env env, Napi::Object exports);
void register_linalg(Napi::Env env, Napi::Object exports);
void register_flash_lora(Napi::Env env, Napi::Object exports);

}  // namespace lk::binding
