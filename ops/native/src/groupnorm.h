// Fused GroupNorm (+ optional SiLU) over NHWC float32, Flax semantics: per image and group,
// mean and var = max(0, E[x^2] - E[x]^2) over (H, W, C/groups), y = (x - mean) * (rsqrt(var +
// eps) * scale) + bias, then y * sigmoid(y) when silu. In tfjs ops this was ~10 full-tensor JS
// passes (half of a VQGAN encode); here it is one read for the statistics and one read+write.
#pragma once
#include <cstdint>

namespace lwm {

struct GroupNormShape {
  int64_t n = 0, hw = 0, c = 0;  // x is [n, hw, c]
  int64_t groups = 1;            // divides c
  float eps = 1e-6f;
  bool silu = false;
};

// scale and bias hold c values.
void group_norm_nhwc(const GroupNormShape& s, const float* x, const float* scale, const float* bias, float* y);

// ---- Internal: the per-ISA loops the driver (groupnorm.cc) runs on chunks of pixels. ----
namespace gn {

struct Kernels {
  // s[ch] += sum of x[p][ch], q[ch] += sum of x[p][ch]^2 over p < pixels, in float64: the sums
  // run over up to millions of values, where float32 would lose digits of the variance.
  void (*sums)(const float* x, int64_t pixels, int64_t c, double* s, double* q);
  // y[p][ch] = (x[p][ch] - shift[ch]) * mul[ch] + bias[ch], then silu if asked.
  void (*apply)(const float* x, float* y, int64_t pixels, int64_t c, const float* shift, const float* mul,
                const float* bias, bool silu);
};

const Kernels& kernels_scalar();
const Kernels& kernels_avx2();

}  // namespace gn
}  // namespace lwm
