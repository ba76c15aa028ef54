#include "common.h"

#include <cmath>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <new>
#include <thread>

#include "core/gpu.h"

namespace lk::binding {

const napi_type_tag kDeviceBufferTag = {0x6c6f72614b657673ull, 0x4275666665720001ull};

DeviceMemory::DeviceMemory(int device_index, size_t size)
    : device(device_index), ptr(gpu::alloc(device_index, size)), bytes(size) {}

DeviceMemory::~DeviceMemory() { gpu::release(device, ptr); }

void KeepAlive::hold(const Napi::Value& value) { refs_.push_back(Napi::Reference<Napi::Value>::New(value, 1)); }

void KeepAlive::release() {
  refs_.clear();
  device_.clear();
}

int64_t TensorArg::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// A JS Error carrying `code` (the TS layer turns it into LoraKernelsError).
[[noreturn]] static void throw_js(Napi::Env env, ErrorCode code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, error_code_name(code)));
  throw err;
}

static std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsNumber()) return "a number";
  if (v.IsString()) return "a string";
  if (v.IsTypedArray()) return "a TypedArray";
  if (v.IsExternal()) return "a native handle";
  if (v.IsObject()) return "an object";
  return "a value of another type";
}

TensorArg Descriptor::read_tensor(const char* field, bool optional) const {
  const std::string name = prefix_ + field;
  Napi::Value v = obj_.Get(field);
  if (optional && (v.IsUndefined() || v.IsNull())) return TensorArg{};
  if (!v.IsObject()) {
    throw Error(ErrorCode::Argument, op_ + ": " + name + ": expected a tensor descriptor, got " + describe(v));
  }
  Napi::Object desc = v.As<Napi::Object>();
  TensorArg t;
  t.name = name;
  Napi::Value dtype = desc.Get("dtype");
  if (!dtype.IsNumber()) throw Error(ErrorCode::DType, op_ + ": " + name + ": expected a dtype code, got " + describe(dtype));
  int code = dtype.As<Napi::Number>().Int32Value();
  if (code < 0 || code > static_cast<int>(DType::Int32)) {
    throw Error(ErrorCode::DType, op_ + ": " + name + ": unknown dtype code " + std::to_string(code));
  }
  t.dtype = static_cast<DType>(code);
  Napi::Value shape = desc.Get("shape");
  if (!shape.IsArray()) throw Error(ErrorCode::Shape, op_ + ": " + name + ": expected a shape array, got " + describe(shape));
  Napi::Array dims = shape.As<Napi::Array>();
  for (uint32_t i = 0; i < dims.Length(); ++i) {
    Napi::Value d = dims.Get(i);
    double dv = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
    if (!(dv >= 0) || dv != static_cast<double>(static_cast<int64_t>(dv)) || dv > 9.0e15) {
      throw Error(ErrorCode::Shape, op_ + ": " + name + ": shape[" + std::to_string(i) + "] must be a non-negative integer");
    }
    t.shape.push_back(static_cast<int64_t>(dv));
  }
  const size_t need = static_cast<size_t>(t.numel()) * dtype_size(t.dtype);
  Napi::Value data = desc.Get("data");
  if (data.IsTypedArray()) {
    Napi::TypedArray arr = data.As<Napi::TypedArray>();
    Napi::ArrayBuffer ab = arr.ArrayBuffer();
    if (ab.Data() == nullptr && arr.ByteLength() > 0) {
      throw Error(ErrorCode::Disposed, op_ + ": " + name + ": its ArrayBuffer was detached (transferred or freed)");
    }
    t.data = static_cast<uint8_t*>(ab.Data()) + arr.ByteOffset();
    t.bytes = arr.ByteLength();
    t.device = Device{-1};
    keep_->hold(data);
  } else if (data.IsExternal() && data.As<Napi::External<DeviceBufferBox>>().CheckTypeTag(&kDeviceBufferTag)) {
    auto* box = data.As<Napi::External<DeviceBufferBox>>().Data();
    if (!box || !box->memory) throw Error(ErrorCode::Disposed, op_ + ": " + name + ": the tensor was disposed");
    t.data = box->memory->ptr;
    t.bytes = box->memory->bytes;
    t.device = Device{box->memory->device};
    keep_->hold(box->memory);
  } else {
    throw Error(ErrorCode::Argument, op_ + ": " + name + ": expected tensor data (TypedArray or device buffer), got " + describe(data));
  }
  if (t.bytes < need) {
    throw Error(ErrorCode::Shape, op_ + ": " + name + ": shape needs " + std::to_string(need) + " bytes, the buffer holds " +
                                      std::to_string(t.bytes));
  }
  return t;
}

bool Descriptor::given(const char* field) const {
  const Napi::Value v = obj_.Get(field);
  return !v.IsUndefined() && !v.IsNull();
}

