// AVX-512 building blocks of the GEMM: 14x32 micro-kernel (28 zmm accumulators, 2 for B, 1 for
// the broadcast of A), packing, and the matrix-vector kernels with masked tails. Only plain
// functions below the pragma (see gemm_avx2.cc for why).
#include <immintrin.h>

#include <cstdint>

#include "gemm.h"

#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma")
// GCC 12 flags its own intrinsics' _mm512_undefined_* as uninitialised (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace lwm {
namespace gemm_detail {
namespace {

constexpr int kMr = 14, kNr = 32;

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

inline __mmask16 tail_mask(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

inline void store_tile(float* c, __m512 acc, __m512 va, __m512 vb, bool read_c) {
  _mm512_storeu_ps(c, read_c ? _mm512_fmadd_ps(va, acc, _mm512_mul_ps(vb, _mm512_loadu_ps(c))) : _mm512_mul_ps(va, acc));
}

void ukernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta) {
#define LWM_Z2(i) __m512 c##i##0 = _mm512_setzero_ps(), c##i##1 = _mm512_setzero_ps();
  LWM_Z2(0) LWM_Z2(1) LWM_Z2(2) LWM_Z2(3) LWM_Z2(4) LWM_Z2(5) LWM_Z2(6)
  LWM_Z2(7) LWM_Z2(8) LWM_Z2(9) LWM_Z2(a) LWM_Z2(b) LWM_Z2(c) LWM_Z2(d)
#undef LWM_Z2
  for (int i = 0; i < kMr; i++) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + kNr - 1), _MM_HINT_T0);
  }
#define LWM_ROW(i, n)                                  \
  {                                                    \
    const __m512 ai = _mm512_set1_ps(a[i]);            \
    c##n##0 = _mm512_fmadd_ps(ai, b0, c##n##0);        \
    c##n##1 = _mm512_fmadd_ps(ai, b1, c##n##1);        \
  }
#pragma GCC unroll 2
  for (int64_t p = 0; p < kc; p++) {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
    _mm_prefetch(reinterpret_cast<const char*>(a + 4 * kMr), _MM_HINT_T0);
    LWM_ROW(0, 0) LWM_ROW(1, 1) LWM_ROW(2, 2) LWM_ROW(3, 3) LWM_ROW(4, 4) LWM_ROW(5, 5) LWM_ROW(6, 6)
    LWM_ROW(7, 7) LWM_ROW(8, 8) LWM_ROW(9, 9) LWM_ROW(10, a) LWM_ROW(11, b) LWM_ROW(12, c) LWM_ROW(13, d)
    a += kMr;
    b += kNr;
  }
