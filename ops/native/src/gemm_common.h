// Per-thread scratch buffers and task fan-out shared by the fp32 and the low-precision GEMM drivers.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <new>

#include "threadpool.h"

namespace lwm {
namespace gemm_common {

// Packing buffers, per thread, grown on demand and kept: page faults on fresh memory are slow
// here, so every call after the first reuses warm pages.
struct Scratch {
  float* p[4] = {};
  size_t cap[4] = {};
  float* get(int slot, int64_t n) {
    const size_t need = static_cast<size_t>(n) + 16;
    if (cap[slot] < need) {
      std::free(p[slot]);
      // Forgotten before allocating, so a failed allocation never leaves a freed pointer behind.
      p[slot] = nullptr;
      cap[slot] = 0;
      size_t bytes = need * sizeof(float);
      const size_t align = bytes >= (2u << 20) ? (2u << 20) : 64;
      bytes = (bytes + align - 1) / align * align;
      p[slot] = static_cast<float*>(std::aligned_alloc(align, bytes));
      if (!p[slot]) throw std::bad_alloc();
      if (align > 64) madvise(p[slot], bytes, MADV_HUGEPAGE);
      cap[slot] = need;
    }
    return p[slot];
  }
  ~Scratch() {
    for (float* q : p) std::free(q);
  }
};

// Runs fn(i) for i < n, on the pool when `parallel`.
inline void run_tasks(int64_t n, bool parallel, const std::function<void(int64_t)>& fn) {
  if (parallel && n > 1 && num_threads() > 1) {
    parallel_for(n, [&](int64_t i, int) { fn(i); });
  } else {
    for (int64_t i = 0; i < n; i++) fn(i);
  }
}

}  // namespace gemm_common
}  // namespace lwm
