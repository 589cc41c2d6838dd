// AVX-512 kernels of the low-precision-weight linear layers (gemm_lowp.h): 16-wide conversion +
// FMA dot products with masked tails, and, where the CPU has AVX512_BF16, bf16 dot products
// (vdpbf16ps) against the activations split exactly into three bf16 parts. Packing for the GEMM
// path reuses the AVX2 routines with nr = 32 (gemm_lowp_avx2.cc). Only plain functions and this
// file's own (internal) templates below the pragmas (see gemm_lowp_avx2.cc for why).
#include <immintrin.h>

#include <cstdint>

#include "gemm_lowp.h"

#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma")
// GCC 12 flags its own intrinsics' _mm*_undefined_* as uninitialised (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

namespace lwm {
namespace lowp_detail {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

constexpr int kNr = 32;  // kAvx512Kernels.nr in gemm_avx512.cc

inline __mmask16 mask16(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// Sixteen weights at p as fp32; the masked form reads only the lanes in m (others zero).
inline __m512 load16(const uint16_t* p) {
  const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
inline __m512 load16(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 load16(const uint16_t* p, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
}
inline __m512 load16(const int8_t* p, __mmask16 m) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p))); }

// Sum of the 16 lanes.
inline float hsum(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// As dot_tile in gemm_lowp_avx2.cc, 16 lanes wide.
template <int MB, int NB, int U, typename T>
inline void dot_tile(int64_t k, const float* x, const T* w, int64_t ldw, const float* scales, float* y, int64_t ldy) {
  __m512 acc[U][MB][NB];
#pragma GCC unroll 16
  for (int u = 0; u < U; u++) {
#pragma GCC unroll 16
    for (int i = 0; i < MB; i++) {
#pragma GCC unroll 16
      for (int r = 0; r < NB; r++) acc[u][i][r] = _mm512_setzero_ps();
    }
  }
  int64_t p = 0;
  for (; p + 16 * U <= k; p += 16 * U) {
#pragma GCC unroll 16
    for (int u = 0; u < U; u++) {
      __m512 wv[NB];
#pragma GCC unroll 16
      for (int r = 0; r < NB; r++) wv[r] = load16(w + r * ldw + p + 16 * u);
#pragma GCC unroll 16
      for (int i = 0; i < MB; i++) {
        const __m512 xv = _mm512_loadu_ps(x + i * k + p + 16 * u);
#pragma GCC unroll 16
        for (int r = 0; r < NB; r++) acc[u][i][r] = _mm512_fmadd_ps(wv[r], xv, acc[u][i][r]);
      }
    }
  }
  for (; p < k; p += 16) {
    const __mmask16 m = mask16(imin(16, k - p));
    __m512 wv[NB];
#pragma GCC unroll 16
    for (int r = 0; r < NB; r++) wv[r] = load16(w + r * ldw + p, m);
#pragma GCC unroll 16
    for (int i = 0; i < MB; i++) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * k + p);
#pragma GCC unroll 16
      for (int r = 0; r < NB; r++) acc[0][i][r] = _mm512_fmadd_ps(wv[r], xv, acc[0][i][r]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MB; i++) {
#pragma GCC unroll 16
    for (int r = 0; r < NB; r++) {
      __m512 s = acc[0][i][r];
#pragma GCC unroll 16
      for (int u = 1; u < U; u++) s = _mm512_add_ps(s, acc[u][i][r]);
      const float t = hsum(s);
      y[i * ldy + r] = scales ? scales[r] * t : t;
    }
  }
}

template <int MB, int NB, int U, typename T>
void dot_rows(int64_t n, int64_t k, const float* x, const T* w, int64_t ldw, const float* scales, float* y, int64_t ldy) {
  int64_t j = 0;
  for (; j + NB <= n; j += NB) dot_tile<MB, NB, U>(k, x, w + j * ldw, ldw, scales ? scales + j : nullptr, y + j, ldy);
  for (; j < n; j++) dot_tile<MB, 1, U>(k, x, w + j * ldw, ldw, scales ? scales + j : nullptr, y + j, ldy);
}

template <typename T>
void dot_any(int64_t m, int64_t n, int64_t k, const float* x, const T* w, int64_t ldw, const float* scales, float* y,
             int64_t ldy) {
  switch (m) {
    case 1: return dot_rows<1, 4, 2>(n, k, x, w, ldw, scales, y, ldy);
    case 2: return dot_rows<2, 4, 1>(n, k, x, w, ldw, scales, y, ldy);
    case 3: return dot_rows<3, 4, 1>(n, k, x, w, ldw, scales, y, ldy);
    default: return dot_rows<4, 4, 1>(n, k, x, w, ldw, scales, y, ldy);
  }
}

void dot_bf16(int64_t m, int64_t n, int64_t k, const float* x, const uint16_t*, const uint16_t* w, int64_t ldw, float* y,
              int64_t ldy) {
  for (int64_t i = 0; i < m; i += 4) dot_any(imin(4, m - i), n, k, x + i * k, w, ldw, nullptr, y + i * ldy, ldy);
}

void dot_int8(int64_t m, int64_t n, int64_t k, const float* x, const int8_t* q, int64_t ldq, const float* scales,
              float* y, int64_t ldy) {
  for (int64_t i = 0; i < m; i += 4) dot_any(imin(4, m - i), n, k, x + i * k, q, ldq, scales, y + i * ldy, ldy);
}

}  // namespace

// Constant-initialised (addresses only), so no AVX-512 code runs unless the dispatcher picks it.
extern const LowpKernels kAvx512Lowp = {kNr, 0, nullptr, dot_bf16, dot_int8, pack_bf16_avx2_nr32, pack_int8_avx2_nr32};

}  // namespace lowp_detail
}  // namespace lwm

