// The addon's export table: build info, backends, device memory, the device's stream (synchronize,
// memory statistics, events), random fill, and one register_* per op.
#include <cstring>
#include <memory>
#include <sstream>

#include "build_info.h"

#include "common.h"
#include "core/gpu.h"
#include "core/parallel.h"
#include "core/random.h"
#include "cpu/dispatch/simd.h"

namespace lk::binding {
namespace {

// Externals carry a type tag, so that an event handed where a device buffer is expected (or the
// other way round) is ERR_ARGUMENT, not a pointer of the wrong type.
constexpr napi_type_tag kEventTag = {0x6c6f72614b657673ull, 0x4576656e74000001ull};

Napi::Array split_list(Napi::Env env, const std::string& text) {
  Napi::Array out = Napi::Array::New(env);
  std::stringstream items(text);
  std::string item;
  uint32_t i = 0;
  while (std::getline(items, item, ',')) {
    if (!item.empty()) out.Set(i++, item);
  }
  return out;
}

// The version as one tagged string in the file: `strings x.node | grep lora-kernels@` finds it, and
// the loader tests make a stale copy of a binary by rewriting it.
constexpr char kVersionTag[] = "lora-kernels@" LK_BUILD_VERSION;
constexpr size_t kVersionTagPrefix = sizeof("lora-kernels@") - 1;

// What was compiled in, without touching the CUDA driver (the loader calls it before any probe).
Napi::Value build_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("version", kVersionTag + kVersionTagPrefix);
  out.Set("napiVersion", NAPI_VERSION);
  out.Set("buildType", LK_BUILD_TYPE);
  out.Set("compiler", LK_BUILD_COMPILER);
  out.Set("simdLevels", split_list(env, LK_BUILD_SIMD_LEVELS));
  out.Set("sanitize", LK_BUILD_SANITIZE);
  Napi::Object cuda = Napi::Object::New(env);
#if defined(LK_WITH_CUDA)
  cuda.Set("compiled", true);
#else
  cuda.Set("compiled", false);
#endif
#if defined(LK_CUDA_EMULATED)
  cuda.Set("emulated", true);
#else
  cuda.Set("emulated", false);
#endif
  cuda.Set("archs", split_list(env, LK_BUILD_CUDA_ARCHS));
#if defined(LK_CUDA_EMULATED) || defined(LK_CUDA_SM90A)
  cuda.Set("wgmma", true);
#else
  cuda.Set("wgmma", false);
#endif
  cuda.Set("toolkit", LK_BUILD_CUDA_TOOLKIT);
  out.Set("cuda", cuda);
  return out;
}

// disableCuda(reason): the host's child-process probe failed; this process never loads the driver.
Napi::Value disable_cuda(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (!info[0].IsString()) throw Error(ErrorCode::Argument, "disableCuda: reason must be a string");
    gpu::disable(info[0].As<Napi::String>().Utf8Value());
    return info.Env().Undefined();
  });
}

Napi::Value backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object cpu = Napi::Object::New(env);
  cpu.Set("simd", cpu::simd_level_name(cpu::simd_level()));
  cpu.Set("threads", num_threads());
  const gpu::Status& st = gpu::status();
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("available", st.available);
  cuda.Set("compiled", st.compiled);
  cuda.Set("emulated", st.emulated);
  if (!st.available) cuda.Set("reason", st.reason);
  Napi::Array devices = Napi::Array::New(env, st.devices.size());
  for (size_t i = 0; i < st.devices.size(); ++i) {
    Napi::Object dev = Napi::Object::New(env);
    dev.Set("name", st.devices[i].name);
    dev.Set("computeCapability", std::to_string(st.devices[i].major) + "." + std::to_string(st.devices[i].minor));
    dev.Set("memoryBytes", static_cast<double>(st.devices[i].memory_bytes));
    dev.Set("gemmMainloop", st.devices[i].gemm_mainloop);
    devices.Set(static_cast<uint32_t>(i), dev);
  }
  cuda.Set("devices", devices);
  Napi::Object out = Napi::Object::New(env);
  out.Set("cpu", cpu);
  out.Set("cuda", cuda);
  return out;
}

DeviceBufferBox* box_arg(const Napi::Value& v, const char* name) {
  if (!v.IsExternal() || !v.As<Napi::External<DeviceBufferBox>>().CheckTypeTag(&kDeviceBufferTag))
    throw Error(ErrorCode::Argument, std::string(name) + ": expected a device buffer");
  return v.As<Napi::External<DeviceBufferBox>>().Data();
}

std::shared_ptr<DeviceMemory> live_memory(const Napi::Value& v, const char* name) {
  DeviceBufferBox* box = box_arg(v, name);
  if (!box->memory) throw Error(ErrorCode::Disposed, std::string(name) + ": the tensor was disposed");
  return box->memory;
}