TensorArg Descriptor::tensor(const char* field) const { return read_tensor(field, false); }
TensorArg Descriptor::optional_tensor(const char* field) const { return read_tensor(field, true); }

double Descriptor::number(const char* field, double fallback) const {
  Napi::Value v = obj_.Get(field);
  if (v.IsUndefined()) return fallback;
  expect(v.IsNumber(), ErrorCode::Argument, prefix_ + field + " must be a number, got " + describe(v));
  return v.As<Napi::Number>().DoubleValue();
}

bool Descriptor::boolean(const char* field, bool fallback) const {
  Napi::Value v = obj_.Get(field);
  if (v.IsUndefined()) return fallback;
  expect(v.IsBoolean(), ErrorCode::Argument, prefix_ + field + " must be a boolean, got " + describe(v));
  return v.As<Napi::Boolean>().Value();
}

int64_t Descriptor::integer(const char* field, int64_t low, int64_t high) const {
  const double v = number(field, NAN);
  expect(v >= static_cast<double>(low) && v <= static_cast<double>(high) && v == std::floor(v), ErrorCode::Argument,
         prefix_ + field + " must be an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]");
  return static_cast<int64_t>(v);
}

int64_t Descriptor::integer(const char* field, int64_t low, int64_t high, int64_t fallback) const {
  return given(field) ? integer(field, low, high) : fallback;
}

Descriptor Descriptor::nested(const char* field) const {
  const Napi::Value v = obj_.Get(field);
  expect(v.IsObject(), ErrorCode::Argument, prefix_ + field + " must be a descriptor object, got " + describe(v));
  return Descriptor(op_, v.As<Napi::Object>(), prefix_ + field + ".", keep_);
}

void Descriptor::expect(bool ok, ErrorCode code, const std::string& message) const {
  if (!ok) throw Error(code, op_ + ": " + message);
}

void Descriptor::expect_placed(std::initializer_list<const TensorArg*> ts, DType dtype, const TensorArg& ref) const {
  for (const TensorArg* t : ts) {
    if (!t->data) continue;
    expect(t->dtype == dtype, ErrorCode::DType, t->name + " must be " + dtype_name(dtype) + ", got " + dtype_name(t->dtype));
    expect(t->device.index == ref.device.index, ErrorCode::Device, t->name + " must be on the device of " + ref.name);
  }
}

void Descriptor::expect_part(const TensorArg& t, DType dtype, int64_t numel, const TensorArg& ref) const {
  expect(t.dtype == dtype, ErrorCode::DType, t.name + " must be " + dtype_name(dtype) + ", got " + dtype_name(t.dtype));
  expect(t.numel() == numel, ErrorCode::Shape, t.name + " must hold " + std::to_string(numel) + " elements, got " + std::to_string(t.numel()));
  expect(t.device.index == ref.device.index, ErrorCode::Device, t.name + " must be on the device of " + ref.name);
}

bool Descriptor::expect_bias(const TensorArg& bias, const TensorArg& x) const {
  const bool half = x.dtype == DType::Float16 || x.dtype == DType::BFloat16, f32 = half && bias.dtype == DType::Float32;
  expect(!bias.data || bias.dtype == x.dtype || f32, ErrorCode::DType,
         std::string("bias must be ") + dtype_name(x.dtype) + (half ? " or float32" : "") + ", got " + dtype_name(bias.dtype));
  expect_placed({&bias}, bias.dtype, x);
  return bias.data && f32;
}

namespace {

std::string op_name(const char* op, bool async) { return std::string(op) + (async ? "Async" : ""); }

Napi::Object argument_object(const Napi::CallbackInfo& info, const std::string& op) {
  if (info.Length() < 1 || !info[0].IsObject()) throw Error(ErrorCode::Argument, op + ": expected an argument object");
  return info[0].As<Napi::Object>();
}

}  // namespace

OpArgs::OpArgs(const Napi::CallbackInfo& info, const char* op, bool async)
    : Descriptor(op_name(op, async), argument_object(info, op_name(op, async)), "", &keep_), env_(info.Env()), async_(async) {}

Napi::Value OpArgs::run(const Device& device, std::function<void()> work) {
  return lk::binding::run(env_, async_, device, std::move(keep_), std::move(work));
}