#undef LWM_ROW
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const bool rc = beta != 0.0f;
#define LWM_ST(i, n)                                          \
  store_tile(c + (i) * ldc, c##n##0, va, vb, rc);             \
  store_tile(c + (i) * ldc + 16, c##n##1, va, vb, rc);
  LWM_ST(0, 0) LWM_ST(1, 1) LWM_ST(2, 2) LWM_ST(3, 3) LWM_ST(4, 4) LWM_ST(5, 5) LWM_ST(6, 6)
  LWM_ST(7, 7) LWM_ST(8, 8) LWM_ST(9, 9) LWM_ST(10, a) LWM_ST(11, b) LWM_ST(12, c) LWM_ST(13, d)
#undef LWM_ST
}

#include "transpose8.inc"

void pack_a(bool trans, const float* a, int64_t lda, int64_t mc, int64_t kc, float* out) {
  for (int64_t i0 = 0; i0 < mc; i0 += kMr, out += kMr * kc) {
    const int64_t mr = imin(kMr, mc - i0);
    if (trans) {
      const __mmask16 m = tail_mask(mr);
      for (int64_t k = 0; k < kc; k++) {
        // 16-lane masked store: lanes 14 and 15 stay outside this panel row.
        _mm512_mask_storeu_ps(out + k * kMr, tail_mask(kMr), _mm512_maskz_loadu_ps(m, a + k * lda + i0));
      }
    } else if (mr == kMr) {
      // 8 k at a time: rows 0-7 and 8-13 (plus two zero rows) transposed in registers.
      const float* r[kMr];
      for (int i = 0; i < kMr; i++) r[i] = a + (i0 + i) * lda;
      int64_t k = 0;
      for (; k + 8 <= kc; k += 8) {
        __m256 v0 = _mm256_loadu_ps(r[0] + k), v1 = _mm256_loadu_ps(r[1] + k), v2 = _mm256_loadu_ps(r[2] + k);
        __m256 v3 = _mm256_loadu_ps(r[3] + k), v4 = _mm256_loadu_ps(r[4] + k), v5 = _mm256_loadu_ps(r[5] + k);
        __m256 v6 = _mm256_loadu_ps(r[6] + k), v7 = _mm256_loadu_ps(r[7] + k);
        __m256 u0 = _mm256_loadu_ps(r[8] + k), u1 = _mm256_loadu_ps(r[9] + k), u2 = _mm256_loadu_ps(r[10] + k);
        __m256 u3 = _mm256_loadu_ps(r[11] + k), u4 = _mm256_loadu_ps(r[12] + k), u5 = _mm256_loadu_ps(r[13] + k);
        __m256 u6 = _mm256_setzero_ps(), u7 = _mm256_setzero_ps();
        transpose8(v0, v1, v2, v3, v4, v5, v6, v7);
        transpose8(u0, u1, u2, u3, u4, u5, u6, u7);
        float* d = out + k * kMr;
        const __mmask8 six = 0x3F;
        _mm256_storeu_ps(d, v0);
        _mm256_mask_storeu_ps(d + 8, six, u0);
        _mm256_storeu_ps(d + kMr, v1);
        _mm256_mask_storeu_ps(d + kMr + 8, six, u1);
        _mm256_storeu_ps(d + 2 * kMr, v2);
        _mm256_mask_storeu_ps(d + 2 * kMr + 8, six, u2);
        _mm256_storeu_ps(d + 3 * kMr, v3);
        _mm256_mask_storeu_ps(d + 3 * kMr + 8, six, u3);
        _mm256_storeu_ps(d + 4 * kMr, v4);
        _mm256_mask_storeu_ps(d + 4 * kMr + 8, six, u4);
        _mm256_storeu_ps(d + 5 * kMr, v5);
        _mm256_mask_storeu_ps(d + 5 * kMr + 8, six, u5);
        _mm256_storeu_ps(d + 6 * kMr, v6);
        _mm256_mask_storeu_ps(d + 6 * kMr + 8, six, u6);
        _mm256_storeu_ps(d + 7 * kMr, v7);
        _mm256_mask_storeu_ps(d + 7 * kMr + 8, six, u7);
      }
      for (; k < kc; k++) {
        for (int i = 0; i < kMr; i++) out[k * kMr + i] = r[i][k];
      }
    } else {
      for (int64_t k = 0; k < kc; k++) {
        for (int64_t i = 0; i < kMr; i++) out[k * kMr + i] = i < mr ? a[(i0 + i) * lda + k] : 0.0f;
      }
    }
  }
}

// 8 rows of B^T (the [N, K] weight layout) into 8 columns of a kNr-wide panel.
void pack_bt_8cols(const float* src, int64_t ldb, int64_t kc, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= kc; k += 8) {
    // Eight short runs at once defeat the hardware prefetcher: fetch each row 4 lines ahead.
    if ((k & 15) == 0) {
      for (int r = 0; r < 8; r++) _mm_prefetch(reinterpret_cast<const char*>(src + r * ldb + k + 64), _MM_HINT_T0);
    }
    __m256 r0 = _mm256_loadu_ps(src + k), r1 = _mm256_loadu_ps(src + ldb + k);
    __m256 r2 = _mm256_loadu_ps(src + 2 * ldb + k), r3 = _mm256_loadu_ps(src + 3 * ldb + k);
    __m256 r4 = _mm256_loadu_ps(src + 4 * ldb + k), r5 = _mm256_loadu_ps(src + 5 * ldb + k);
    __m256 r6 = _mm256_loadu_ps(src + 6 * ldb + k), r7 = _mm256_loadu_ps(src + 7 * ldb + k);
    transpose8(r0, r1, r2, r3, r4, r5, r6, r7);
    float* d = dst + k * kNr;
    _mm256_store_ps(d, r0);
    _mm256_store_ps(d + kNr, r1);
    _mm256_store_ps(d + 2 * kNr, r2);
    _mm256_store_ps(d + 3 * kNr, r3);
    _mm256_store_ps(d + 4 * kNr, r4);
    _mm256_store_ps(d + 5 * kNr, r5);
    _mm256_store_ps(d + 6 * kNr, r6);
    _mm256_store_ps(d + 7 * kNr, r7);
  }
  for (; k < kc; k++) {
    for (int c = 0; c < 8; c++) dst[k * kNr + c] = src[c * ldb + k];
  }
}

