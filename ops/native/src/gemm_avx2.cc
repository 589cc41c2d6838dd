// AVX2 + FMA building blocks of the GEMM: 6x16 micro-kernel (12 ymm accumulators), packing,
// and the matrix-vector kernels. Only plain functions below the pragma: an inline std template
// instantiated here could be merged by the linker into generic code.
#include <immintrin.h>

#include <cstdint>

#include "gemm.h"

#pragma GCC target("avx2,fma")

namespace lwm {
namespace gemm_detail {
namespace {

constexpr int kMr = 6, kNr = 16;

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Lanes [0, n) set, for the tails of the vector loops (n in 0..8).
inline __m256i tail_mask(int64_t n) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lane);
}

inline void store_tile(float* c, __m256 acc, __m256 va, __m256 vb, bool read_c) {
  _mm256_storeu_ps(c, read_c ? _mm256_fmadd_ps(va, acc, _mm256_mul_ps(vb, _mm256_loadu_ps(c))) : _mm256_mul_ps(va, acc));
}

void ukernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int i = 0; i < kMr; i++) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + kNr - 1), _MM_HINT_T0);
  }
#define LWM_ROW(i, r0, r1)                                 \
  {                                                        \
    const __m256 ai = _mm256_broadcast_ss(a + (i));        \
    r0 = _mm256_fmadd_ps(ai, b0, r0);                      \
    r1 = _mm256_fmadd_ps(ai, b1, r1);                      \
  }
#pragma GCC unroll 4
  for (int64_t p = 0; p < kc; p++) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    _mm_prefetch(reinterpret_cast<const char*>(a + 8 * kMr), _MM_HINT_T0);
    LWM_ROW(0, c00, c01)
    LWM_ROW(1, c10, c11)
    LWM_ROW(2, c20, c21)
    LWM_ROW(3, c30, c31)
    LWM_ROW(4, c40, c41)
    LWM_ROW(5, c50, c51)
    a += kMr;
    b += kNr;
  }
#undef LWM_ROW
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  const bool rc = beta != 0.0f;
  store_tile(c, c00, va, vb, rc);
  store_tile(c + 8, c01, va, vb, rc);
  store_tile(c + ldc, c10, va, vb, rc);
  store_tile(c + ldc + 8, c11, va, vb, rc);
  store_tile(c + 2 * ldc, c20, va, vb, rc);
  store_tile(c + 2 * ldc + 8, c21, va, vb, rc);
  store_tile(c + 3 * ldc, c30, va, vb, rc);
  store_tile(c + 3 * ldc + 8, c31, va, vb, rc);
  store_tile(c + 4 * ldc, c40, va, vb, rc);
  store_tile(c + 4 * ldc + 8, c41, va, vb, rc);
  store_tile(c + 5 * ldc, c50, va, vb, rc);
  store_tile(c + 5 * ldc + 8, c51, va, vb, rc);
}

#include "transpose8.inc"

// Exactly 6 floats (no over-read past a row that may end the array).
inline void copy6(const float* src, float* dst) {
  _mm_storeu_ps(dst, _mm_loadu_ps(src));
  _mm_storel_pi(reinterpret_cast<__m64*>(dst + 4), _mm_loadl_pi(_mm_setzero_ps(), reinterpret_cast<const __m64*>(src + 4)));
}

