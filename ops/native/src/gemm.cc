// GEMM driver: ISA dispatch, KC/MC/NC blocking around the packed micro-kernels, the
// matrix-vector path, work split over the pool, the fused epilogue, and the scalar kernels.
#include "gemm.h"

#include <sys/mman.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>

#include "cpu.h"
#include "gemm_common.h"
#include "threadpool.h"

namespace lwm {
namespace gemm_detail {
namespace {

// Portable fallback (LWM_SIMD=scalar, or CPUs without AVX2): same blocking scheme, small tile.
constexpr int kSMr = 4, kSNr = 8;

void s_ukernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta) {
  float acc[kSMr][kSNr] = {};
  for (int64_t p = 0; p < kc; p++, a += kSMr, b += kSNr) {
    for (int i = 0; i < kSMr; i++) {
      for (int j = 0; j < kSNr; j++) acc[i][j] += a[i] * b[j];
    }
  }
  for (int i = 0; i < kSMr; i++) {
    for (int j = 0; j < kSNr; j++) {
      c[i * ldc + j] = beta != 0.0f ? alpha * acc[i][j] + beta * c[i * ldc + j] : alpha * acc[i][j];
    }
  }
}

void s_pack_a(bool trans, const float* a, int64_t lda, int64_t mc, int64_t kc, float* out) {
  for (int64_t i0 = 0; i0 < mc; i0 += kSMr, out += kSMr * kc) {
    for (int64_t k = 0; k < kc; k++) {
      for (int r = 0; r < kSMr; r++) {
        const int64_t i = i0 + r;
        out[k * kSMr + r] = i < mc ? (trans ? a[k * lda + i] : a[i * lda + k]) : 0.0f;
      }
    }
  }
}

void s_pack_b(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t nc, float* out) {
  for (int64_t j0 = 0; j0 < nc; j0 += kSNr, out += kSNr * kc) {
    for (int64_t k = 0; k < kc; k++) {
      for (int c = 0; c < kSNr; c++) {
        const int64_t j = j0 + c;
        out[k * kSNr + c] = j < nc ? (trans ? b[j * ldb + k] : b[k * ldb + j]) : 0.0f;
      }
    }
  }
}

void s_gemv_dot(int64_t k, int64_t n, const float* x, const float* w, int64_t ldw, float* y, float alpha, float beta) {
  for (int64_t j = 0; j < n; j++) {
    const float* row = w + j * ldw;
    float s[4] = {0, 0, 0, 0};
    int64_t p = 0;
    for (; p + 4 <= k; p += 4) {
      for (int u = 0; u < 4; u++) s[u] += x[p + u] * row[p + u];
    }
    for (; p < k; p++) s[0] += x[p] * row[p];
    const float t = (s[0] + s[1]) + (s[2] + s[3]);
    y[j] = beta != 0.0f ? alpha * t + beta * y[j] : alpha * t;
  }
}

void s_gemv_axpy(int64_t k, int64_t n, const float* x, const float* w, int64_t ldw, float* y, float alpha, float beta) {
  if (beta != 1.0f) {
    for (int64_t j = 0; j < n; j++) y[j] = beta == 0.0f ? 0.0f : beta * y[j];
  }
  for (int64_t p = 0; p < k; p++) {
    const float xp = alpha * x[p];
    const float* row = w + p * ldw;
    for (int64_t j = 0; j < n; j++) y[j] += xp * row[j];
  }
}

}  // namespace

extern const Kernels kScalarKernels = {kSMr, kSNr, 128, 256, 2048, s_ukernel, s_pack_a, s_pack_b, s_gemv_dot, s_gemv_axpy};

}  // namespace gemm_detail

using gemm_detail::Kernels;

namespace {

const Kernels& kernels() {
  switch (active_isa()) {
    case Isa::kAvx512: return gemm_detail::kAvx512Kernels;
    case Isa::kAvx2: return gemm_detail::kAvx2Kernels;
    default: return gemm_detail::kScalarKernels;
  }
}

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Below this many FLOPs (GEMM) or weight bytes (GEMV) a call runs on the calling thread: waking
// the pool costs more than it saves.
constexpr double kParallelFlops = 2e6;
constexpr double kParallelBytes = 256e3;
// What the matrix-vector path keeps resident in L2 between the rows of x.
constexpr int64_t kL2Bytes = 256 << 10;

thread_local gemm_common::Scratch scratch;
using gemm_common::run_tasks;


inline float act_value(Act act, float v, double leaky, const float* prelu) {
  switch (act) {
    case Act::kRelu: return std::isnan(v) ? v : (v > 0.0f ? v : 0.0f);
    case Act::kRelu6: return std::isnan(v) ? v : (v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f);
    case Act::kLeakyRelu: return v < 0.0f ? static_cast<float>(leaky * v) : v;
    case Act::kPrelu: return v < 0.0f ? *prelu * v : v;
    case Act::kElu: return v >= 0.0f ? v : static_cast<float>(std::exp(static_cast<double>(v)) - 1.0);
    case Act::kSigmoid: return static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(v))));
    default: return v;
  }
}

