// AVX2 + FMA kernels of the fused attention: 6x16 register-blocked products on packed blocks,
// a vectorised exp2 and the decode step on K/V rows in place. Everything below the pragma is
// internal (anonymous namespace), so no AVX2 copy of a shared inline function can be picked by
// the linker for the scalar path.
#include <immintrin.h>

#include <cstdint>

#include "attention.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace lwm {
namespace attn {
namespace {

constexpr int kVec = 8;
constexpr int kPanel = 16;  // two vectors: the width of packed panels and column slices
constexpr int kRows = 6;    // 6 rows x 2 vectors = 12 accumulators of the 16 ymm registers

// 2^x as 2^n * 2^f with n = round(x), |f| <= 0.5 and the Cephes exp2f polynomial (within 1 ulp
// of exp2 on [-126, 20], measured). Exactly 0 near -127 and below, -inf included: the clamp gives
// n = -127, whose exponent bits are 0, so masked scores contribute nothing.
inline __m256 exp2v(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-127.f), x);  // operand order lets NaN through
  x = _mm256_min_ps(_mm256_set1_ps(128.f), x);
  const __m256 n = _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(x, n);
  __m256 p = _mm256_set1_ps(1.535336188319500e-4f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339887440266574e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618437357674640e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550332471162809e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264791363012e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931472028550421e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// R rows of a times one packed panel (16 columns): c = a * panel.
template <int R>
inline void nt_tile(int dp, const float* a, int lda, const float* bp, float* c, int ldc) {
  __m256 c0[R], c1[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) c0[r] = c1[r] = _mm256_setzero_ps();
  for (int d = 0; d < dp; d++) {
    const __m256 b0 = _mm256_load_ps(bp + d * kPanel), b1 = _mm256_load_ps(bp + d * kPanel + kVec);
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const __m256 x = _mm256_broadcast_ss(a + static_cast<size_t>(r) * lda + d);
      c0[r] = _mm256_fmadd_ps(x, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(x, b1, c1[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    _mm256_storeu_ps(c + static_cast<size_t>(r) * ldc, c0[r]);
    _mm256_storeu_ps(c + static_cast<size_t>(r) * ldc + kVec, c1[r]);
  }
}

// The leftover rows (< kRows) of a product, with a tile of exactly that height.
template <int R>
inline void nt_rest(int rows, int dp, const float* a, int lda, const float* bp, float* c, int ldc) {
  if (rows == R) nt_tile<R>(dp, a, lda, bp, c, ldc);
  else if constexpr (R > 1) nt_rest<R - 1>(rows, dp, a, lda, bp, c, ldc);
}

void gemm_nt(int m, int npanels, int dp, const float* a, int lda, const float* bp, float* c, int ldc) {
  // Panel outer: its dp x 16 floats stay in L1 while every row tile streams past.
  for (int p = 0; p < npanels; p++) {
    const float* panel = bp + static_cast<size_t>(p) * dp * kPanel;
    float* cp = c + p * kPanel;
    int r = 0;
    for (; r + kRows <= m; r += kRows) nt_tile<kRows>(dp, a + static_cast<size_t>(r) * lda, lda, panel, cp + static_cast<size_t>(r) * ldc, ldc);
    const float* ar = a + static_cast<size_t>(r) * lda;
    float* cr = cp + static_cast<size_t>(r) * ldc;
    nt_rest<kRows - 1>(m - r, dp, ar, lda, panel, cr, ldc);
  }
}

// c[R][NV vectors] += sum_k a(r, k) * b[k][.], a(r, k) = a[r*ais + k*aks] broadcast.
template <int R, int NV>
inline void nn_tile(int kdim, const float* a, int64_t ais, int64_t aks, const float* b, int ldb, float* c, int ldc) {
  __m256 acc[R][NV];
  const float* ar[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
    ar[r] = a + r * ais;
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) acc[r][v] = _mm256_loadu_ps(c + static_cast<size_t>(r) * ldc + v * kVec);
  }
  for (int k = 0; k < kdim; k++) {
    __m256 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) bv[v] = _mm256_loadu_ps(b + static_cast<size_t>(k) * ldb + v * kVec);
    const int64_t ko = k * aks;
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const __m256 x = _mm256_broadcast_ss(ar[r] + ko);
#pragma GCC unroll 2
      for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(x, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; v++) _mm256_storeu_ps(c + static_cast<size_t>(r) * ldc + v * kVec, acc[r][v]);
  }
}

template <int R, int NV>
inline void nn_rest(int rows, int kdim, const float* a, int64_t ais, int64_t aks, const float* b, int ldb, float* c, int ldc) {
  if (rows == R) nn_tile<R, NV>(kdim, a, ais, aks, b, ldb, c, ldc);
  else if constexpr (R > 1) nn_rest<R - 1, NV>(rows, kdim, a, ais, aks, b, ldb, c, ldc);
}

template <int NV>
void nn_columns(int m, int kdim, const float* a, int64_t ais, int64_t aks, const float* b, int ldb, float* c, int ldc) {
  int r = 0;
  for (; r + kRows <= m; r += kRows) nn_tile<kRows, NV>(kdim, a + r * ais, ais, aks, b, ldb, c + static_cast<size_t>(r) * ldc, ldc);
  const float* ar = a + r * ais;
  float* cr = c + static_cast<size_t>(r) * ldc;
  nn_rest<kRows - 1, NV>(m - r, kdim, ar, ais, aks, b, ldb, cr, ldc);
}

// b in column slices: full ones of kPanel columns, then possibly one of kVec (see attention.h).
void gemm_nn(int m, int kdim, int dp, const float* a, int64_t ais, int64_t aks, const float* b, float* c, int ldc) {
  // Slice outer: its kdim x kPanel floats stay in L1 across the row tiles.
  int x = 0;
  for (; x + kPanel <= dp; x += kPanel) nn_columns<2>(m, kdim, a, ais, aks, b + static_cast<size_t>(x) * kdim, kPanel, c + x, ldc);
  if (x < dp) nn_columns<1>(m, kdim, a, ais, aks, b + static_cast<size_t>(x) * kdim, kVec, c + x, ldc);
}

void gemm_dot(int n, int m, int dp, const float* a, int lda, const float* b, int ldb, float* c, int ldc) {
  for (int j = 0; j < n; j++) {
    const float* aj = a + static_cast<size_t>(j) * lda;
    for (int r = 0; r < m; r++) {
      const float* br = b + static_cast<size_t>(r) * ldb;
      __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
      int d = 0;
      for (; d + 2 * kVec <= dp; d += 2 * kVec) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(aj + d), _mm256_loadu_ps(br + d), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(aj + d + kVec), _mm256_loadu_ps(br + d + kVec), s1);
      }
      if (d < dp) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(aj + d), _mm256_loadu_ps(br + d), s0);
      c[static_cast<size_t>(j) * ldc + r] = hsum(_mm256_add_ps(s0, s1));
    }
  }
}

