// The machine's fp32 FMA peak, measured: the yardstick every kernel's GFLOP/s is compared to.
#pragma once
#include <cstdint>

namespace lwm {

// FLOPs one call of the per-ISA loop performs per iteration.
constexpr int kPeakChains = 12;

// Runs a loop of independent FMA chains on every pool thread for about `seconds` and returns
// GFLOP/s over all threads.
double measure_peak_gflops(double seconds);

// Per-ISA loops (peak_avx2.cc, peak_avx512.cc): `iters` iterations of kPeakChains FMAs on full
// vectors; return a value derived from the results so the work cannot be optimised away.
float fma_loop_avx2(int64_t iters);
float fma_loop_avx512(int64_t iters);

}  // namespace lwm