// Bias and activation over C[m0:m1, n0:n1] of batch item bi, in tfjs' order (add, then act).
void apply_epilogue(const Epilogue& ep, int64_t bi, float* c, int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const float* bias = ep.bias ? ep.bias + (ep.bias_off ? ep.bias_off[bi] : 0) : nullptr;
  const float* prelu = ep.prelu ? ep.prelu + (ep.prelu_off ? ep.prelu_off[bi] : 0) : nullptr;
  for (int64_t i = m0; i < m1; i++) {
    float* row = c + i * ldc;
    if (bias) {
      const float* brow = bias + i * ep.bias_sm;
      if (ep.bias_sn == 1) {
        for (int64_t j = n0; j < n1; j++) row[j] += brow[j];
      } else {
        for (int64_t j = n0; j < n1; j++) row[j] += brow[j * ep.bias_sn];
      }
    }
    if (ep.act == Act::kLinear) continue;
    if (ep.act == Act::kRelu) {
      for (int64_t j = n0; j < n1; j++) row[j] = act_value(Act::kRelu, row[j], 0, nullptr);
      continue;
    }
    const float* prow = prelu ? prelu + i * ep.prelu_sm : nullptr;
    for (int64_t j = n0; j < n1; j++) row[j] = act_value(ep.act, row[j], ep.leaky_alpha, prow ? prow + j * ep.prelu_sn : nullptr);
  }
}

// C[m0:m1, n0:n1] of one product, serially: the GotoBLAS loop nest around the micro-kernel.
// apre, when given, holds all of op(A) packed already (see prepack_a).
void gemm_block(const Kernels& K, const GemmBatch& g, const float* A, const float* B, float* C, int64_t m0, int64_t m1,
                int64_t n0, int64_t n1, const float* apre) {
  const int64_t MR = K.mr, NR = K.nr, lda = g.lda, ldb = g.ldb, ldc = g.ldc, mpad = round_up(g.m, MR);
  float* ap = apre ? nullptr : scratch.get(0, round_up(imin(K.mc, m1 - m0), MR) * K.kc);
  float* bp = scratch.get(1, round_up(imin(K.nc, n1 - n0), NR) * K.kc);
  float* edge = scratch.get(2, MR * NR);
  // Equal column blocks (a 16-wide remainder block would repack all of A for nothing).
  const int64_t ncb = round_up(ceil_div(n1 - n0, ceil_div(n1 - n0, K.nc)), NR);
  for (int64_t jc = n0; jc < n1; jc += ncb) {
    const int64_t nc = imin(ncb, n1 - jc);
    for (int64_t pc = 0; pc < g.k; pc += K.kc) {
      const int64_t kc = imin(K.kc, g.k - pc);
      const float beta = pc == 0 ? g.beta : 1.0f;
      K.pack_b(g.trans_b, g.trans_b ? B + jc * ldb + pc : B + pc * ldb + jc, ldb, kc, nc, bp);
      for (int64_t ic = m0; ic < m1; ic += K.mc) {
        const int64_t mc = imin(K.mc, m1 - ic);
        const float* a = apre ? apre + pc * mpad + ic * kc : ap;
        if (!apre) K.pack_a(g.trans_a, g.trans_a ? A + pc * lda + ic : A + ic * lda + pc, lda, mc, kc, ap);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t nr = imin(NR, nc - jr);
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int64_t mr = imin(MR, mc - ir);
            float* c = C + (ic + ir) * ldc + jc + jr;
            if (mr == MR && nr == NR) {
              K.ukernel(kc, a + ir * kc, bp + jr * kc, c, ldc, g.alpha, beta);
              continue;
            }
            // Edge tile: full tile into a buffer (packing zero-padded it), then the valid part.
            K.ukernel(kc, a + ir * kc, bp + jr * kc, edge, NR, 1.0f, 0.0f);
            for (int64_t i = 0; i < mr; i++) {
              for (int64_t j = 0; j < nr; j++) {
                float* cij = c + i * ldc + j;
                *cij = beta != 0.0f ? g.alpha * edge[i * NR + j] + beta * *cij : g.alpha * edge[i * NR + j];
              }
            }
          }
        }
      }
    }
  }
}