void pack_b(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t nc, float* out) {
  for (int64_t j0 = 0; j0 < nc; j0 += kNr, out += kNr * kc) {
    const int64_t nr = imin(kNr, nc - j0);
    if (!trans) {
      // Masked loads zero the columns past nc.
      const __mmask16 m0 = tail_mask(imin(16, nr)), m1 = tail_mask(nr > 16 ? nr - 16 : 0);
      for (int64_t k = 0; k < kc; k++) {
        const float* src = b + k * ldb + j0;
        _mm512_store_ps(out + k * kNr, _mm512_maskz_loadu_ps(m0, src));
        _mm512_store_ps(out + k * kNr + 16, _mm512_maskz_loadu_ps(m1, src + 16));
      }
    } else if (nr == kNr) {
      for (int g = 0; g < kNr; g += 8) pack_bt_8cols(b + (j0 + g) * ldb, ldb, kc, out + g);
    } else {
      for (int64_t k = 0; k < kc; k++) {
        float* dst = out + k * kNr;
        int64_t c = 0;
        for (; c < nr; c++) dst[c] = b[(j0 + c) * ldb + k];
        for (; c < kNr; c++) dst[c] = 0.0f;
      }
    }
  }
}

inline float finish(float s, float* y, float alpha, float beta) { return beta != 0.0f ? alpha * s + beta * *y : alpha * s; }

inline float hsum16(__m512 v) {
  const __m256 h = _mm512_castps512_ps256(_mm512_add_ps(v, _mm512_shuffle_f32x4(v, v, 0x4E)));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
}

void gemv_dot(int64_t k, int64_t n, const float* x, const float* w, int64_t ldw, float* y, float alpha, float beta) {
  const __mmask16 mask = tail_mask(k & 15);
  const int64_t kv = k & ~int64_t(15);
  int64_t j = 0;
  // Four rows share each load of x; two accumulators per row hide the FMA latency.
  for (; j + 4 <= n; j += 4) {
    const float* w0 = w + j * ldw;
    const float* w1 = w0 + ldw;
    const float* w2 = w1 + ldw;
    const float* w3 = w2 + ldw;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
    int64_t p = 0;
    for (; p + 32 <= k; p += 32) {
      const __m512 x0 = _mm512_loadu_ps(x + p), x1 = _mm512_loadu_ps(x + p + 16);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + p), x0, a0);
      b0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + p + 16), x1, b0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + p), x0, a1);
      b1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + p + 16), x1, b1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + p), x0, a2);
      b2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + p + 16), x1, b2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + p), x0, a3);
      b3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + p + 16), x1, b3);
    }
    for (; p < kv; p += 16) {
      const __m512 x0 = _mm512_loadu_ps(x + p);
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + p), x0, a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + p), x0, a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + p), x0, a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + p), x0, a3);
    }
    if (p < k) {
      const __m512 x0 = _mm512_maskz_loadu_ps(mask, x + p);
      a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, w0 + p), x0, a0);
      a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, w1 + p), x0, a1);
      a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, w2 + p), x0, a2);
      a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, w3 + p), x0, a3);
    }
    y[j] = finish(hsum16(_mm512_add_ps(a0, b0)), y + j, alpha, beta);
    y[j + 1] = finish(hsum16(_mm512_add_ps(a1, b1)), y + j + 1, alpha, beta);
    y[j + 2] = finish(hsum16(_mm512_add_ps(a2, b2)), y + j + 2, alpha, beta);
    y[j + 3] = finish(hsum16(_mm512_add_ps(a3, b3)), y + j + 3, alpha, beta);
  }
  for (; j < n; j++) {
    const float* w0 = w + j * ldw;
    __m512 a0 = _mm512_setzero_ps();
    int64_t p = 0;
    for (; p < kv; p += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + p), _mm512_loadu_ps(x + p), a0);
    if (p < k) a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, w0 + p), _mm512_maskz_loadu_ps(mask, x + p), a0);
    y[j] = finish(hsum16(a0), y + j, alpha, beta);
  }
}

