#include "elementwise.h"

#include <cmath>
#include <vector>

#include "threadpool.h"

namespace lwm {
namespace {

// Splits [0, n) into chunks of at least `grain` items, one parallel_for item each.
template <typename F>
void for_chunks(int64_t n, int64_t grain, F f) {
  int64_t chunks = (n + grain - 1) / grain;
  int64_t threads = num_threads();
  if (chunks > threads * 4) chunks = threads * 4;
  if (chunks <= 1) {
    f(0, n);
    return;
  }
  const int64_t step = (n + chunks - 1) / chunks;
  parallel_for(chunks, [&](int64_t c, int) {
    int64_t b = c * step, e = b + step < n ? b + step : n;
    if (b < e) f(b, e);
  });
}

constexpr int64_t kGrain = 1 << 14;  // elements; below this threads cost more than they save

}  // namespace

void rmsnorm_forward(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps) {
  for_chunks(rows, kGrain / dim + 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * dim;
      float* yr = y + r * dim;
      float ss = 0;
      for (int64_t i = 0; i < dim; i++) ss += xr[i] * xr[i];
      const float rstd = 1.0f / std::sqrt(ss / dim + eps);
      for (int64_t i = 0; i < dim; i++) yr[i] = xr[i] * rstd * w[i];
    }
  });
}

void rmsnorm_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t rows, int64_t dim, float eps) {
  const int threads = num_threads();
  // dw is a sum over rows: each chunk accumulates its own partial, reduced at the end.
  std::vector<std::vector<float>> partial(threads * 4, std::vector<float>());
  int64_t chunks = 0;
  const int64_t grain = kGrain / dim + 1;
  {
    int64_t c = (rows + grain - 1) / grain;
    chunks = c > threads * 4 ? threads * 4 : (c < 1 ? 1 : c);
  }
  const int64_t step = (rows + chunks - 1) / chunks;
  parallel_for(chunks, [&](int64_t c, int) {
    std::vector<float>& acc = partial[c];
    acc.assign(dim, 0.0f);
    const int64_t r0 = c * step, r1 = r0 + step < rows ? r0 + step : rows;
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * dim;
      const float* gr = dy + r * dim;
      float* dxr = dx + r * dim;
      float ss = 0;
      for (int64_t i = 0; i < dim; i++) ss += xr[i] * xr[i];
      const float rstd = 1.0f / std::sqrt(ss / dim + eps);
      float dot = 0;
      for (int64_t i = 0; i < dim; i++) dot += gr[i] * w[i] * xr[i];
      const float k = dot * rstd * rstd / dim;
      for (int64_t i = 0; i < dim; i++) {
        dxr[i] = rstd * (gr[i] * w[i] - xr[i] * k);
        acc[i] += gr[i] * xr[i] * rstd;
      }
    }
  });
  for (int64_t i = 0; i < dim; i++) dw[i] = 0;
  for (int64_t c = 0; c < chunks; c++) {
    if (partial[c].empty()) continue;
    for (int64_t i = 0; i < dim; i++) dw[i] += partial[c][i];
  }
}

void rope_apply(const float* x, const float* cos, const float* sin, float* out, int64_t tokens, int64_t heads, int64_t dim,
                bool interleaved, float sign) {
  const int64_t half = dim / 2;
  for_chunks(tokens, kGrain / (heads * dim) + 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const float* c = cos + t * half;
      const float* s = sin + t * half;
      for (int64_t h = 0; h < heads; h++) {
        const float* xr = x + (t * heads + h) * dim;
        float* o = out + (t * heads + h) * dim;
        if (interleaved) {
          for (int64_t i = 0; i < half; i++) {
            const float a = xr[2 * i], b = xr[2 * i + 1], si = sign * s[i];
            o[2 * i] = a * c[i] - b * si;
            o[2 * i + 1] = a * si + b * c[i];
          }
        } else {
          for (int64_t i = 0; i < half; i++) {
            const float a = xr[i], b = xr[i + half], si = sign * s[i];
            o[i] = a * c[i] - b * si;
            o[i + half] = b * c[i] + a * si;
          }
        }
      }
    }
  });
}

void swiglu_forward(const float* gate, const float* up, float* out, int64_t n) {
  for_chunks(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      const float g = gate[i];
      out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate, float* dup, int64_t n) {
  for_chunks(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      const float g = gate[i];
      const float s = 1.0f / (1.0f + std::exp(-g));
      dup[i] = dy[i] * g * s;
      dgate[i] = dy[i] * up[i] * s * (1.0f + g * (1.0f - s));
    }
  });
}