// Packs all of op(A) of every batch item, in parallel, into out: item bi at bi * mpad * k,
// k-block pc at pc * mpad, rows from i at i * kc (mpad = m rounded up to the panel height).
void prepack_a(const Kernels& K, const GemmBatch& g, float* out) {
  const int64_t mpad = round_up(g.m, K.mr), kb = ceil_div(g.k, K.kc), mb = ceil_div(g.m, K.mc);
  run_tasks(g.batch * kb * mb, true, [&](int64_t t) {
    const int64_t bi = t / (kb * mb), pc = (t / mb % kb) * K.kc, ic = (t % mb) * K.mc;
    const int64_t kc = imin(K.kc, g.k - pc), mc = imin(K.mc, g.m - ic);
    const float* A = g.a + (g.a_off ? g.a_off[bi] : bi * g.stride_a);
    K.pack_a(g.trans_a, g.trans_a ? A + pc * g.lda + ic : A + ic * g.lda + pc, g.lda, mc, kc,
             out + bi * mpad * g.k + pc * mpad + ic * kc);
  });
}

// Up to this many bytes of packed A are shared by the tasks of a call (kept per calling thread).
constexpr double kPrepackBytes = 32 << 20;

// Splits each product into mt x nt tiles so the pool has enough tasks. Splitting N is preferred:
// its tiles share one packed copy of A (packed up front), while every M tile repacks B.
void gemm_driver(const Kernels& K, const GemmBatch& g) {
  const double flops = 2.0 * g.batch * g.m * g.n * g.k;
  const int threads = flops >= kParallelFlops ? num_threads() : 1;
  int64_t mt = 1, nt = 1;
  if (threads > 1 && g.batch < 2 * threads) {
    // Two tasks per thread: the pool hands them out dynamically, which evens out a core slowed
    // by a neighbour.
    const int64_t want = ceil_div(2 * threads, g.batch);
    nt = imin(want, ceil_div(g.n, K.nr));
    mt = imin(ceil_div(want, nt), ceil_div(g.m, K.mr));
  }
  const int64_t mstep = round_up(ceil_div(g.m, mt), K.mr), nstep = round_up(ceil_div(g.n, nt), K.nr);
  mt = ceil_div(g.m, mstep);
  nt = ceil_div(g.n, nstep);
  const int64_t mpad = round_up(g.m, K.mr);
  float* apre = nullptr;
  if (nt > 1 && 4.0 * g.batch * mpad * g.k <= kPrepackBytes) {
    apre = scratch.get(3, g.batch * mpad * g.k);
    prepack_a(K, g, apre);
  }
  run_tasks(g.batch * mt * nt, threads > 1, [&](int64_t t) {
    const int64_t bi = t / (mt * nt), r = t % (mt * nt);
    const int64_t m0 = (r / nt) * mstep, n0 = (r % nt) * nstep;
    const int64_t m1 = imin(g.m, m0 + mstep), n1 = imin(g.n, n0 + nstep);
    const float* A = g.a + (g.a_off ? g.a_off[bi] : bi * g.stride_a);
    const float* B = g.b + (g.b_off ? g.b_off[bi] : bi * g.stride_b);
    float* C = g.c + bi * g.stride_c;
    gemm_block(K, g, A, B, C, m0, m1, n0, n1, apre ? apre + bi * mpad * g.k : nullptr);
    if (g.ep.active()) apply_epilogue(g.ep, bi, C, g.ldc, m0, m1, n0, n1);
  });
}

// A product with few rows (or, transposed, few columns): y_i = x_i op(W) for i < m, each y_i of
// length n, where op(W) is k x n and W is stored [n, k] (dot) or [k, n] (axpy).
struct Gemv {
  int64_t m, n, k;
  const float* x;
  int64_t x_rs, x_cs;
  const float* w;
  int64_t ldw;
  bool dot;
  float* y;
  int64_t y_rs, y_cs;
};

