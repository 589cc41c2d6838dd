// fp32 GEMM: packed, register-blocked (GotoBLAS/BLIS style), threaded on the shared pool, with
// a memory-bound path for matrix-vector shapes (decode steps) and an optional fused epilogue.
#pragma once
#include <cstdint>

namespace lwm {

// C = alpha * op(A) * op(B) + beta * C, row-major. op(A) is M x K (A stored K x M, row stride
// lda, when transA), op(B) is K x N (B stored N x K when transB). beta == 0 never reads C.
void sgemm(bool transA, bool transB, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Activations of tfjs' fused ops, with its exact formulas (cpu backend, fused_utils.js).
enum class Act : int { kLinear = 0, kRelu = 1, kRelu6 = 2, kLeakyRelu = 3, kPrelu = 4, kElu = 5, kSigmoid = 6 };

// Applied to every element after the product: v = act(v + bias). bias and prelu weights are
// indexed off[batch] + i * sm + j * sn (strides 0 where they broadcast).
struct Epilogue {
  const float* bias = nullptr;
  const int64_t* bias_off = nullptr;  // nullptr: 0 for every batch item
  int64_t bias_sm = 0, bias_sn = 0;
  Act act = Act::kLinear;
  double leaky_alpha = 0.2;
  const float* prelu = nullptr;
  const int64_t* prelu_off = nullptr;
  int64_t prelu_sm = 0, prelu_sn = 0;
  bool active() const { return bias != nullptr || act != Act::kLinear; }
};

// `batch` independent products. Item i reads A at a_off[i] (or i * stride_a when a_off is
// nullptr), B likewise, and writes C at i * stride_c.
struct GemmBatch {
  bool trans_a = false, trans_b = false;
  int64_t batch = 1, m = 0, n = 0, k = 0;
  float alpha = 1.0f, beta = 0.0f;
  const float* a = nullptr;
  int64_t lda = 0, stride_a = 0;
  const int64_t* a_off = nullptr;
  const float* b = nullptr;
  int64_t ldb = 0, stride_b = 0;
  const int64_t* b_off = nullptr;
  float* c = nullptr;
  int64_t ldc = 0, stride_c = 0;
  Epilogue ep;
};
void sgemm_batched(const GemmBatch& g);

// The blocking of the kernels for the active ISA (tests probe sizes around these).
struct GemmBlocking {
  int mr, nr, mc, kc, nc;
};
GemmBlocking gemm_blocking();

namespace gemm_detail {

// One ISA's building blocks; the driver in gemm.cc does blocking, edges and threads.
struct Kernels {
  int mr, nr, mc, kc, nc;
  // c[mr x nr] = alpha * (a-panel x b-panel over kc) + beta * c; beta == 0 never reads c.
  void (*ukernel)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, float alpha, float beta);
  // op(A)[mc x kc] (element (i, k) at a[i * lda + k], or a[k * lda + i] when trans) into
  // mr-row panels, panel-major, k-major inside a panel, rows past mc zeroed.
  void (*pack_a)(bool trans, const float* a, int64_t lda, int64_t mc, int64_t kc, float* out);
  // op(B)[kc x nc] (element (k, j) at b[k * ldb + j], or b[j * ldb + k] when trans) into
  // nr-column panels, columns past nc zeroed.
  void (*pack_b)(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t nc, float* out);
  // y[j] = alpha * dot(x, w + j * ldw) + beta * y[j], j < n (W stored n x k).
  void (*gemv_dot)(int64_t k, int64_t n, const float* x, const float* w, int64_t ldw, float* y, float alpha, float beta);
  // y[j] = alpha * sum_k x[k] * w[k * ldw + j] + beta * y[j], j < n (W stored k x n).
  void (*gemv_axpy)(int64_t k, int64_t n, const float* x, const float* w, int64_t ldw, float* y, float alpha, float beta);
};

extern const Kernels kScalarKernels;  // gemm.cc
extern const Kernels kAvx2Kernels;    // gemm_avx2.cc
extern const Kernels kAvx512Kernels;  // gemm_avx512.cc

}  // namespace gemm_detail
}  // namespace lwm
