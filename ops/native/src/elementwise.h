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

}  // namespace lwm