Gemv as_gemv(const GemmBatch& g, const float* A, const float* B, float* C) {
  if (g.m <= g.n) {
    return {g.m, g.n, g.k, A, g.trans_a ? 1 : g.lda, g.trans_a ? g.lda : 1, B, g.ldb, g.trans_b, C, g.ldc, 1};
  }
  // C^T = op(B)^T op(A)^T: the columns of op(B) are the vectors, op(A)^T the matrix.
  return {g.n, g.m, g.k, B, g.trans_b ? g.ldb : 1, g.trans_b ? 1 : g.ldb, A, g.lda, !g.trans_a, C, 1, g.ldc};
}

// Outputs [j0, j1) of every y_i. W is streamed once: blocks of it sized for L2 are reused by
// all m rows before moving on.
void gemv_chunk(const Kernels& K, const Gemv& v, float alpha, float beta, int64_t j0, int64_t j1) {
  const int64_t len = j1 - j0;
  const float* xs = v.x;
  int64_t x_rs = v.x_rs;
  if (v.x_cs != 1) {
    float* t = scratch.get(0, v.m * v.k);
    for (int64_t i = 0; i < v.m; i++) {
      for (int64_t p = 0; p < v.k; p++) t[i * v.k + p] = v.x[i * v.x_rs + p * v.x_cs];
    }
    xs = t, x_rs = v.k;
  }
  float* ys = v.y + j0 * v.y_cs;
  int64_t y_rs = v.y_rs;
  if (v.y_cs != 1) {
    ys = scratch.get(1, v.m * len);
    y_rs = len;
    if (beta != 0.0f) {
      for (int64_t i = 0; i < v.m; i++) {
        for (int64_t j = 0; j < len; j++) ys[i * len + j] = v.y[i * v.y_rs + (j0 + j) * v.y_cs];
      }
    }
  }
  if (v.dot) {
    const int64_t rows = imax(4, kL2Bytes / imax(1, v.k * 4) / 4 * 4);
    for (int64_t r0 = 0; r0 < len; r0 += rows) {
      const int64_t nr = imin(rows, len - r0);
      for (int64_t i = 0; i < v.m; i++) {
        K.gemv_dot(v.k, nr, xs + i * x_rs, v.w + (j0 + r0) * v.ldw, v.ldw, ys + i * y_rs + r0, alpha, beta);
      }
    }
  } else {
    // y blocks of up to 16 KiB stay in L1 while W streams through in long row runs.
    const int64_t cols = imin(len, v.m == 1 ? 4096 : 1024);
    const int64_t kb = v.m == 1 ? v.k : imax(4, kL2Bytes / (cols * 4) / 4 * 4);
    for (int64_t c0 = 0; c0 < len; c0 += cols) {
      const int64_t nc = imin(cols, len - c0);
      for (int64_t p0 = 0; p0 < v.k; p0 += kb) {
        const int64_t np = imin(kb, v.k - p0);
        for (int64_t i = 0; i < v.m; i++) {
          K.gemv_axpy(np, nc, xs + i * x_rs + p0, v.w + p0 * v.ldw + j0 + c0, v.ldw, ys + i * y_rs + c0, alpha,
                      p0 == 0 ? beta : 1.0f);
        }
      }
    }
  }
  if (v.y_cs != 1) {
    for (int64_t i = 0; i < v.m; i++) {
      for (int64_t j = 0; j < len; j++) v.y[i * v.y_rs + (j0 + j) * v.y_cs] = ys[i * len + j];
    }
  }
}

