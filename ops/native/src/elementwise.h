// Fused row-wise kernels of the decoder (RMSNorm, RoPE, SwiGLU) and their gradients: in plain
// tfjs each is a chain of 4-8 elementwise ops, each a slow JS loop with a fresh output buffer.
#pragma once
#include <cstdint>

namespace lwm {

// y[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * w
void rmsnorm_forward(const float* x, const float* w, float* y, int64_t rows, int64_t dim, float eps);
// dx = rstd * (g - xhat * mean(g * xhat)), g = dy * w; dw = sum over rows of dy * xhat.
void rmsnorm_backward(const float* x, const float* w, const float* dy, float* dx, float* dw, int64_t rows, int64_t dim, float eps);

// x: [tokens, heads, dim]; cos, sin: [tokens, dim/2]. Rotates pairs (i, i + dim/2) (rotate-half)
// or (2i, 2i+1) (interleaved) by the angle; sign -1 rotates backwards (the gradient).
void rope_apply(const float* x, const float* cos, const float* sin, float* out, int64_t tokens, int64_t heads, int64_t dim,
                bool interleaved, float sign);

// out = silu(gate) * up
void swiglu_forward(const float* gate, const float* up, float* out, int64_t n);
void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate, float* dup, int64_t n);

// out[s, :] += x[i, :] for s = seg[i] in [0, segments) (others dropped): the gradient of an
// embedding lookup. tfjs's own kernel loops over every segment (32000 for a vocabulary) with
// whole-tensor ops, which made one training step take minutes.
void segment_sum(const float* x, const int32_t* seg, float* out, int64_t n, int64_t inner, int64_t segments);

// out = a (op) b with numpy broadcasting; shapes are given padded to the output's rank.
enum class BinaryOp { kAdd = 0, kSub = 1, kMul = 2, kDiv = 3 };
void binary_broadcast(BinaryOp op, const float* a, const int64_t* a_shape, const float* b, const int64_t* b_shape,
                      float* out, const int64_t* out_shape, int rank);

enum class UnaryOp { kExp = 0, kSqrt = 1, kNeg = 2, kSquare = 3 };
void unary(UnaryOp op, const float* x, float* out, int64_t n);

}  // namespace lwm
