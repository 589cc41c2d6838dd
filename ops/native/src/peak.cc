#include "peak.h"

#include <chrono>
#include <vector>

#include "cpu.h"
#include "threadpool.h"

namespace lwm {

double measure_peak_gflops(double seconds) {
  const Isa isa = active_isa();
  const int lanes = isa == Isa::kAvx512 ? 16 : isa == Isa::kAvx2 ? 8 : 0;
  if (lanes == 0) return 0;  // no vector FMA: the scalar fallback has no meaningful peak
  auto loop = [&](int64_t iters) { return isa == Isa::kAvx512 ? fma_loop_avx512(iters) : fma_loop_avx2(iters); };
  const int threads = num_threads();
  // Calibrate the iteration count on one thread so the timed run lasts about `seconds`.
  int64_t iters = 1 << 16;
  for (;;) {
    auto t0 = std::chrono::steady_clock::now();
    volatile float sink = loop(iters);
    (void)sink;
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt > 0.02 || iters > (int64_t(1) << 34)) {
      iters = static_cast<int64_t>(iters * seconds / dt) + 1;
      break;
    }
    iters *= 4;
  }
  std::vector<float> sinks(threads);
  auto t0 = std::chrono::steady_clock::now();
  parallel_for(threads, [&](int64_t i, int) { sinks[i] = loop(iters); });
  double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * kPeakChains * lanes * static_cast<double>(iters) * threads / dt / 1e9;
}

}  // namespace lwm
