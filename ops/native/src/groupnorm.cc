#include "groupnorm.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu.h"
#include "threadpool.h"

namespace lwm {
namespace gn {
namespace {

void sums_scalar(const float* x, int64_t pixels, int64_t c, double* s, double* q) {
  for (int64_t p = 0; p < pixels; p++, x += c) {
    for (int64_t ch = 0; ch < c; ch++) {
      const double v = x[ch];
      s[ch] += v;
      q[ch] += v * v;
    }
  }
}

void apply_scalar(const float* x, float* y, int64_t pixels, int64_t c, const float* shift, const float* mul,
                  const float* bias, bool silu) {
  for (int64_t p = 0; p < pixels; p++, x += c, y += c) {
    for (int64_t ch = 0; ch < c; ch++) {
      const float v = (x[ch] - shift[ch]) * mul[ch] + bias[ch];
      y[ch] = silu ? v / (1.0f + std::exp(-v)) : v;
    }
  }
}

}  // namespace

const Kernels& kernels_scalar() {
  static const Kernels k{sums_scalar, apply_scalar};
  return k;
}

}  // namespace gn

namespace {

const gn::Kernels& pick_kernels() {
  // The AVX2 loops serve AVX-512 machines too: both passes are bound by memory, not by width.
  return active_isa() >= Isa::kAvx2 ? gn::kernels_avx2() : gn::kernels_scalar();
}

constexpr int64_t kGrain = 1 << 14;  // elements per work item; smaller ones cost more to hand out

}  // namespace

void group_norm_nhwc(const GroupNormShape& s, const float* x, const float* scale, const float* bias, float* y) {
  const int64_t n = s.n, hw = s.hw, c = s.c;
  if (n <= 0 || hw <= 0 || c <= 0) return;
  const gn::Kernels& k = pick_kernels();
  // Chunks of pixels of one image: several per thread for balance, none below kGrain elements.
  const int64_t threads = num_threads();
  const int64_t want = std::max<int64_t>(1, std::min<int64_t>(4 * threads, hw * c / kGrain));
  const int64_t chunk = (hw + want - 1) / want, chunks = (hw + chunk - 1) / chunk, items = n * chunks;

  // Per-channel partial sums of each chunk, reduced in a fixed order: results do not depend on
  // which thread took which chunk.
  std::vector<double> part(static_cast<size_t>(items * 2 * c), 0.0);
  parallel_for(items, [&](int64_t i, int) {
    const int64_t b = i / chunks, p0 = (i % chunks) * chunk, p1 = std::min(hw, p0 + chunk);
    k.sums(x + (b * hw + p0) * c, p1 - p0, c, &part[i * 2 * c], &part[i * 2 * c + c]);
  });

  std::vector<float> shift(static_cast<size_t>(n * c)), mul(static_cast<size_t>(n * c));
  const int64_t cg = c / s.groups;
  const double count = static_cast<double>(hw * cg);
  for (int64_t b = 0; b < n; b++) {
    for (int64_t g = 0; g < s.groups; g++) {
      double sum = 0, sq = 0;
      for (int64_t j = 0; j < chunks; j++) {
        const double* pj = &part[(b * chunks + j) * 2 * c];
        for (int64_t ch = g * cg; ch < (g + 1) * cg; ch++) sum += pj[ch], sq += pj[c + ch];
      }
      const double mean = sum / count;
      const double var = std::max(0.0, sq / count - mean * mean);
      const float rstd = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(s.eps)));
      for (int64_t ch = g * cg; ch < (g + 1) * cg; ch++) {
        shift[b * c + ch] = static_cast<float>(mean);
        mul[b * c + ch] = rstd * scale[ch];  // Flax: mul = rsqrt(var + eps) * scale, in float32
      }
    }
  }

  parallel_for(items, [&](int64_t i, int) {
    const int64_t b = i / chunks, p0 = (i % chunks) * chunk, p1 = std::min(hw, p0 + chunk);
    const int64_t off = (b * hw + p0) * c;
    k.apply(x + off, y + off, p1 - p0, c, &shift[b * c], &mul[b * c], bias, s.silu);
  });
}

}  // namespace lwm
