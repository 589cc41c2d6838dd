// Conv2D as GEMM: rows of the im2col matrix are output pixels, columns (ky, kx, ci) in the
// filter's HWIO order, so the filter is the [kh*kw*cin, cout] right operand as stored.
#include "conv.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "threadpool.h"

namespace lwm {
namespace {

// Per-thread im2col buffer, kept between calls.
thread_local std::vector<float> col_scratch;

// Rows [p0, p1) of the im2col matrix (K = kh*kw*cin columns) into col.
void im2col(const Conv2DShape& s, const float* x, int64_t p0, int64_t p1, float* col) {
  const int64_t K = s.kh * s.kw * s.cin, plane = s.oh * s.ow, row_len = s.kw * s.cin;
  for (int64_t p = p0; p < p1; p++) {
    float* dst = col + (p - p0) * K;
    const int64_t b = p / plane, r = p % plane, oy = r / s.ow, ox = r % s.ow;
    const int64_t iy0 = oy * s.sh - s.pad_t, ix0 = ox * s.sw - s.pad_l;
    const float* xb = x + b * s.h * s.w * s.cin;
    const bool cols_inside = ix0 >= 0 && ix0 + s.kw <= s.w;
    for (int64_t ky = 0; ky < s.kh; ky++, dst += row_len) {
      const int64_t iy = iy0 + ky;
      if (iy < 0 || iy >= s.h) {
        std::memset(dst, 0, sizeof(float) * row_len);
        continue;
      }
      const float* xrow = xb + iy * s.w * s.cin;
      if (cols_inside) {  // the kw input pixels are adjacent in NHWC
        std::memcpy(dst, xrow + ix0 * s.cin, sizeof(float) * row_len);
        continue;
      }
      for (int64_t kx = 0; kx < s.kw; kx++) {
        const int64_t ix = ix0 + kx;
        float* d = dst + kx * s.cin;
        if (ix < 0 || ix >= s.w) std::memset(d, 0, sizeof(float) * s.cin);
        else std::memcpy(d, xrow + ix * s.cin, sizeof(float) * s.cin);
      }
    }
  }
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

void conv2d_nhwc(const Conv2DShape& s, const float* x, const float* f, float* y, const Epilogue& ep) {
  const int64_t M = s.n * s.oh * s.ow, K = s.kh * s.kw * s.cin, N = s.cout;
  if (M <= 0 || N <= 0) return;
  GemmBatch g;
  g.n = N, g.k = K;
  g.b = f, g.ldb = N;
  g.ldc = N;
  g.ep = ep;
  // 1x1, stride 1, no padding: the input already is the [M, cin] matrix.
  if (s.kh == 1 && s.kw == 1 && s.sh == 1 && s.sw == 1 && s.pad_t == 0 && s.pad_l == 0 && s.oh == s.h && s.ow == s.w) {
    g.m = M, g.a = x, g.lda = K, g.c = y;
    sgemm_batched(g);
    return;
  }
  if (K <= 0) {  // empty reduction: the GEMM writes zeros (then the epilogue)
    g.m = M, g.a = x, g.lda = 1, g.c = y;
    sgemm_batched(g);
    return;
  }
  // Tiles of output pixels: an im2col buffer of ~2 MiB (measured best against 1 and 8 MiB: it
  // stays in cache while the GEMM packs it), yet at least one tile per thread.
  const int64_t threads = num_threads();
  const int64_t cap = std::max<int64_t>(64, (int64_t{1} << 19) / K);
  int64_t tile = std::min(cap, ceil_div(M, threads));
  if (ceil_div(M, tile) < 2 * threads && ceil_div(M, 2 * threads) >= 512) tile = ceil_div(M, 2 * threads);
  tile = std::max<int64_t>(1, (tile + 15) / 16 * 16);
  const int64_t tiles = ceil_div(M, tile);
  parallel_for(tiles, [&](int64_t t, int) {
    const int64_t p0 = t * tile, p1 = std::min(M, p0 + tile);
    std::vector<float>& col = col_scratch;
    if (static_cast<int64_t>(col.size()) < (p1 - p0) * K) col.resize(static_cast<size_t>((p1 - p0) * K));
    im2col(s, x, p0, p1, col.data());
    GemmBatch gt = g;  // inside parallel_for the GEMM runs serially on this thread
    gt.m = p1 - p0, gt.a = col.data(), gt.lda = K, gt.c = y + p0 * N;
    sgemm_batched(gt);
  });
}

void upsample_nearest_nhwc(const float* x, float* y, int64_t n, int64_t h, int64_t w, int64_t c, int64_t fh, int64_t fw) {
  const int64_t row = w * fw * c;  // floats in one output row
  if (n <= 0 || h <= 0 || row <= 0 || fh <= 0) return;
  const size_t row_bytes = sizeof(float) * row, pixel_bytes = sizeof(float) * c;
  // One item per input row: build its first output row, then copy that row fh - 1 times.
  parallel_for(n * h, [&](int64_t r, int) {
    const float* src = x + r * w * c;
    float* dst = y + r * fh * row;
    for (int64_t ix = 0; ix < w; ix++) {
      for (int64_t j = 0; j < fw; j++) std::memcpy(dst + (ix * fw + j) * c, src + ix * c, pixel_bytes);
    }
    for (int64_t k = 1; k < fh; k++) std::memcpy(dst + k * row, dst, row_bytes);
  });
}

}  // namespace lwm
