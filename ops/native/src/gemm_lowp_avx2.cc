// AVX2 + FMA kernels of the low-precision-weight linear layers (gemm_lowp.h): bf16 widened by
// zero-extending to 32 bits and shifting left 16, int8 sign-extended and converted, both in
// registers; fp32 FMA accumulation. Only plain functions and this file's own (internal) templates
// below the pragma: an inline std template instantiated here could be merged by the linker into
// generic code.
#include <immintrin.h>

#include <cstdint>

#include "gemm_lowp.h"

#pragma GCC target("avx2,fma")

namespace lwm {
namespace lowp_detail {
namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Lanes [0, n) set (n in 0..8).
inline __m256i tail_mask(int64_t n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane);
}

// Eight weights at p as fp32.
inline __m256 load8(const uint16_t* p) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
inline __m256 load8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// The first n (1..7) weights at p, zero-padded to eight, reading nothing past p + n.
template <typename T>
inline __m256 load_tail(const T* p, int64_t n) {
  alignas(16) T t[16] = {};
  for (int64_t i = 0; i < n; i++) t[i] = p[i];
  return load8(t);
}

inline float to_f32(uint16_t b) {
  return _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(static_cast<int>(static_cast<uint32_t>(b) << 16))));
}
inline float to_f32(int8_t v) { return static_cast<float>(v); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// MB rows of x (row stride k) against NB weight rows (row stride ldw): each weight vector is
// converted once and used MB times; U accumulators per pair over consecutive 8-wide steps hide
// the FMA latency. y[i * ldy + r] = (scales ? scales[r] : 1) * dot.
template <int MB, int NB, int U, typename T>
inline void dot_tile(int64_t k, const float* x, const T* w, int64_t ldw, const float* scales, float* y, int64_t ldy) {
  __m256 acc[U][MB][NB];
#pragma GCC unroll 16
  for (int u = 0; u < U; u++) {
#pragma GCC unroll 16
    for (int i = 0; i < MB; i++) {
#pragma GCC unroll 16
      for (int r = 0; r < NB; r++) acc[u][i][r] = _mm256_setzero_ps();
    }
  }
  int64_t p = 0;
  for (; p + 8 * U <= k; p += 8 * U) {
#pragma GCC unroll 16
    for (int u = 0; u < U; u++) {
      __m256 wv[NB];
#pragma GCC unroll 16
      for (int r = 0; r < NB; r++) wv[r] = load8(w + r * ldw + p + 8 * u);
#pragma GCC unroll 16
      for (int i = 0; i < MB; i++) {
        const __m256 xv = _mm256_loadu_ps(x + i * k + p + 8 * u);
#pragma GCC unroll 16
        for (int r = 0; r < NB; r++) acc[u][i][r] = _mm256_fmadd_ps(wv[r], xv, acc[u][i][r]);
      }
    }
  }
  for (; p + 8 <= k; p += 8) {
    __m256 wv[NB];
#pragma GCC unroll 16
    for (int r = 0; r < NB; r++) wv[r] = load8(w + r * ldw + p);
#pragma GCC unroll 16
    for (int i = 0; i < MB; i++) {
      const __m256 xv = _mm256_loadu_ps(x + i * k + p);
#pragma GCC unroll 16
      for (int r = 0; r < NB; r++) acc[0][i][r] = _mm256_fmadd_ps(wv[r], xv, acc[0][i][r]);
    }
  }
  if (p < k) {
    const __m256i mask = tail_mask(k - p);
    __m256 wv[NB];
#pragma GCC unroll 16
    for (int r = 0; r < NB; r++) wv[r] = load_tail(w + r * ldw + p, k - p);
#pragma GCC unroll 16
    for (int i = 0; i < MB; i++) {
      const __m256 xv = _mm256_maskload_ps(x + i * k + p, mask);
#pragma GCC unroll 16
      for (int r = 0; r < NB; r++) acc[0][i][r] = _mm256_fmadd_ps(wv[r], xv, acc[0][i][r]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MB; i++) {
#pragma GCC unroll 16
    for (int r = 0; r < NB; r++) {
      __m256 s = acc[0][i][r];
#pragma GCC unroll 16
      for (int u = 1; u < U; u++) s = _mm256_add_ps(s, acc[u][i][r]);
      const float t = hsum(s);
      y[i * ldy + r] = scales ? scales[r] * t : t;
    }
  }
}

// All n weight rows against MB rows of x, NB rows at a time.
template <int MB, int NB, int U, typename T>
void dot_rows(int64_t n, int64_t k, const float* x, const T* w, int64_t ldw, const float* scales, float* y, int64_t ldy) {
  int64_t j = 0;
  for (; j + NB <= n; j += NB) dot_tile<MB, NB, U>(k, x, w + j * ldw, ldw, scales ? scales + j : nullptr, y + j, ldy);
  for (; j < n; j++) dot_tile<MB, 1, U>(k, x, w + j * ldw, ldw, scales ? scales + j : nullptr, y + j, ldy);
}

// Tiles that keep 8 or 9 accumulators (16 ymm registers in all).
template <typename T>
void dot_any(int64_t m, int64_t n, int64_t k, const float* x, const T* w, int64_t ldw, const float* scales, float* y,
             int64_t ldy) {
  switch (m) {
    case 1: return dot_rows<1, 4, 2>(n, k, x, w, ldw, scales, y, ldy);
    case 2: return dot_rows<2, 4, 1>(n, k, x, w, ldw, scales, y, ldy);
    case 3: return dot_rows<3, 3, 1>(n, k, x, w, ldw, scales, y, ldy);
    default: return dot_rows<4, 2, 1>(n, k, x, w, ldw, scales, y, ldy);
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

#include "transpose8.inc"

// Eight weight rows (src, row stride ld) as fp32 into eight columns of an NR-wide k-major panel
// (dst, 32-byte aligned), each row times its scale when scales is given.
template <int NR, typename T>
inline void pack_8rows(const T* src, int64_t ld, const float* scales, int64_t kc, float* dst) {
  __m256 sc[8];
  for (int r = 0; r < 8; r++) sc[r] = _mm256_set1_ps(scales ? scales[r] : 1.0f);
  int64_t p = 0;
  // Eight short runs at once defeat the hardware prefetcher: fetch each row 256 bytes ahead.
  constexpr int64_t kLine = 64 / sizeof(T), kAhead = 256 / sizeof(T);
  for (; p + 8 <= kc; p += 8) {
    if (p % kLine == 0) {
      for (int r = 0; r < 8; r++) _mm_prefetch(reinterpret_cast<const char*>(src + r * ld + p + kAhead), _MM_HINT_T0);
    }
    __m256 r0 = load8(src + p), r1 = load8(src + ld + p), r2 = load8(src + 2 * ld + p), r3 = load8(src + 3 * ld + p);
    __m256 r4 = load8(src + 4 * ld + p), r5 = load8(src + 5 * ld + p), r6 = load8(src + 6 * ld + p), r7 = load8(src + 7 * ld + p);
    if (scales) {
      r0 = _mm256_mul_ps(r0, sc[0]), r1 = _mm256_mul_ps(r1, sc[1]), r2 = _mm256_mul_ps(r2, sc[2]), r3 = _mm256_mul_ps(r3, sc[3]);
      r4 = _mm256_mul_ps(r4, sc[4]), r5 = _mm256_mul_ps(r5, sc[5]), r6 = _mm256_mul_ps(r6, sc[6]), r7 = _mm256_mul_ps(r7, sc[7]);
    }
    transpose8(r0, r1, r2, r3, r4, r5, r6, r7);
    float* d = dst + p * NR;
    _mm256_store_ps(d, r0);
    _mm256_store_ps(d + NR, r1);
    _mm256_store_ps(d + 2 * NR, r2);
    _mm256_store_ps(d + 3 * NR, r3);
    _mm256_store_ps(d + 4 * NR, r4);
    _mm256_store_ps(d + 5 * NR, r5);
    _mm256_store_ps(d + 6 * NR, r6);
    _mm256_store_ps(d + 7 * NR, r7);
  }
  for (; p < kc; p++) {
    for (int c = 0; c < 8; c++) dst[p * NR + c] = scales ? scales[c] * to_f32(src[c * ld + p]) : to_f32(src[c * ld + p]);
  }
}

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// See LowpKernels::pack_bf16: eight rows at a time, each swept over all of klen (slice by slice).
template <int NR, typename T>
void pack(const T* w, int64_t ldw, const float* scales, int64_t klen, int64_t kc, int64_t nc, float* out) {
  const int64_t ncpad = round_up(nc, NR);
  for (int64_t j = 0; j < ncpad; j += 8) {
    const int64_t rows = nc - j, jp = j / NR * NR, h = j % NR;
    const float* sc = scales && rows > 0 ? scales + j : nullptr;
    for (int64_t b0 = 0; b0 < klen; b0 += kc) {
      const int64_t kcb = imin(kc, klen - b0);
      float* dst = out + b0 * ncpad + jp * kcb + h;
      if (rows >= 8) {
        pack_8rows<NR>(w + j * ldw + b0, ldw, sc, kcb, dst);
        continue;
      }
      for (int64_t p = 0; p < kcb; p++) {
        float* d = dst + p * NR;
        for (int64_t c = 0; c < 8; c++) {
          if (c >= rows) {
            d[c] = 0.0f;
            continue;
          }
          const float v = to_f32(w[(j + c) * ldw + b0 + p]);
          d[c] = sc ? sc[c] * v : v;
        }
      }
    }
  }
}

constexpr int kNr = 16;  // kAvx2Kernels.nr in gemm_avx2.cc

void pack_bf16(const uint16_t* w, int64_t ldw, int64_t klen, int64_t kc, int64_t nc, float* out) {
  pack<kNr>(w, ldw, nullptr, klen, kc, nc, out);
}
void pack_int8(const int8_t* q, int64_t ldq, const float* scales, int64_t klen, int64_t kc, int64_t nc, float* out) {
  pack<kNr>(q, ldq, scales, klen, kc, nc, out);
}

}  // namespace

void pack_bf16_avx2_nr32(const uint16_t* w, int64_t ldw, int64_t klen, int64_t kc, int64_t nc, float* out) {
  pack<32>(w, ldw, nullptr, klen, kc, nc, out);
}
void pack_int8_avx2_nr32(const int8_t* q, int64_t ldq, const float* scales, int64_t klen, int64_t kc, int64_t nc, float* out) {
  pack<32>(q, ldq, scales, klen, kc, nc, out);
}

// Constant-initialised (addresses only), so no AVX2 code runs unless the dispatcher picks it.
extern const LowpKernels kAvx2Lowp = {kNr, 0, nullptr, dot_bf16, dot_int8, pack_bf16, pack_int8};

}  // namespace lowp_detail
}  // namespace lwm
