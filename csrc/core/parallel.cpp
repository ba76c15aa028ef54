#include "parallel.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace lk {
namespace {

// Workers sleep on a condition variable between parallel regions; a region hands out tasks
// through one atomic counter, so uneven tasks balance themselves.
class ThreadPool {
 public:
  explicit ThreadPool(int threads) : size_(threads) {
    for (int t = 1; t < threads; ++t) workers_.emplace_back([this, t] { worker_loop(t); });
  }
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  int size() const { return size_; }

  void run(int64_t ntasks, const std::function<void(int64_t, int)>& fn) {
    if (ntasks <= 0) return;
    std::lock_guard<std::mutex> region(region_mutex_);
    if (size_ == 1 || ntasks == 1) {
      for (int64_t i = 0; i < ntasks; ++i) fn(i, 0);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      ntasks_ = ntasks;
      next_.store(0);
      active_ = size_ - 1;
      ++generation_;
    }
    wake_.notify_all();
    drain(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return active_ == 0; });
    fn_ = nullptr;
  }

 private:
  void drain(int thread) {
    for (int64_t i = next_.fetch_add(1); i < ntasks_; i = next_.fetch_add(1)) (*fn_)(i, thread);
  }

  void worker_loop(int thread) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
      }
      drain(thread);
      std::lock_guard<std::mutex> lock(mutex_);
      if (--active_ == 0) done_.notify_one();
    }
  }

  const int size_;
  std::vector<std::thread> workers_;
  std::mutex region_mutex_;  // one parallel region at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t ntasks_ = 0;
  std::atomic<int64_t> next_{0};
  int active_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

int configured_threads() {
  if (const char* env = std::getenv("LK_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

ThreadPool& pool() {
  // Leaked on purpose: joining threads from a static destructor during process exit can
  // deadlock when the addon is unloaded from a worker_thread.
  static ThreadPool* p = new ThreadPool(configured_threads());
  return *p;
}

}  // namespace

int num_threads() { return pool().size(); }

void parallel_for(int64_t ntasks, const std::function<void(int64_t, int)>& fn) { pool().run(ntasks, fn); }

}  // namespace lk
