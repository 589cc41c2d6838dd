#include "threadpool.h"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace lwm {
namespace {

thread_local bool in_parallel = false;

class Pool {
 public:
  explicit Pool(int n) { start(n); }
  ~Pool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int n) {
    stop();
    start(n);
  }

  void run(int64_t n, const std::function<void(int64_t, int)>& fn) {
    if (n <= 0) return;
    if (in_parallel || workers_.empty() || n == 1) {
      bool was = in_parallel;
      in_parallel = true;
      for (int64_t i = 0; i < n; i++) fn(i, 0);
      in_parallel = was;
      return;
    }
    std::lock_guard<std::mutex> serial(run_mutex_);  // one job at a time per process
    fn_ = &fn;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    {
      std::lock_guard<std::mutex> lk(m_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    work(0);
    // Workers finish their last item quickly; spin, then yield, rather than sleep.
    while (pending_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    fn_ = nullptr;
  }

 private:
  void start(int n) {
    quit_ = false;
    // Workers start from the generation current now: one read inside the new thread could miss a
    // job (or a resize) posted before it first ran, and the caller would wait for it forever.
    const uint64_t g0 = generation_.load(std::memory_order_acquire);
    for (int t = 1; t < n; t++) workers_.emplace_back([this, t, g0] { loop(t, g0); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(m_);
      quit_ = true;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  void work(int tid) {
    in_parallel = true;
    for (;;) {
      int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= n_) break;
      (*fn_)(i, tid);
    }
    in_parallel = false;
  }

  void loop(int tid, uint64_t seen) {
    for (;;) {
      // Spin briefly: decode steps issue many small jobs back to back, and a sleeping worker
      // costs tens of microseconds to wake. Then sleep, so an idle process leaves its cores free.
      auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < until) {
        __builtin_ia32_pause();
      }
      if (generation_.load(std::memory_order_acquire) == seen) {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      if (quit_) return;
      work(tid);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::vector<std::thread> workers_;
  std::mutex m_, run_mutex_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0;
  bool quit_ = false;
};

Pool& pool() {
  static Pool* p = new Pool(default_threads());  // never destroyed: exit must not wait on workers
  return *p;
}

}  // namespace

int default_threads() {
  if (const char* s = std::getenv("LWM_THREADS")) {
    int n = std::atoi(s);
    if (n >= 1) return n;
  }
  cpu_set_t set;
  int cores = 0;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cores = CPU_COUNT(&set);
  if (cores <= 0) cores = static_cast<int>(std::thread::hardware_concurrency());
  int ranks = 1;
  if (const char* s = std::getenv("LWM_LOCAL_WORLD_SIZE")) ranks = std::max(1, std::atoi(s));
  return std::max(1, cores / ranks);
}

void parallel_for(int64_t n, const std::function<void(int64_t, int)>& fn) { pool().run(n, fn); }

int num_threads() { return pool().size(); }

void set_num_threads(int n) { pool().resize(std::max(1, n)); }

}  // namespace lwm