void pack_a(bool trans, const float* a, int64_t lda, int64_t mc, int64_t kc, float* out) {
  for (int64_t i0 = 0; i0 < mc; i0 += kMr, out += kMr * kc) {
    const int64_t mr = imin(kMr, mc - i0);
    if (trans && mr == kMr) {
      for (int64_t k = 0; k < kc; k++) copy6(a + k * lda + i0, out + k * kMr);
    } else if (mr == kMr) {
      // 8 k at a time: six rows (two zero rows) transposed in registers; each column goes out as
      // 6 floats, the 8-wide stores overlapping the next slot, which the next store rewrites.
      const float* r[kMr];
      for (int i = 0; i < kMr; i++) r[i] = a + (i0 + i) * lda;
      int64_t k = 0;
      for (; k + 8 <= kc; k += 8) {
        __m256 v0 = _mm256_loadu_ps(r[0] + k), v1 = _mm256_loadu_ps(r[1] + k), v2 = _mm256_loadu_ps(r[2] + k);
        __m256 v3 = _mm256_loadu_ps(r[3] + k), v4 = _mm256_loadu_ps(r[4] + k), v5 = _mm256_loadu_ps(r[5] + k);
        __m256 v6 = _mm256_setzero_ps(), v7 = _mm256_setzero_ps();
        transpose8(v0, v1, v2, v3, v4, v5, v6, v7);
        float* d = out + k * kMr;
        _mm256_storeu_ps(d, v0);
        _mm256_storeu_ps(d + 6, v1);
        _mm256_storeu_ps(d + 12, v2);
        _mm256_storeu_ps(d + 18, v3);
        _mm256_storeu_ps(d + 24, v4);
        _mm256_storeu_ps(d + 30, v5);
        _mm256_storeu_ps(d + 36, v6);
        _mm_storeu_ps(d + 42, _mm256_castps256_ps128(v7));
        _mm_storel_pi(reinterpret_cast<__m64*>(d + 46), _mm256_extractf128_ps(v7, 1));
      }
      for (; k < kc; k++) {
        for (int i = 0; i < kMr; i++) out[k * kMr + i] = r[i][k];
      }
    } else {
      for (int64_t k = 0; k < kc; k++) {
        for (int64_t i = 0; i < kMr; i++) out[k * kMr + i] = i < mr ? (trans ? a[k * lda + i0 + i] : a[(i0 + i) * lda + k]) : 0.0f;
      }
    }
  }
}

// 8 rows of B^T (src rows j, stride ldb, k contiguous) into 8 columns of a k-major panel of
// width kNr: B stored [N, K] is the model's weight layout, so this is the hot packing path.
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
    if (nr == kNr && !trans) {
      for (int64_t k = 0; k < kc; k++) {
        const float* src = b + k * ldb + j0;
        _mm256_store_ps(out + k * kNr, _mm256_loadu_ps(src));
        _mm256_store_ps(out + k * kNr + 8, _mm256_loadu_ps(src + 8));
      }
    } else if (nr == kNr) {
      pack_bt_8cols(b + j0 * ldb, ldb, kc, out);
      pack_bt_8cols(b + (j0 + 8) * ldb, ldb, kc, out + 8);
    } else {
      for (int64_t k = 0; k < kc; k++) {
        float* dst = out + k * kNr;
        int64_t c = 0;
        for (; c < nr; c++) dst[c] = trans ? b[(j0 + c) * ldb + k] : b[k * ldb + j0 + c];
        for (; c < kNr; c++) dst[c] = 0.0f;
      }
    }
  }
}

inline float finish(float s, float* y, float alpha, float beta) { return beta != 0.0f ? alpha * s + beta * *y : alpha * s; }

// Sum of each of four vectors, as lanes 0..3.
inline __m128 hsum4(__m256 s0, __m256 s1, __m256 s2, __m256 s3) {
  const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(s0, s1), _mm256_hadd_ps(s2, s3));
  return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

void gemv_dot(int64_t k, int64_t n, const float* x, const float* w, int64_t ldw, float* y, float alpha, float beta) {
  const __m256i mask = tail_mask(k & 7);
  int64_t j = 0;
  // Four rows share each load of x; two accumulators per row hide the FMA latency.
  for (; j + 4 <= n; j += 4) {
    const float* w0 = w + j * ldw;
    const float* w1 = w0 + ldw;
    const float* w2 = w1 + ldw;
    const float* w3 = w2 + ldw;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + 16 <= k; p += 16) {
      const __m256 x0 = _mm256_loadu_ps(x + p), x1 = _mm256_loadu_ps(x + p + 8);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + p), x0, a0);
      b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + p + 8), x1, b0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + p), x0, a1);
      b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + p + 8), x1, b1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + p), x0, a2);
      b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + p + 8), x1, b2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + p), x0, a3);
      b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + p + 8), x1, b3);
    }
    for (; p + 8 <= k; p += 8) {
      const __m256 x0 = _mm256_loadu_ps(x + p);
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + p), x0, a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + p), x0, a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + p), x0, a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + p), x0, a3);
    }
    if (p < k) {
      const __m256 x0 = _mm256_maskload_ps(x + p, mask);
      a0 = _mm256_fmadd_ps(_mm256_maskload_ps(w0 + p, mask), x0, a0);
      a1 = _mm256_fmadd_ps(_mm256_maskload_ps(w1 + p, mask), x0, a1);
      a2 = _mm256_fmadd_ps(_mm256_maskload_ps(w2 + p, mask), x0, a2);
      a3 = _mm256_fmadd_ps(_mm256_maskload_ps(w3 + p, mask), x0, a3);
    }
    float s[4];
    _mm_storeu_ps(s, hsum4(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1), _mm256_add_ps(a2, b2), _mm256_add_ps(a3, b3)));
    for (int r = 0; r < 4; r++) y[j + r] = finish(s[r], y + j + r, alpha, beta);
  }
  for (; j < n; j++) {
    const float* w0 = w + j * ldw;
    __m256 a0 = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + 8 <= k; p += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + p), _mm256_loadu_ps(x + p), a0);
    if (p < k) a0 = _mm256_fmadd_ps(_mm256_maskload_ps(w0 + p, mask), _mm256_maskload_ps(x + p, mask), a0);
    const __m256 z = _mm256_setzero_ps();
    y[j] = finish(_mm_cvtss_f32(hsum4(a0, z, z, z)), y + j, alpha, beta);
  }
}