void gemv_axpy(int64_t k, int64_t n, const float* x, const float* w, int64_t ldw, float* y, float alpha, float beta) {
  const __mmask16 mask = tail_mask(n & 15);
  const int64_t nv = n & ~int64_t(15);
  if (beta != 1.0f) {
    const __m512 vb = _mm512_set1_ps(beta);
    for (int64_t j = 0; j < nv; j += 16) {
      _mm512_storeu_ps(y + j, beta == 0.0f ? _mm512_setzero_ps() : _mm512_mul_ps(vb, _mm512_loadu_ps(y + j)));
    }
    for (int64_t j = nv; j < n; j++) y[j] = beta == 0.0f ? 0.0f : beta * y[j];
  }
  int64_t p = 0;
  for (; p + 4 <= k; p += 4) {
    const float* w0 = w + p * ldw;
    const float* w1 = w0 + ldw;
    const float* w2 = w1 + ldw;
    const float* w3 = w2 + ldw;
    const __m512 x0 = _mm512_set1_ps(alpha * x[p]), x1 = _mm512_set1_ps(alpha * x[p + 1]);
    const __m512 x2 = _mm512_set1_ps(alpha * x[p + 2]), x3 = _mm512_set1_ps(alpha * x[p + 3]);
    int64_t j = 0;
    for (; j < nv; j += 16) {
      __m512 acc = _mm512_loadu_ps(y + j);
      acc = _mm512_fmadd_ps(x0, _mm512_loadu_ps(w0 + j), acc);
      acc = _mm512_fmadd_ps(x1, _mm512_loadu_ps(w1 + j), acc);
      acc = _mm512_fmadd_ps(x2, _mm512_loadu_ps(w2 + j), acc);
      acc = _mm512_fmadd_ps(x3, _mm512_loadu_ps(w3 + j), acc);
      _mm512_storeu_ps(y + j, acc);
    }
    if (j < n) {
      __m512 acc = _mm512_maskz_loadu_ps(mask, y + j);
      acc = _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(mask, w0 + j), acc);
      acc = _mm512_fmadd_ps(x1, _mm512_maskz_loadu_ps(mask, w1 + j), acc);
      acc = _mm512_fmadd_ps(x2, _mm512_maskz_loadu_ps(mask, w2 + j), acc);
      acc = _mm512_fmadd_ps(x3, _mm512_maskz_loadu_ps(mask, w3 + j), acc);
      _mm512_mask_storeu_ps(y + j, mask, acc);
    }
  }
  for (; p < k; p++) {
    const float* w0 = w + p * ldw;
    const __m512 x0 = _mm512_set1_ps(alpha * x[p]);
    int64_t j = 0;
    for (; j < nv; j += 16) _mm512_storeu_ps(y + j, _mm512_fmadd_ps(x0, _mm512_loadu_ps(w0 + j), _mm512_loadu_ps(y + j)));
    if (j < n) {
      _mm512_mask_storeu_ps(y + j, mask,
                            _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(mask, w0 + j), _mm512_maskz_loadu_ps(mask, y + j)));
    }
  }
}

}  // namespace

// Constant-initialised (addresses only), so no AVX-512 code runs unless the dispatcher picks it.
extern const Kernels kAvx512Kernels = {kMr, kNr, 112, 512, 4096, ukernel, pack_a, pack_b, gemv_dot, gemv_axpy};

}  // namespace gemm_detail
}  // namespace lwm