void softmax_step(const SoftmaxStep& a) {
  const __m256 cv = _mm256_set1_ps(a.c), neg_inf = _mm256_set1_ps(-__builtin_inff()), zero = _mm256_setzero_ps();
  for (int r = 0; r < a.ncols; r += kVec) {
    __m256 block_max = neg_inf;
    for (int j = 0; j < a.nk; j++) {
      float* p = a.s + static_cast<size_t>(j) * a.ld + r;
      __m256 x = _mm256_mul_ps(_mm256_loadu_ps(p), cv);
      if (a.bias) x = _mm256_add_ps(x, _mm256_loadu_ps(a.bias + static_cast<size_t>(j) * a.ld + r));
      _mm256_storeu_ps(p, x);
      block_max = _mm256_max_ps(block_max, x);
    }
    const __m256 old_max = _mm256_loadu_ps(a.col_max + r), new_max = _mm256_max_ps(old_max, block_max);
    // Columns with nothing visible yet shift by 0: exp2(-inf) = 0 keeps them empty, without NaN.
    const __m256 shift = _mm256_blendv_ps(new_max, zero, _mm256_cmp_ps(new_max, neg_inf, _CMP_EQ_OQ));
    __m256 sum = zero;
    for (int j = 0; j < a.nk; j++) {
      float* p = a.s + static_cast<size_t>(j) * a.ld + r;
      const __m256 e = exp2v(_mm256_sub_ps(_mm256_loadu_ps(p), shift));
      _mm256_storeu_ps(p, e);
      sum = _mm256_add_ps(sum, e);
    }
    const __m256 alpha = exp2v(_mm256_sub_ps(old_max, shift));
    _mm256_storeu_ps(a.alpha + r, alpha);
    _mm256_storeu_ps(a.col_sum + r, _mm256_fmadd_ps(_mm256_loadu_ps(a.col_sum + r), alpha, sum));
    _mm256_storeu_ps(a.col_max + r, new_max);
  }
  for (int r = 0; r < a.m; r++) {
    if (a.alpha[r] == 1.f) continue;
    float* o = a.o + static_cast<size_t>(r) * a.ldo;
    const __m256 al = _mm256_set1_ps(a.alpha[r]);
    for (int x = 0; x < a.dp; x += kVec) _mm256_storeu_ps(o + x, _mm256_mul_ps(_mm256_loadu_ps(o + x), al));
  }
}