Napi::TypedArray typed_array_arg(const Napi::Value& v, const char* name) {
  if (!v.IsTypedArray()) throw Error(ErrorCode::Argument, std::string(name) + ": expected a TypedArray");
  return v.As<Napi::TypedArray>();
}

void* typed_array_data(const Napi::TypedArray& arr) {
  return static_cast<uint8_t*>(arr.ArrayBuffer().Data()) + arr.ByteOffset();
}

// deviceAlloc(device, bytes) → External. The finalizer is only a safety net: dispose() frees now.
Napi::Value device_alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const int device = info[0].As<Napi::Number>().Int32Value();
    const double bytes = info[1].As<Napi::Number>().DoubleValue();
    if (!(bytes >= 0) || bytes > 1.0e15) throw Error(ErrorCode::Argument, "deviceAlloc: invalid byte count");
    auto* box = new DeviceBufferBox{std::make_shared<DeviceMemory>(device, static_cast<size_t>(bytes))};
    auto buffer = Napi::External<DeviceBufferBox>::New(env, box, [](Napi::Env, DeviceBufferBox* b) { delete b; });
    buffer.TypeTag(&kDeviceBufferTag);
    return buffer;
  });
}

Napi::Value device_free(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    box_arg(info[0], "buffer")->memory.reset();
    return info.Env().Undefined();
  });
}

// copyToDevice(buffer, typedArray) / copyToHost(buffer, typedArray): whole-array copies.
Napi::Value copy_host_device(const Napi::CallbackInfo& info, bool to_device) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto mem = live_memory(info[0], "buffer");
    Napi::TypedArray host = typed_array_arg(info[1], to_device ? "source" : "destination");
    if (host.ByteLength() > mem->bytes) {
      throw Error(ErrorCode::Shape, std::string(to_device ? "copyToDevice: source" : "copyToHost: destination") +
                                        " is larger than the device buffer");
    }
    if (to_device) gpu::copy_to_device(mem->device, mem->ptr, typed_array_data(host), host.ByteLength());
    else gpu::copy_to_host(mem->device, typed_array_data(host), mem->ptr, host.ByteLength());
    return info.Env().Undefined();
  });
}

Napi::Value copy_on_device(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    auto dst = live_memory(info[0], "destination"), src = live_memory(info[1], "source");
    if (dst->device != src->device) throw Error(ErrorCode::Device, "copyOnDevice: buffers are on different devices");
    gpu::copy_on_device(dst->device, dst->ptr, src->ptr, std::min(dst->bytes, src->bytes));
    return info.Env().Undefined();
  });
}

int device_index_arg(const Napi::Value& v) {
  if (!v.IsNumber()) throw Error(ErrorCode::Argument, "device: expected a CUDA device index");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d != static_cast<double>(static_cast<int>(d)))
    throw Error(ErrorCode::Argument, "device: expected a CUDA device index, got " + std::to_string(d));
  return static_cast<int>(d);
}

// deviceSynchronize(device): waits for everything enqueued on the device's stream.
Napi::Value device_synchronize(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    gpu::synchronize(device_index_arg(info[0]));
    return info.Env().Undefined();
  });
}

// memoryStats(device) → the caching allocator's numbers (bytes as doubles: exact below 2^53).
Napi::Value memory_stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const gpu::MemoryStats st = gpu::memory_stats(device_index_arg(info[0]));
    Napi::Object out = Napi::Object::New(env);
    out.Set("allocatedBytes", static_cast<double>(st.allocated_bytes));
    out.Set("cachedBytes", static_cast<double>(st.cached_bytes));
    out.Set("reservedBytes", static_cast<double>(st.allocated_bytes + st.cached_bytes));
    out.Set("peakAllocatedBytes", static_cast<double>(st.peak_allocated_bytes));
    out.Set("deviceAllocations", static_cast<double>(st.device_allocations));
    out.Set("cacheHits", static_cast<double>(st.cache_hits));
    return out;
  });
}

Napi::Value empty_cache(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    gpu::empty_cache(device_index_arg(info[0]));
    return info.Env().Undefined();
  });
}

// A CUDA event handle; eventDestroy() frees it now, the finalizer otherwise.
struct EventBox {
  gpu::Event* event = nullptr;
  ~EventBox() { gpu::event_destroy(event); }
};

EventBox* event_arg(const Napi::Value& v, const char* name) {
  if (!v.IsExternal() || !v.As<Napi::External<EventBox>>().CheckTypeTag(&kEventTag))
    throw Error(ErrorCode::Argument, std::string(name) + ": expected an event from eventRecord");
  EventBox* box = v.As<Napi::External<EventBox>>().Data();
  if (!box->event) throw Error(ErrorCode::Disposed, std::string(name) + ": the event was destroyed");
  return box;
}