// W stored [k, n] with few products: each task takes a slice of k, so it streams whole
// contiguous rows of W (column slices would read short strided runs), into its own partial
// sums; the caller adds them up.
void gemv_split_k(const Kernels& K, const GemmBatch& g, const Gemv& v0, int64_t chunks) {
  const int64_t step = round_up(ceil_div(v0.k, chunks), 4);
  chunks = ceil_div(v0.k, step);
  const int64_t part = v0.m * v0.n;
  float* parts = scratch.get(3, g.batch * chunks * part);
  run_tasks(g.batch * chunks, true, [&](int64_t t) {
    const int64_t bi = t / chunks, p0 = (t % chunks) * step, p1 = imin(v0.k, p0 + step);
    Gemv v = as_gemv(g, g.a + (g.a_off ? g.a_off[bi] : bi * g.stride_a), g.b + (g.b_off ? g.b_off[bi] : bi * g.stride_b), nullptr);
    v.x += p0 * v.x_cs;
    v.w += p0 * v.ldw;
    v.k = p1 - p0;
    v.y = parts + t * part, v.y_rs = v.n, v.y_cs = 1;
    gemv_chunk(K, v, 1.0f, 0.0f, 0, v.n);
  });
  for (int64_t bi = 0; bi < g.batch; bi++) {
    float* C = g.c + bi * g.stride_c;
    const Gemv v = as_gemv(g, g.a, g.b, C);
    const float* p = parts + bi * chunks * part;
    for (int64_t i = 0; i < v.m; i++) {
      for (int64_t j = 0; j < v.n; j++) {
        float s = p[i * v.n + j];
        for (int64_t c = 1; c < chunks; c++) s += p[c * part + i * v.n + j];
        float* y = v.y + i * v.y_rs + j * v.y_cs;
        *y = g.beta != 0.0f ? g.alpha * s + g.beta * *y : g.alpha * s;
      }
    }
    if (g.ep.active()) apply_epilogue(g.ep, bi, C, g.ldc, 0, g.m, 0, g.n);
  }
}

void gemv_driver(const Kernels& K, const GemmBatch& g) {
  const Gemv v0 = as_gemv(g, g.a, g.b, g.c);
  const double bytes = 4.0 * g.batch * v0.n * v0.k;
  const int threads = num_threads();
  const bool parallel = bytes >= kParallelBytes && threads > 1;
  // Several chunks per thread: the pool hands them out dynamically, which evens out a core
  // slowed by a neighbour.
  const int64_t want = parallel && g.batch < 2 * threads ? ceil_div(4 * threads, g.batch) : 1;
  if (want > 1 && !v0.dot && v0.k >= 64 * want) return gemv_split_k(K, g, v0, want);
  // Chunks of outputs stay multiples of 16.
  int64_t chunks = imax(1, imin(want, v0.n / 16));
  const int64_t step = round_up(ceil_div(v0.n, chunks), 16);
  chunks = ceil_div(v0.n, step);
  const bool transposed = g.m > g.n;
  run_tasks(g.batch * chunks, parallel, [&](int64_t t) {
    const int64_t bi = t / chunks, j0 = (t % chunks) * step, j1 = imin(v0.n, j0 + step);
    const float* A = g.a + (g.a_off ? g.a_off[bi] : bi * g.stride_a);
    const float* B = g.b + (g.b_off ? g.b_off[bi] : bi * g.stride_b);
    float* C = g.c + bi * g.stride_c;
    gemv_chunk(K, as_gemv(g, A, B, C), g.alpha, g.beta, j0, j1);
    if (!g.ep.active()) return;
    if (transposed) apply_epilogue(g.ep, bi, C, g.ldc, j0, j1, 0, g.n);
    else apply_epilogue(g.ep, bi, C, g.ldc, 0, g.m, j0, j1);
  });
}

}  // namespace

void sgemm_batched(const GemmBatch& g) {
  if (g.batch <= 0 || g.m <= 0 || g.n <= 0) return;
  if (g.k <= 0) {
    for (int64_t bi = 0; bi < g.batch; bi++) {
      float* C = g.c + bi * g.stride_c;
      for (int64_t i = 0; i < g.m; i++) {
        for (int64_t j = 0; j < g.n; j++) C[i * g.ldc + j] = g.beta != 0.0f ? g.beta * C[i * g.ldc + j] : 0.0f;
      }
      if (g.ep.active()) apply_epilogue(g.ep, bi, C, g.ldc, 0, g.m, 0, g.n);
    }
    return;
  }
  const Kernels& K = kernels();
  // Up to 4 rows (or columns) the product is bound by reading the other operand: stream it once
  // instead of packing it.
  if (imin(g.m, g.n) <= 4) gemv_driver(K, g);
  else gemm_driver(K, g);
}

void sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  GemmBatch g;
  g.trans_a = transA, g.trans_b = transB;
  g.m = M, g.n = N, g.k = K;
  g.alpha = alpha, g.beta = beta;
  g.a = A, g.lda = lda, g.b = B, g.ldb = ldb, g.c = C, g.ldc = ldc;
  sgemm_batched(g);
}

GemmBlocking gemm_blocking() {
  const Kernels& K = kernels();
  return {K.mr, K.nr, K.mc, K.kc, K.nc};
}

}  // namespace lwm