// ---- AVX512_BF16 ----------------------------------------------------------------------------
// vdpbf16ps multiplies bf16 pairs exactly (8-bit significands) and adds into fp32 lanes with
// round-to-nearest, denormal inputs and outputs flushed to zero. Rounding x to bf16 would lose
// 16 bits of each activation, so x is split exactly into three bf16 parts by truncation:
// hi = top 16 bits of x, mid = top 16 bits of (x - hi), lo = x - hi - mid (x - hi has at most
// 16 significant bits, x - hi - mid at most 8, so every difference is exact and lo is a bf16).
// The products of hi go into one accumulator and those of mid and lo (2^-8 smaller) into
// another, so the result has the error of an fp32 dot product (lanes of 16 pairs, summed at the
// end) apart from flushing: parts below 2^-126 (|x| < ~2^-110) or weights below it count as 0.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma")

namespace lwm {
namespace lowp_detail {
namespace {

inline uint32_t bits(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
}
inline float from_bits(uint32_t u) {
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
}

// Rows of x as [hi (k), mid (k), lo (k)] per row, 3 * k uint16 each.
void bf16_prep_x(int64_t m, int64_t k, const float* x, uint16_t* xp) {
  for (int64_t i = 0; i < m; i++) {
    uint16_t* hi = xp + i * 3 * k;
    uint16_t* mid = hi + k;
    uint16_t* lo = mid + k;
    for (int64_t p = 0; p < k; p++) {
      const float v = x[i * k + p];
      const uint32_t u = bits(v);
      if ((u & 0x7F800000u) == 0x7F800000u) {
        // Inf keeps its bits; NaN becomes a quiet NaN (truncating could leave an infinity).
        hi[p] = (u & 0x007FFFFFu) ? static_cast<uint16_t>((u >> 16) | 0x0040u) : static_cast<uint16_t>(u >> 16);
        mid[p] = lo[p] = 0;
        continue;
      }
      const uint32_t h = u & 0xFFFF0000u;
      const float r1 = v - from_bits(h);
      const uint32_t m1 = bits(r1) & 0xFFFF0000u;
      const float r2 = r1 - from_bits(m1);
      hi[p] = static_cast<uint16_t>(h >> 16);
      mid[p] = static_cast<uint16_t>(m1 >> 16);
      lo[p] = static_cast<uint16_t>(bits(r2) >> 16);
    }
  }
}

inline __m512bh as_bh(__m512i v) { return (__m512bh)v; }

// MB rows of the split x (row stride 3 * k) against NB weight rows, 32 bf16 per step.
template <int MB, int NB>
inline void dp_tile(int64_t k, const uint16_t* xp, const uint16_t* w, int64_t ldw, float* y, int64_t ldy) {
  __m512 hi[MB][NB], lo[MB][NB];
#pragma GCC unroll 16
  for (int i = 0; i < MB; i++) {
#pragma GCC unroll 16
    for (int r = 0; r < NB; r++) hi[i][r] = lo[i][r] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < k; p += 32) {
    const int64_t left = k - p;
    const __mmask32 m = left >= 32 ? ~static_cast<__mmask32>(0) : static_cast<__mmask32>((1u << left) - 1u);
    __m512i wv[NB];
#pragma GCC unroll 16
    for (int r = 0; r < NB; r++) wv[r] = _mm512_maskz_loadu_epi16(m, w + r * ldw + p);
#pragma GCC unroll 16
    for (int i = 0; i < MB; i++) {
      const uint16_t* xi = xp + i * 3 * k + p;
      const __m512i xh = _mm512_maskz_loadu_epi16(m, xi);
      const __m512i xm = _mm512_maskz_loadu_epi16(m, xi + k);
      const __m512i xl = _mm512_maskz_loadu_epi16(m, xi + 2 * k);
#pragma GCC unroll 16
      for (int r = 0; r < NB; r++) {
        hi[i][r] = _mm512_dpbf16_ps(hi[i][r], as_bh(xh), as_bh(wv[r]));
        lo[i][r] = _mm512_dpbf16_ps(lo[i][r], as_bh(xm), as_bh(wv[r]));
        lo[i][r] = _mm512_dpbf16_ps(lo[i][r], as_bh(xl), as_bh(wv[r]));
      }
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MB; i++) {
#pragma GCC unroll 16
    for (int r = 0; r < NB; r++) y[i * ldy + r] = hsum(_mm512_add_ps(hi[i][r], lo[i][r]));
  }
}

template <int MB, int NB>
void dp_rows(int64_t n, int64_t k, const uint16_t* xp, const uint16_t* w, int64_t ldw, float* y, int64_t ldy) {
  int64_t j = 0;
  for (; j + NB <= n; j += NB) dp_tile<MB, NB>(k, xp, w + j * ldw, ldw, y + j, ldy);
  for (; j < n; j++) dp_tile<MB, 1>(k, xp, w + j * ldw, ldw, y + j, ldy);
}

void dp_bf16(int64_t m, int64_t n, int64_t k, const float*, const uint16_t* xp, const uint16_t* w, int64_t ldw, float* y,
             int64_t ldy) {
  for (int64_t i = 0; i < m; i += 4) {
    const int64_t mb = imin(4, m - i);
    const uint16_t* xi = xp + i * 3 * k;
    float* yi = y + i * ldy;
    switch (mb) {
      case 1: dp_rows<1, 4>(n, k, xi, w, ldw, yi, ldy); break;
      case 2: dp_rows<2, 4>(n, k, xi, w, ldw, yi, ldy); break;
      case 3: dp_rows<3, 2>(n, k, xi, w, ldw, yi, ldy); break;
      default: dp_rows<4, 2>(n, k, xi, w, ldw, yi, ldy); break;
    }
  }
}

}  // namespace

extern const LowpKernels kAvx512Bf16Lowp = {kNr, 3, bf16_prep_x, dp_bf16, dot_int8, pack_bf16_avx2_nr32, pack_int8_avx2_nr32};

}  // namespace lowp_detail
}  // namespace lwm

#pragma GCC pop_options