// eventRecord(device) → an event enqueued on the device's stream (benchmarks time between two).
Napi::Value event_record(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    auto box = std::make_unique<EventBox>();
    box->event = gpu::event_record(device_index_arg(info[0]));
    auto event = Napi::External<EventBox>::New(env, box.release(), [](Napi::Env, EventBox* b) { delete b; });
    event.TypeTag(&kEventTag);
    return event;
  });
}

// eventElapsedMs(start, stop): waits for stop, then the milliseconds between the two.
Napi::Value event_elapsed_ms(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    const EventBox* start = event_arg(info[0], "start");
    const EventBox* stop = event_arg(info[1], "stop");
    return Napi::Number::New(env, gpu::event_elapsed_ms(start->event, stop->event));
  });
}

Napi::Value event_destroy(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    if (!info[0].IsExternal() || !info[0].As<Napi::External<EventBox>>().CheckTypeTag(&kEventTag))
      throw Error(ErrorCode::Argument, "event: expected an event from eventRecord");
    EventBox* box = info[0].As<Napi::External<EventBox>>().Data();
    gpu::event_destroy(box->event);
    box->event = nullptr;
    return info.Env().Undefined();
  });
}

// testKernelFault(device) / testKernelFaultAsync(device): test-only (test/cuda_fault.test.ts), an
// op whose kernel traps, which kills the device's CUDA context for the rest of the process.
Napi::Value test_kernel_fault(const Napi::CallbackInfo& info, bool async) {
  const int device = device_index_arg(info[0]);
  return run(info.Env(), async, Device{device}, KeepAlive{}, [device] { gpu::test_kernel_fault(device); });
}

// fillRandn(typedArray, dtypeCode, seed): host fill; device tensors are filled on the host and
// copied so that the same seed gives the same values everywhere.
Napi::Value fill_randn_entry(const Napi::CallbackInfo& info) {
  return guarded(info.Env(), [&]() -> Napi::Value {
    Napi::TypedArray dst = typed_array_arg(info[0], "destination");
    const int code = info[1].As<Napi::Number>().Int32Value();
    if (code < 0 || code > static_cast<int>(DType::Float8E5M2)) throw Error(ErrorCode::DType, "fillRandn: unknown dtype code " + std::to_string(code));
    const DType dtype = static_cast<DType>(code);
    const double seed = info[2].As<Napi::Number>().DoubleValue();
    fill_randn(typed_array_data(dst), dtype, static_cast<int64_t>(dst.ByteLength() / dtype_size(dtype)),
               static_cast<uint64_t>(static_cast<int64_t>(seed)));
    return info.Env().Undefined();
  });
}

}  // namespace
}  // namespace lk::binding

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  using namespace lk::binding;
  exports.Set("buildInfo", Napi::Function::New(env, build_info));
  exports.Set("disableCuda", Napi::Function::New(env, disable_cuda));
  exports.Set("backends", Napi::Function::New(env, backends));
  exports.Set("deviceAlloc", Napi::Function::New(env, device_alloc));
  exports.Set("deviceFree", Napi::Function::New(env, device_free));
  exports.Set("copyToDevice", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return copy_host_device(info, true); }));
  exports.Set("copyToHost", Napi::Function::New(env, [](const Napi::CallbackInfo& info) { return copy_host_device(info, false); }));
  exports.Set("copyOnDevice", Napi::Function::New(env, copy_on_device));
  exports.Set("fillRandn", Napi::Function::New(env, fill_randn_entry));
  exports.Set("deviceSynchronize", Napi::Function::New(env, device_synchronize));
  exports.Set("memoryStats", Napi::Function::New(env, memory_stats));
  exports.Set("emptyCache", Napi::Function::New(env, empty_cache));
  exports.Set("eventRecord", Napi::Function::New(env, event_record));
  exports.Set("eventElapsedMs", Napi::Function::New(env, event_elapsed_ms));
  exports.Set("eventDestroy", Napi::Function::New(env, event_destroy));
  exports.Set("takeOpPlans", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return Napi::String::New(info.Env(), lk::gpu::take_op_plans());
  }));
  export_op(env, exports, "testKernelFault", test_kernel_fault);
  register_lora_linear(env, exports);
  register_lora_multi(env, exports);
  register_dora(env, exports);
  register_quant(env, exports);
  register_quant_matmul(env, exports);
  register_quant_activations(env, exports);
  register_linalg(env, exports);
  register_flash_lora(env, exports);
  return exports;
}

NODE_API_MODULE(lora_kernels, InitAddon)
