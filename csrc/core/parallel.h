// A process-wide pool of compute threads (one per core). Kernels split their work into tasks;
// the calling thread works too. Concurrent callers (worker_threads, the async job thread) take
// turns: two GEMMs sharing two cores would only thrash each other's caches.
#pragma once
#include <cstdint>
#include <functional>

namespace lk {

int num_threads();

// Runs fn(task, thread) for every task in [0, ntasks); `thread` is in [0, num_threads()) and is
// stable for the duration of one task, so kernels can index per-thread scratch with it.
void parallel_for(int64_t ntasks, const std::function<void(int64_t task, int thread)>& fn);

}  // namespace lk