void gemv_axpy(int64_t k, int64_t n, const float* x, const float* w, int64_t ldw, float* y, float alpha, float beta) {
  const __m256i mask = tail_mask(n & 7);
  const int64_t nv = n & ~int64_t(7);
  if (beta != 1.0f) {
    const __m256 vb = _mm256_set1_ps(beta);
    for (int64_t j = 0; j < nv; j += 8) {
      _mm256_storeu_ps(y + j, beta == 0.0f ? _mm256_setzero_ps() : _mm256_mul_ps(vb, _mm256_loadu_ps(y + j)));
    }
    for (int64_t j = nv; j < n; j++) y[j] = beta == 0.0f ? 0.0f : beta * y[j];
  }
  int64_t p = 0;
  // Four rows of W per pass over y, so y (kept in L1 by the caller's blocking) is loaded and
  // stored once per four FMAs.
  for (; p + 4 <= k; p += 4) {
    const float* w0 = w + p * ldw;
    const float* w1 = w0 + ldw;
    const float* w2 = w1 + ldw;
    const float* w3 = w2 + ldw;
    const __m256 x0 = _mm256_set1_ps(alpha * x[p]), x1 = _mm256_set1_ps(alpha * x[p + 1]);
    const __m256 x2 = _mm256_set1_ps(alpha * x[p + 2]), x3 = _mm256_set1_ps(alpha * x[p + 3]);
    int64_t j = 0;
    for (; j < nv; j += 8) {
      __m256 acc = _mm256_loadu_ps(y + j);
      acc = _mm256_fmadd_ps(x0, _mm256_loadu_ps(w0 + j), acc);
      acc = _mm256_fmadd_ps(x1, _mm256_loadu_ps(w1 + j), acc);
      acc = _mm256_fmadd_ps(x2, _mm256_loadu_ps(w2 + j), acc);
      acc = _mm256_fmadd_ps(x3, _mm256_loadu_ps(w3 + j), acc);
      _mm256_storeu_ps(y + j, acc);
    }
    if (j < n) {
      __m256 acc = _mm256_maskload_ps(y + j, mask);
      acc = _mm256_fmadd_ps(x0, _mm256_maskload_ps(w0 + j, mask), acc);
      acc = _mm256_fmadd_ps(x1, _mm256_maskload_ps(w1 + j, mask), acc);
      acc = _mm256_fmadd_ps(x2, _mm256_maskload_ps(w2 + j, mask), acc);
      acc = _mm256_fmadd_ps(x3, _mm256_maskload_ps(w3 + j, mask), acc);
      _mm256_maskstore_ps(y + j, mask, acc);
    }
  }
  for (; p < k; p++) {
    const float* w0 = w + p * ldw;
    const __m256 x0 = _mm256_set1_ps(alpha * x[p]);
    int64_t j = 0;
    for (; j < nv; j += 8) _mm256_storeu_ps(y + j, _mm256_fmadd_ps(x0, _mm256_loadu_ps(w0 + j), _mm256_loadu_ps(y + j)));
    if (j < n) {
      _mm256_maskstore_ps(y + j, mask, _mm256_fmadd_ps(x0, _mm256_maskload_ps(w0 + j, mask), _mm256_maskload_ps(y + j, mask)));
    }
  }
}

}  // namespace

// Constant-initialised (addresses only), so no AVX2 code runs unless the dispatcher picks it.
extern const Kernels kAvx2Kernels = {kMr, kNr, 96, 384, 4080, ukernel, pack_a, pack_b, gemv_dot, gemv_axpy};

}  // namespace gemm_detail
}  // namespace lwm