namespace {

struct Failure {
  bool failed = false;
  ErrorCode code = ErrorCode::Argument;
  std::string message;
};

Failure run_catching(const std::function<void()>& work) {
  Failure f;
  try {
    work();
  } catch (const Error& e) {
    f = {true, e.code(), e.what()};
  } catch (const std::bad_alloc&) {
    f = {true, ErrorCode::OutOfMemory, "host memory allocation failed"};
  } catch (const std::exception& e) {
    f = {true, ErrorCode::Argument, std::string("internal error: ") + e.what()};
  }
  return f;
}

struct Job;
void settle(Napi::Env env, Napi::Function, void*, Job* job);
using JobTsfn = Napi::TypedThreadSafeFunction<void, Job, settle>;

struct Job {
  Napi::Promise::Deferred deferred;
  KeepAlive keep;
  std::function<void()> work;  // CPU: run on the job thread
  Failure failure;
  JobTsfn tsfn;
  bool on_device = false;      // CUDA: work was enqueued; `completion` says how it ended
  gpu::Completion completion;
};

void reject(Napi::Env env, Napi::Promise::Deferred& deferred, const Failure& failure) {
  Napi::Error err = Napi::Error::New(env, failure.message);
  err.Set("code", Napi::String::New(env, error_code_name(failure.code)));
  deferred.Reject(err.Value());
}

void settle(Napi::Env env, Napi::Function, void*, Job* job) {
  if (env != nullptr) {
    if (job->on_device) job->failure = run_catching([job] { gpu::finish(job->completion); });
    if (job->failure.failed) reject(env, job->deferred, job->failure);
    else job->deferred.Resolve(env.Undefined());
    job->keep.release();
    delete job;
  }
  // env == nullptr: the environment (a terminated worker) is gone; its references die with it.
}

// A CUDA op's work has finished or failed: called on a CUDA driver thread (or, in the emulator,
// at once), it only queues the job for the JS thread. No CUDA calls, nothing that can block.
void device_work_done(void* user) {
  Job* job = static_cast<Job*>(user);
  JobTsfn tsfn = job->tsfn;
  if (tsfn.NonBlockingCall(job) != napi_ok) {
    // The environment is shutting down and will not settle the promise; drop the job.
  }
  tsfn.Release();
}

// Long kernels run here, on one dedicated thread, not on libuv's pool: a queue of 100 prefill
// GEMMs must not block fs/dns callbacks. Jobs run in order; each one uses the compute pool.
class JobThread {
 public:
  JobThread() : thread_([this] { loop(); }) { thread_.detach(); }
  void submit(Job* job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(job);
    }
    cv_.notify_one();
  }

 private:
  void loop() {
    for (;;) {
      Job* job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [this] { return !queue_.empty(); });
        job = queue_.front();
        queue_.pop_front();
      }
      job->failure = run_catching(job->work);
      job->work = nullptr;
      JobTsfn tsfn = job->tsfn;
      if (tsfn.BlockingCall(job) != napi_ok) {
        // The environment is shutting down and will not settle the promise; drop the job.
      }
      tsfn.Release();
    }
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Job*> queue_;
  std::thread thread_;
};

JobThread& job_thread() {
  static JobThread* t = new JobThread();  // leaked: must outlive every environment
  return *t;
}

}  // namespace

Napi::Value run(Napi::Env env, bool async, Device device, KeepAlive keep, std::function<void()> work) {
  if (!async) {
    Failure f = run_catching(work);
    if (f.failed) throw_js(env, f.code, f.message);
    return env.Undefined();
  }
  auto* job = new Job{Napi::Promise::Deferred::New(env), std::move(keep), std::move(work), {}, {}, device.is_cuda(), {}};
  Napi::Promise promise = job->deferred.Promise();
  if (device.is_cpu()) {
    job->tsfn = JobTsfn::New(env, "lora-kernels job", 0, 1);
    job_thread().submit(job);
    return promise;
  }
  // CUDA: enqueue now, in call order; the stream callback settles the promise later.
  job->failure = run_catching(job->work);
  job->work = nullptr;
  if (!job->failure.failed) {
    job->tsfn = JobTsfn::New(env, "lora-kernels CUDA completion", 0, 1);
    job->failure = run_catching([job, device] { gpu::notify_when_done(job->completion, device.index, device_work_done, job); });
    if (!job->failure.failed) return promise;
    job->tsfn.Release();  // the callback was not registered
  }
  reject(env, job->deferred, job->failure);
  job->keep.release();
  delete job;
  return promise;
}

Napi::Value guarded(Napi::Env env, const std::function<Napi::Value()>& body) {
  try {
    return body();
  } catch (const Error& e) {
    throw_js(env, e.code(), e.what());
  } catch (const std::bad_alloc&) {
    throw_js(env, ErrorCode::OutOfMemory, "host memory allocation failed");
  }
}

void export_op(Napi::Env env, Napi::Object exports, const char* name, OpEntry entry) {
  for (const bool async : {false, true}) {
    const std::string js_name = std::string(name) + (async ? "Async" : "");
    exports.Set(js_name, Napi::Function::New(env, [entry, async](const Napi::CallbackInfo& info) {
      return guarded(info.Env(), [&] { return entry(info, async); });
    }, js_name));
  }
}

}  // namespace lk::binding
