// AVX2 + FMA loops of the GroupNorm: float64 sums four channels a vector, and a vectorised exp
// for the SiLU (scalar expf took longer than the rest of the pass). Internal to this file, like
// attention_avx2.cc, so no AVX2 copy of an inline function reaches the scalar path.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "groupnorm.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace lwm {
namespace gn {
namespace {

constexpr int kVec = 8;

void sums_avx2(const float* x, int64_t pixels, int64_t c, double* s, double* q) {
  const int64_t cv = c / kVec * kVec;
  for (int64_t p = 0; p < pixels; p++, x += c) {
    for (int64_t ch = 0; ch < cv; ch += kVec) {
      const __m256 v = _mm256_loadu_ps(x + ch);
      const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
      _mm256_storeu_pd(s + ch, _mm256_add_pd(_mm256_loadu_pd(s + ch), lo));
      _mm256_storeu_pd(s + ch + 4, _mm256_add_pd(_mm256_loadu_pd(s + ch + 4), hi));
      _mm256_storeu_pd(q + ch, _mm256_fmadd_pd(lo, lo, _mm256_loadu_pd(q + ch)));
      _mm256_storeu_pd(q + ch + 4, _mm256_fmadd_pd(hi, hi, _mm256_loadu_pd(q + ch + 4)));
    }
    for (int64_t ch = cv; ch < c; ch++) {
      const double v = x[ch];
      s[ch] += v;
      q[ch] += v * v;
    }
  }
}

// e^x, Cephes expf: x = n ln2 + r with a two-part ln2, a degree-5 polynomial in r (about 1 ulp).
// Inputs are clamped to [-88, 89] so 2^n stays a bit pattern: 0 below (e^-88 is subnormal), +inf
// above, as expf would give for the sigmoid. NaN passes the clamps (operand order) and stays NaN.
inline __m256 expv(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-88.f), x);
  x = _mm256_min_ps(_mm256_set1_ps(89.f), x);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

template <bool kSilu>
void apply_rows(const float* x, float* y, int64_t pixels, int64_t c, const float* shift, const float* mul, const float* bias) {
  const int64_t cv = c / kVec * kVec;
  const __m256 one = _mm256_set1_ps(1.f);
  for (int64_t p = 0; p < pixels; p++, x += c, y += c) {
    for (int64_t ch = 0; ch < cv; ch += kVec) {
      const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + ch), _mm256_loadu_ps(shift + ch));
      __m256 v = _mm256_fmadd_ps(d, _mm256_loadu_ps(mul + ch), _mm256_loadu_ps(bias + ch));
      if (kSilu) v = _mm256_div_ps(v, _mm256_add_ps(one, expv(_mm256_sub_ps(_mm256_setzero_ps(), v))));
      _mm256_storeu_ps(y + ch, v);
    }
    for (int64_t ch = cv; ch < c; ch++) {
      const float v = std::fma(x[ch] - shift[ch], mul[ch], bias[ch]);
      y[ch] = kSilu ? v / (1.0f + std::exp(-v)) : v;
    }
  }
}

void apply_avx2(const float* x, float* y, int64_t pixels, int64_t c, const float* shift, const float* mul, const float* bias,
                bool silu) {
  if (silu) apply_rows<true>(x, y, pixels, c, shift, mul, bias);
  else apply_rows<false>(x, y, pixels, c, shift, mul, bias);
}

}  // namespace
}  // namespace gn
}  // namespace lwm

#pragma GCC pop_options

namespace lwm {
namespace gn {

// Compiled for the baseline ISA: only what it returns needs AVX2.
const Kernels& kernels_avx2() {
  static const Kernels k{sums_avx2, apply_avx2};
  return k;
}

}  // namespace gn
}  // namespace lwm