namespace {

template <typename F>
void binary_with(F f, const float* a, const int64_t* as, const float* b, const int64_t* bs, float* out, const int64_t* os, int rank) {
  int64_t n = 1;
  for (int d = 0; d < rank; d++) n *= os[d];
  bool same = true, a_scalar = true, b_scalar = true;
  for (int d = 0; d < rank; d++) {
    same = same && as[d] == os[d] && bs[d] == os[d];
    a_scalar = a_scalar && as[d] == 1;
    b_scalar = b_scalar && bs[d] == 1;
  }
  if (same) return for_chunks(n, kGrain, [&](int64_t s, int64_t e) { for (int64_t i = s; i < e; i++) out[i] = f(a[i], b[i]); });
  if (b_scalar) return for_chunks(n, kGrain, [&](int64_t s, int64_t e) { const float y = b[0]; for (int64_t i = s; i < e; i++) out[i] = f(a[i], y); });
  if (a_scalar) return for_chunks(n, kGrain, [&](int64_t s, int64_t e) { const float x = a[0]; for (int64_t i = s; i < e; i++) out[i] = f(x, b[i]); });
  // General case: walk the output over rows of its last dimension; broadcast dims have stride 0.
  std::vector<int64_t> ast(rank), bst(rank);
  int64_t sa = 1, sb = 1;
  for (int d = rank - 1; d >= 0; d--) {
    ast[d] = as[d] == 1 ? 0 : sa;
    bst[d] = bs[d] == 1 ? 0 : sb;
    sa *= as[d];
    sb *= bs[d];
  }
  const int64_t inner = rank ? os[rank - 1] : 1;
  const int64_t rows = inner ? n / inner : 0;
  const int64_t ai = rank ? ast[rank - 1] : 0, bi = rank ? bst[rank - 1] : 0;
  for_chunks(rows, kGrain / (inner + 1) + 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      int64_t rem = r, ao = 0, bo = 0;
      for (int d = rank - 2; d >= 0; d--) {
        const int64_t idx = rem % os[d];
        rem /= os[d];
        ao += idx * ast[d];
        bo += idx * bst[d];
      }
      float* o = out + r * inner;
      for (int64_t j = 0; j < inner; j++) o[j] = f(a[ao + j * ai], b[bo + j * bi]);
    }
  });
}

}  // namespace

void binary_broadcast(BinaryOp op, const float* a, const int64_t* as, const float* b, const int64_t* bs, float* out, const int64_t* os, int rank) {
  switch (op) {
    case BinaryOp::kAdd: return binary_with([](float x, float y) { return x + y; }, a, as, b, bs, out, os, rank);
    case BinaryOp::kSub: return binary_with([](float x, float y) { return x - y; }, a, as, b, bs, out, os, rank);
    case BinaryOp::kMul: return binary_with([](float x, float y) { return x * y; }, a, as, b, bs, out, os, rank);
    case BinaryOp::kDiv: return binary_with([](float x, float y) { return x / y; }, a, as, b, bs, out, os, rank);
  }
}

void unary(UnaryOp op, const float* x, float* out, int64_t n) {
  for_chunks(n, kGrain, [&](int64_t s, int64_t e) {
    switch (op) {
      case UnaryOp::kExp: for (int64_t i = s; i < e; i++) out[i] = std::exp(x[i]); break;
      case UnaryOp::kSqrt: for (int64_t i = s; i < e; i++) out[i] = std::sqrt(x[i]); break;
      case UnaryOp::kNeg: for (int64_t i = s; i < e; i++) out[i] = -x[i]; break;
      case UnaryOp::kSquare: for (int64_t i = s; i < e; i++) out[i] = x[i] * x[i]; break;
    }
  });
}

void segment_sum(const float* x, const int32_t* seg, float* out, int64_t n, int64_t inner, int64_t segments) {
  // Threads own disjoint column ranges, so rows that share a segment never race.
  for_chunks(inner, 64, [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < n; i++) {
      const int64_t s = seg[i];
      if (s < 0 || s >= segments) continue;
      const float* xr = x + i * inner;
      float* o = out + s * inner;
      for (int64_t j = c0; j < c1; j++) o[j] += xr[j];
    }
  });
}

}  // namespace lwm
