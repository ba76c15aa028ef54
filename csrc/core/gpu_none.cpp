// Builds without CUDA: the cuda device reports why it is absent and every call is ERR_DEVICE.
#include "gpu.h"
#include "status.h"

namespace lk::gpu {

const Status& status() {
  static const Status s = [] {
    Status st;
    st.reason = "CUDA support was not compiled into this binary (nvcc not found or LK_CUDA=OFF)";
    return st;
  }();
  return s;
}

void disable(const std::string&) {}

[[noreturn]] static void unavailable() { throw Error(ErrorCode::Device, status().reason); }

void* alloc(int, size_t) { unavailable(); }
void release(int, void*) noexcept {}
void copy_to_device(int, void*, const void*, size_t) { unavailable(); }
void copy_on_device(int, void*, const void*, size_t) { unavailable(); }
void fill_bytes(int, void*, int, size_t) { unavailable(); }
void copy_to_host(int, void*, const void*, size_t) { unavailable(); }
void synchronize(int) { unavailable(); }
MemoryStats memory_stats(int) { unavailable(); }
void empty_cache(int) { unavailable(); }
Event* event_record(int) { unavailable(); }
double event_elapsed_ms(const Event*, const Event*) { unavailable(); }
void event_destroy(Event*) noexcept {}  // no event can exist here
void notify_when_done(Completion&, int, void (*)(void*), void*) { unavailable(); }
void finish(const Completion&) {}  // never reached: notify_when_done throws
std::string take_op_plans() { return {}; }

void test_kernel_fault(int) { unavailable(); }

}  // namespace lk::gpu