void grad_step(const GradStep& a) {
  const __m256 cv = _mm256_set1_ps(a.c), sc = _mm256_set1_ps(a.scale);
  for (int r = 0; r < a.m; r++) {
    float* s = a.s + static_cast<size_t>(r) * a.ld;
    float* dp = a.dp + static_cast<size_t>(r) * a.ld;
    const float* bias = a.bias ? a.bias + static_cast<size_t>(r % a.nq) * a.ld : nullptr;
    const __m256 l = _mm256_set1_ps(a.lse2[r]), d = _mm256_set1_ps(a.drow[r]);
    for (int j = 0; j < a.ncols; j += kVec) {
      __m256 x = _mm256_fmsub_ps(_mm256_loadu_ps(s + j), cv, l);
      if (bias) x = _mm256_add_ps(x, _mm256_loadu_ps(bias + j));
      const __m256 p = exp2v(x);
      _mm256_storeu_ps(s + j, p);
      _mm256_storeu_ps(dp + j, _mm256_mul_ps(_mm256_mul_ps(p, _mm256_sub_ps(_mm256_loadu_ps(dp + j), d)), sc));
    }
  }
}

// ---- Decode path (DecodeStep): K and V rows in place, in memory order. ----

// The 8 horizontal sums of a[0..7], in order, as one vector.
inline __m256 hsum8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

// Scores of one key row for NJ consecutive columns (lanes past NJ are 0): an accumulator per
// column, so the dependency chains interleave, and one transposing reduction per 8 scores.
template <int NJ>
inline __m256 row_dots(const float* const* kp, const float* q, int dp) {
  __m256 acc[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
  for (int d = 0; d < dp; d += kVec) {
#pragma GCC unroll 8
    for (int i = 0; i < NJ; i++) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(kp[i] + d), _mm256_loadu_ps(q + static_cast<size_t>(i) * dp + d), acc[i]);
  }
  return hsum8(acc);
}

inline __m256 row_dots_n(int n, const float* const* kp, const float* q, int dp) {
  switch (n) {
    case 1: return row_dots<1>(kp, q, dp);
    case 2: return row_dots<2>(kp, q, dp);
    case 3: return row_dots<3>(kp, q, dp);
    case 4: return row_dots<4>(kp, q, dp);
    case 5: return row_dots<5>(kp, q, dp);
    case 6: return row_dots<6>(kp, q, dp);
    case 7: return row_dots<7>(kp, q, dp);
    default: return row_dots<8>(kp, q, dp);
  }
}

