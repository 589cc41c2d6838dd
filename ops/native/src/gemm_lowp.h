// Linear layers with low-precision weights: y[m, n] = x[m, k] @ W^T where W [n, k] (Hugging Face
// [out, in] layout) stays bf16, or int8 with one fp32 scale per output row, in memory; it is
// never widened to a full fp32 copy. Activations and accumulation are fp32.
//
// Two paths (gemm_lowp.cc):
//  - m <= kLowpDotMaxM (decode): each weight row is streamed once, converted in registers and
//    dotted with up to four rows of x at a time (L2-sized blocks of W for more); the threads
//    split n. Bound by memory bandwidth.
//  - larger m (prefill): x is packed once for the sgemm micro-kernel (gemm.h); each task takes
//    a block of W's rows, converts it (in L2-sized runs along k) into the kernel's fp32 panel
//    format and runs the fp32 micro-kernel over it for every row of x, so the conversion is paid
//    once per weight (per up to ~1000 rows of x) while the fp32 kernel does the arithmetic.
#pragma once
#include <cstdint>

namespace lwm {

// Up to this many rows of x the product streams W (dot path); above it, the packed GEMM path.
constexpr int64_t kLowpDotMaxM = 8;

// y (m * n floats, every element written) = x (m * k) @ w^T, w given as n * k bf16 bit patterns.
void matmul_bf16(const float* x, const uint16_t* w, float* y, int64_t m, int64_t n, int64_t k);
// y = x @ (scales[j] * q[j, :])^T, q n * k int8, scales n floats.
void matmul_int8(const float* x, const int8_t* q, const float* scales, float* y, int64_t m, int64_t n, int64_t k);

// The kernels a call would use now (they follow active_isa(), see cpu.h).
struct LowpInfo {
  const char* isa;
  bool bf16_dot;  // the decode path of bf16 weights uses AVX512_BF16 dot products
};
LowpInfo lowp_info();

namespace lowp_detail {

// One ISA's building blocks; the driver in gemm_lowp.cc does threads, blocking and edges.
struct LowpKernels {
  // Panel width of pack_*: the nr of the same ISA's sgemm kernels (gemm_detail::Kernels).
  int nr;
  // dot_bf16 may want the activations rewritten once per call: when xp_per_elem > 0, prep_x
  // writes xp_per_elem uint16 per element of x (m * k of them) into xp, which dot_bf16 reads.
  int xp_per_elem;
  void (*prep_x)(int64_t m, int64_t k, const float* x, uint16_t* xp);
  // y[i * ldy + j] = dot(x + i * k, w + j * ldw) over k, for i < m, j < n (the driver passes
  // m <= 4; row i of xp, when used, starts at xp + i * k * xp_per_elem).
  void (*dot_bf16)(int64_t m, int64_t n, int64_t k, const float* x, const uint16_t* xp, const uint16_t* w, int64_t ldw,
                   float* y, int64_t ldy);
  // y[i * ldy + j] = scales[j] * dot(x + i * k, q + j * ldq), likewise.
  void (*dot_int8)(int64_t m, int64_t n, int64_t k, const float* x, const int8_t* q, int64_t ldq, const float* scales,
                   float* y, int64_t ldy);
  // Rows j < nc (row j at w + j * ldw), columns p < klen, as fp32 in the sgemm pack_b panel
  // layout of each kc-wide slice of k: slice b (columns b * kc ..) at out + b * kc * ncpad
  // (ncpad = nc rounded up to nr), inside it nr-column panels of kcb = min(kc, klen - b * kc)
  // rows each, k-major, columns past nc zeroed. kc is a multiple of 8. Each weight row is read
  // front to back (long runs the hardware prefetcher follows).
  void (*pack_bf16)(const uint16_t* w, int64_t ldw, int64_t klen, int64_t kc, int64_t nc, float* out);
  // Likewise with element (j, p) = scales[j] * q[j * ldq + p] rounded to fp32 (the dequantized
  // weight).
  void (*pack_int8)(const int8_t* q, int64_t ldq, const float* scales, int64_t klen, int64_t kc, int64_t nc, float* out);
};

extern const LowpKernels kScalarLowp;      // gemm_lowp.cc
extern const LowpKernels kAvx2Lowp;        // gemm_lowp_avx2.cc
extern const LowpKernels kAvx512Lowp;      // gemm_lowp_avx512.cc
extern const LowpKernels kAvx512Bf16Lowp;  // gemm_lowp_avx512.cc: kAvx512Lowp with AVX512_BF16 dot_bf16

// AVX2 packing routines for any panel width that is a multiple of 8 (the AVX-512 table uses
// them with nr = 32: packing is amortised over the rows of x, so the wider ISA buys little).
void pack_bf16_avx2_nr32(const uint16_t* w, int64_t ldw, int64_t klen, int64_t kc, int64_t nc, float* out);
void pack_int8_avx2_nr32(const int8_t* q, int64_t ldq, const float* scales, int64_t klen, int64_t kc, int64_t nc, float* out);

}  // namespace lowp_detail
}  // namespace lwm
