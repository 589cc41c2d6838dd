// fp32 2-D convolution, NHWC input, HWIO filter, dilation 1: im2col of tiles of output pixels
// into per-thread scratch, then the packed GEMM of gemm.h (tiles run in parallel on the pool).
#pragma once
#include <cstdint>

#include "gemm.h"

namespace lwm {

struct Conv2DShape {
  int64_t n = 0, h = 0, w = 0, cin = 0;   // input [n, h, w, cin]
  int64_t kh = 0, kw = 0, cout = 0;       // filter [kh, kw, cin, cout]
  int64_t sh = 1, sw = 1;                 // strides
  int64_t pad_t = 0, pad_l = 0;           // zero rows above / columns left of the input
  int64_t oh = 0, ow = 0;                 // output [n, oh, ow, cout]
};

// y = ep(conv(x, f)); the epilogue is applied as for a [n*oh*ow, cout] matrix (batch item 0).
void conv2d_nhwc(const Conv2DShape& s, const float* x, const float* f, float* y, const Epilogue& ep);

// Nearest-neighbour upsampling by integer factors: y[b, oy, ox, :] = x[b, oy / fh, ox / fw, :],
// y is [n, h * fh, w * fw, c]. The VQGAN decoder's Upsample before its conv: its four took
// 170 ms of CPU in tfjs' JS kernel, 55 ms here (mostly first-touch page faults).
void upsample_nearest_nhwc(const float* x, float* y, int64_t n, int64_t h, int64_t w, int64_t c, int64_t fh, int64_t fw);

}  // namespace lwm