// o[c] += sum over NK keys of p[j][c] * v[j] for every column of the step: a few key rows at a
// time, so each output row is loaded and stored once per NK keys, in two dependency chains. The
// step's fields come as plain values: through the reference, every store to o would force
// reloading them.
template <int NK>
inline void pv_rows(int heads, int m, int dp, const float* p, int lds, const float* v, int64_t ld, int hs, float* o) {
  for (int h = 0; h < heads; h++) {
    const float* vh = v + static_cast<int64_t>(h) * hs;
    for (int r = 0; r < m; r++) {
      const int c = h * m + r;
      __m256 pt[NK];
#pragma GCC unroll 4
      for (int t = 0; t < NK; t++) pt[t] = _mm256_broadcast_ss(&p[static_cast<size_t>(t) * lds + c]);
      float* oc = o + static_cast<size_t>(c) * dp;
      for (int x = 0; x < dp; x += kVec) {
        __m256 acc0 = _mm256_fmadd_ps(pt[0], _mm256_loadu_ps(vh + x), _mm256_loadu_ps(oc + x));
        if constexpr (NK == 1) {
          _mm256_storeu_ps(oc + x, acc0);
        } else {
          __m256 acc1 = _mm256_mul_ps(pt[1], _mm256_loadu_ps(vh + ld + x));
#pragma GCC unroll 4
          for (int t = 2; t < NK; t += 2) {
            acc0 = _mm256_fmadd_ps(pt[t], _mm256_loadu_ps(vh + t * ld + x), acc0);
            if (t + 1 < NK) acc1 = _mm256_fmadd_ps(pt[t + 1], _mm256_loadu_ps(vh + (t + 1) * ld + x), acc1);
          }
          _mm256_storeu_ps(oc + x, _mm256_add_ps(acc0, acc1));
        }
      }
    }
  }
}

// One key row's span in the step (all its heads), brought in ahead of use. Always inlined: GCC
// deems a function of prefetches alone free of side effects and drops calls to it.
__attribute__((always_inline)) inline void prefetch_span(const float* row, int bytes) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int b = 0; b < bytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
  _mm_prefetch(p + bytes - 1, _MM_HINT_T0);
}

void decode_step(const DecodeStep& a) {
  const int cols = a.heads * a.m;
  // Column c reads head c / m: offsets once per step, not an integer division per score.
  int64_t cofs[64];  // cols <= 64 (forward_decode)
  for (int c = 0; c < cols; c++) cofs[c] = static_cast<int64_t>(c / a.m) * a.hs;
  const float* kp[8];
  const int span = ((a.heads - 1) * a.hs + a.dp) * 4;
  const bool pf = a.prefetch;
  for (int j = 0; j < a.nk; j++) {
    const float* krow = a.k + j * a.ld;
    // V of this step arrives while the scores run (its K came during the previous step, through
    // next_k): two streams in flight, not one.
    if (pf) prefetch_span(a.v + j * a.ld, span);
    float* s = a.s + static_cast<size_t>(j) * a.lds;
    for (int c0 = 0; c0 < a.ncols; c0 += kVec) {
      const int n = cols - c0 < kVec ? cols - c0 : kVec;
      if (n <= 0) {
        _mm256_storeu_ps(s + c0, _mm256_setzero_ps());  // padding columns: finite
        continue;
      }
      for (int i = 0; i < n; i++) kp[i] = krow + cofs[c0 + i];
      _mm256_storeu_ps(s + c0, row_dots_n(n, kp, a.q + static_cast<size_t>(c0) * a.dp, a.dp));
    }
  }
  softmax_step({a.s, a.lds, a.nk, a.ncols, a.bias, a.c, a.col_max, a.col_sum, a.alpha, a.o, a.dp, cols, a.dp});
  int j = 0;
  for (; j + 4 <= a.nk; j += 4) {
    if (pf && a.next_k) {
      for (int t = j; t < j + 4 && t < a.next_nk; t++) prefetch_span(a.next_k + t * a.ld, span);
    }
    pv_rows<4>(a.heads, a.m, a.dp, a.s + static_cast<size_t>(j) * a.lds, a.lds, a.v + j * a.ld, a.ld, a.hs, a.o);
  }
  for (; j < a.nk; j++) {
    if (pf && a.next_k && j < a.next_nk) prefetch_span(a.next_k + j * a.ld, span);
    pv_rows<1>(a.heads, a.m, a.dp, a.s + static_cast<size_t>(j) * a.lds, a.lds, a.v + j * a.ld, a.ld, a.hs, a.o);
  }
  if (pf && a.next_k) {
    for (; j < a.next_nk; j++) prefetch_span(a.next_k + j * a.ld, span);
  }
}

}  // namespace

#pragma GCC pop_options

// Compiled for the baseline ISA: only what it returns needs AVX2.
const Kernels& kernels_avx2() {
  static const Kernels k{kVec, kPanel, gemm_nt, gemm_dot, gemm_nn, softmax_step, grad_step, decode_step};
  return k;
}

}  // namespace attn
}  // namespace lwm
