// Driver of the low-precision-weight linear layers (gemm_lowp.h): ISA dispatch, the streaming
// path for few rows, the convert-a-panel-then-sgemm path for many, the split over the pool, and
// the scalar kernels.
#include "gemm_lowp.h"

#include <cpuid.h>
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <functional>
#include <new>

#include "bf16.h"
#include "cpu.h"
#include "gemm.h"
#include "gemm_common.h"
#include "threadpool.h"

namespace lwm {
namespace lowp_detail {
namespace {

constexpr int kSNr = 8;  // kScalarKernels.nr in gemm.cc

// Four partial sums per dot product, like the fp32 scalar gemv.
template <typename W, typename Cvt>
void s_dot(int64_t m, int64_t n, int64_t k, const float* x, const W* w, int64_t ldw, const float* scales, float* y,
           int64_t ldy, Cvt cvt) {
  for (int64_t j = 0; j < n; j++) {
    const W* row = w + j * ldw;
    for (int64_t i = 0; i < m; i++) {
      const float* xi = x + i * k;
      float s[4] = {0, 0, 0, 0};
      int64_t p = 0;
      for (; p + 4 <= k; p += 4) {
        for (int u = 0; u < 4; u++) s[u] += xi[p + u] * cvt(row[p + u]);
      }
      for (; p < k; p++) s[0] += xi[p] * cvt(row[p]);
      const float t = (s[0] + s[1]) + (s[2] + s[3]);
      y[i * ldy + j] = scales ? scales[j] * t : t;
    }
  }
}

void s_dot_bf16(int64_t m, int64_t n, int64_t k, const float* x, const uint16_t*, const uint16_t* w, int64_t ldw,
                float* y, int64_t ldy) {
  s_dot(m, n, k, x, w, ldw, nullptr, y, ldy, bf16_to_f32);
}

void s_dot_int8(int64_t m, int64_t n, int64_t k, const float* x, const int8_t* q, int64_t ldq, const float* scales,
                float* y, int64_t ldy) {
  s_dot(m, n, k, x, q, ldq, scales, y, ldy, [](int8_t v) { return static_cast<float>(v); });
}

// See LowpKernels::pack_bf16 (panels of kSNr = 8 columns).
template <typename W, typename Cvt>
void s_pack(const W* w, int64_t ldw, const float* scales, int64_t klen, int64_t kc, int64_t nc, float* out, Cvt cvt) {
  const int64_t ncpad = (nc + kSNr - 1) / kSNr * kSNr;
  for (int64_t j0 = 0; j0 < ncpad; j0 += kSNr) {
    for (int64_t b0 = 0; b0 < klen; b0 += kc) {
      const int64_t kcb = klen - b0 < kc ? klen - b0 : kc;
      float* dst = out + b0 * ncpad + j0 * kcb;
      for (int c = 0; c < kSNr; c++) {
        const int64_t j = j0 + c;
        for (int64_t p = 0; p < kcb; p++) {
          dst[p * kSNr + c] = j < nc ? (scales ? scales[j] * cvt(w[j * ldw + b0 + p]) : cvt(w[j * ldw + b0 + p])) : 0.0f;
        }
      }
    }
  }
}

void s_pack_bf16(const uint16_t* w, int64_t ldw, int64_t klen, int64_t kc, int64_t nc, float* out) {
  s_pack(w, ldw, nullptr, klen, kc, nc, out, bf16_to_f32);
}

void s_pack_int8(const int8_t* q, int64_t ldq, const float* scales, int64_t klen, int64_t kc, int64_t nc, float* out) {
  s_pack(q, ldq, scales, klen, kc, nc, out, [](int8_t v) { return static_cast<float>(v); });
}

}  // namespace

extern const LowpKernels kScalarLowp = {kSNr, 0, nullptr, s_dot_bf16, s_dot_int8, s_pack_bf16, s_pack_int8};

}  // namespace lowp_detail

using gemm_detail::Kernels;
using lowp_detail::LowpKernels;

namespace {

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// CPUID.(EAX=7, ECX=1):EAX bit 5. Only consulted when AVX-512 itself is active (cpu.cc has
// checked that the OS saves the zmm state).
bool cpu_has_avx512_bf16() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  return (a >> 5) & 1u;
}

// LWM_BF16_DOT=0 keeps the AVX-512 bf16 decode path on conversion + FMA (to test it, or compare).
bool bf16_dot_allowed() {
  static const bool ok = [] {
    const char* s = std::getenv("LWM_BF16_DOT");
    return !(s && std::strcmp(s, "0") == 0) && cpu_has_avx512_bf16();
  }();
  return ok;
}

const LowpKernels& lowp_kernels() {
  switch (active_isa()) {
    case Isa::kAvx512: return bf16_dot_allowed() ? lowp_detail::kAvx512Bf16Lowp : lowp_detail::kAvx512Lowp;
    case Isa::kAvx2: return lowp_detail::kAvx2Lowp;
    default: return lowp_detail::kScalarLowp;
  }
}

// The fp32 micro-kernel and A packing of the same ISA (their nr matches LowpKernels::nr).
const Kernels& gemm_kernels() {
  switch (active_isa()) {
    case Isa::kAvx512: return gemm_detail::kAvx512Kernels;
    case Isa::kAvx2: return gemm_detail::kAvx2Kernels;
    default: return gemm_detail::kScalarKernels;
  }
}

// Below this many weight bytes (dot path) or FLOPs (GEMM path) a call runs on the calling
// thread: waking the pool costs more than it saves.
constexpr double kParallelBytes = 256e3;
constexpr double kParallelFlops = 2e6;
// What the dot path keeps resident in L2 between the groups of rows of x.
constexpr int64_t kDotL2Bytes = 256 << 10;

thread_local gemm_common::Scratch scratch;
using gemm_common::run_tasks;


// The weights of one call: bf16 (bf16 set) or int8 with scales.
struct Weights {
  const uint16_t* bf16 = nullptr;
  const int8_t* q = nullptr;
  const float* scales = nullptr;
  int64_t bytes_per_elem() const { return bf16 ? 2 : 1; }
};

// m <= kLowpDotMaxM: W streamed once from memory, the threads splitting its rows (the outputs).
void dot_driver(const LowpKernels& L, const Weights& W, const float* x, float* y, int64_t m, int64_t n, int64_t k) {
  const uint16_t* xp = nullptr;
  if (W.bf16 && L.xp_per_elem > 0) {
    uint16_t* t = reinterpret_cast<uint16_t*>(scratch.get(0, ceil_div(m * k * L.xp_per_elem, 2)));
    L.prep_x(m, k, x, t);
    xp = t;
  }
  const int threads = num_threads();
  const bool parallel = static_cast<double>(W.bytes_per_elem()) * n * k >= kParallelBytes && threads > 1;
  // Several chunks per thread, handed out dynamically (evens out a core slowed by a neighbour),
  // each a multiple of 16 rows.
  int64_t chunks = parallel ? imax(1, imin(4 * threads, n / 16)) : 1;
  const int64_t step = parallel ? round_up(ceil_div(n, chunks), 16) : n;
  chunks = ceil_div(n, step);
  // Beyond one group of four rows, W is taken in blocks that stay in L2 while every group of
  // rows passes over them (the kernels take up to four rows of x at a time).
  const int64_t rows_blk = m <= 4 ? step : imax(16, kDotL2Bytes / imax(1, k * W.bytes_per_elem()) / 16 * 16);
  run_tasks(chunks, parallel, [&](int64_t t) {
    const int64_t j1 = imin(n, (t + 1) * step);
    for (int64_t r0 = t * step; r0 < j1; r0 += rows_blk) {
      const int64_t nr = imin(rows_blk, j1 - r0);
      for (int64_t i0 = 0; i0 < m; i0 += 4) {
        const int64_t mb = imin(4, m - i0);
        if (W.bf16) {
          L.dot_bf16(mb, nr, k, x + i0 * k, xp ? xp + i0 * k * L.xp_per_elem : nullptr, W.bf16 + r0 * k, k, y + i0 * n + r0, n);
        } else {
          L.dot_int8(mb, nr, k, x + i0 * k, W.q + r0 * k, k, W.scales + r0, y + i0 * n + r0, n);
        }
      }
    }
  });
}

// Rows of W per task (at most; fewer when n would give the pool under four tasks per thread): x
// is streamed from L2/L3 once per task, so the arithmetic per byte of x read is ncs / 2 FLOPs.
constexpr int64_t kNcs = 128;
// fp32 panel converted at once per task: ncs rows by this many bytes' worth of k (rounded to kc).
constexpr int64_t kConvBytes = 768 << 10;
// Packed x shared by the tasks (rows of x beyond it are done in further passes, each converting
// W again, which is cheap against the arithmetic of that many rows).
constexpr int64_t kPrepackBytes = 16 << 20;

// Packs rows [0, rows) of x (row stride k) for the micro-kernel, in parallel: kc-slice pc at
// ap + pc * rows_pad, its MR-row panels at + i * kc (i a multiple of MR).
void prepack_x(const Kernels& K, const float* x, int64_t k, int64_t rows, int64_t rows_pad, float* ap, bool parallel) {
  const int64_t kb = ceil_div(k, K.kc), mb = ceil_div(rows, K.mc);
  run_tasks(kb * mb, parallel, [&](int64_t t) {
    const int64_t pc = (t / mb) * K.kc, ic = (t % mb) * K.mc;
    K.pack_a(false, x + ic * k + pc, k, imin(K.mc, rows - ic), imin(K.kc, k - pc), ap + pc * rows_pad + ic * imin(K.kc, k - pc));
  });
}

// y[i0:i1, j0:j1] (rows relative to the packed x) serially: W's rows converted ncs at a time,
// in runs of kcc along k, then the micro-kernel over every (mc-row block, nr panel, mr tile).
void gemm_block(const Kernels& K, const LowpKernels& L, const Weights& W, const float* ap, int64_t rows_pad, float* y,
                int64_t n, int64_t k, int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t ncs) {
  const int64_t MR = K.mr, NR = K.nr;
  const int64_t kcc = imax(1, kConvBytes / (ncs * 4 * K.kc)) * K.kc;
  float* bp = scratch.get(1, round_up(imin(ncs, j1 - j0), NR) * imin(kcc, k));
  float* edge = scratch.get(2, MR * NR);
  for (int64_t jc = j0; jc < j1; jc += ncs) {
    const int64_t nc = imin(ncs, j1 - jc), ncpad = round_up(nc, NR);
    for (int64_t pcc = 0; pcc < k; pcc += kcc) {
      const int64_t kcw = imin(kcc, k - pcc);
      if (W.bf16) L.pack_bf16(W.bf16 + jc * k + pcc, k, kcw, K.kc, nc, bp);
      else L.pack_int8(W.q + jc * k + pcc, k, W.scales + jc, kcw, K.kc, nc, bp);
      for (int64_t pc = pcc; pc < pcc + kcw; pc += K.kc) {
        const int64_t kc = imin(K.kc, k - pc);
        const float beta = pc == 0 ? 0.0f : 1.0f;
        const float* a = ap + pc * rows_pad;
        const float* b = bp + (pc - pcc) * ncpad;
        // Row blocks of mc (their packed x in L2 next to the kc-slice of the panel), B
        // micro-panels in L1 across the mr tiles.
        for (int64_t ic = i0; ic < i1; ic += K.mc) {
          const int64_t ie = imin(i1, ic + K.mc);
          for (int64_t jr = 0; jr < nc; jr += NR) {
            const int64_t nr = imin(NR, nc - jr);
            for (int64_t ir = ic; ir < ie; ir += MR) {
              const int64_t mr = imin(MR, ie - ir);
              float* c = y + ir * n + jc + jr;
              if (mr == MR && nr == NR) {
                K.ukernel(kc, a + ir * kc, b + jr * kc, c, n, 1.0f, beta);
                continue;
              }
              // Edge tile: the full tile into a buffer (packing zero-padded it), then its valid part.
              K.ukernel(kc, a + ir * kc, b + jr * kc, edge, NR, 1.0f, 0.0f);
              for (int64_t i = 0; i < mr; i++) {
                for (int64_t j = 0; j < nr; j++) c[i * n + j] = beta != 0.0f ? c[i * n + j] + edge[i * NR + j] : edge[i * NR + j];
              }
            }
          }
        }
      }
    }
  }
}

// Passes of up to rows_max rows of x: pack them once (shared), then tasks of ncs rows of W,
// handed out dynamically; when W has too few such blocks for the pool, the rows are split too
// (each row tile converting its block again).
void gemm_driver(const Kernels& K, const LowpKernels& L, const Weights& W, const float* x, float* y, int64_t m,
                 int64_t n, int64_t k) {
  const bool parallel = 2.0 * m * n * k >= kParallelFlops && num_threads() > 1;
  const int threads = parallel ? num_threads() : 1;
  const int64_t rows_max = imax(K.mc, kPrepackBytes / (4 * k) / K.mc * K.mc);
  for (int64_t mb = 0; mb < m; mb += rows_max) {
    const int64_t rows = imin(rows_max, m - mb), rows_pad = round_up(rows, K.mr);
    float* ap = scratch.get(3, rows_pad * k);
    prepack_x(K, x + mb * k, k, rows, rows_pad, ap, parallel);
    const int64_t ncs = imin(kNcs, imax(2 * K.nr, round_up(ceil_div(n, 4 * threads), K.nr)));
    const int64_t nb = ceil_div(n, ncs);
    int64_t mt = nb >= 2 * threads ? 1 : imin(ceil_div(2 * threads, nb), ceil_div(rows, K.mr));
    const int64_t mstep = round_up(ceil_div(rows, mt), K.mr);
    mt = ceil_div(rows, mstep);
    float* yb = y + mb * n;
    run_tasks(nb * mt, parallel, [&](int64_t t) {
      const int64_t i0 = (t / nb) * mstep, j0 = (t % nb) * ncs;
      gemm_block(K, L, W, ap, rows_pad, yb, n, k, i0, imin(rows, i0 + mstep), j0, imin(n, j0 + ncs), ncs);
    });
  }
}

void lowp_matmul(const Weights& W, const float* x, float* y, int64_t m, int64_t n, int64_t k) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    std::memset(y, 0, sizeof(float) * static_cast<size_t>(m * n));
    return;
  }
  const LowpKernels& L = lowp_kernels();
  if (m <= kLowpDotMaxM) return dot_driver(L, W, x, y, m, n, k);
  gemm_driver(gemm_kernels(), L, W, x, y, m, n, k);
}

}  // namespace

void matmul_bf16(const float* x, const uint16_t* w, float* y, int64_t m, int64_t n, int64_t k) {
  Weights W;
  W.bf16 = w;
  lowp_matmul(W, x, y, m, n, k);
}

void matmul_int8(const float* x, const int8_t* q, const float* scales, float* y, int64_t m, int64_t n, int64_t k) {
  Weights W;
  W.q = q;
  W.scales = scales;
  lowp_matmul(W, x, y, m, n, k);
}

LowpInfo lowp_info() {
  const LowpKernels& L = lowp_kernels();
  return {isa_name(active_isa()), &L == &lowp_detail::kAvx512Bf16Lowp};
}

}  // namespace lwm
