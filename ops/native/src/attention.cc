// Blocked driver of the fused attention: block masks, packing, threading and the per-row
// bookkeeping, plus the decode path (few queries against a KV cache, read in place); the inner
// products and exponentials come from the per-ISA kernel tables.
#include "attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#include <sys/mman.h>

#include "bf16.h"
#include "cpu.h"
#include "threadpool.h"

namespace lwm {
namespace attn {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Scalar kernels: the reference for the SIMD ones and the fallback for LWM_SIMD=scalar.
constexpr int kScalarPanel = 16;

void nt_scalar(int m, int np, int dp, const float* a, int lda, const float* bp, float* c, int ldc) {
  for (int r = 0; r < m; r++) {
    for (int p = 0; p < np; p++) {
      float acc[kScalarPanel] = {};
      const float* panel = bp + static_cast<size_t>(p) * dp * kScalarPanel;
      for (int d = 0; d < dp; d++) {
        const float x = a[static_cast<size_t>(r) * lda + d];
        for (int j = 0; j < kScalarPanel; j++) acc[j] += x * panel[d * kScalarPanel + j];
      }
      std::memcpy(c + static_cast<size_t>(r) * ldc + p * kScalarPanel, acc, sizeof acc);
    }
  }
}

// b is in column slices (see pack_slices): slice x0 holds [kdim][w] at b + x0 * kdim.
void nn_scalar(int m, int kdim, int dp, const float* a, int64_t ais, int64_t aks, const float* b, float* c, int ldc) {
  for (int x0 = 0; x0 < dp; x0 += kScalarPanel) {
    const int w = std::min(kScalarPanel, dp - x0);
    const float* slice = b + static_cast<size_t>(x0) * kdim;
    for (int r = 0; r < m; r++) {
      float* cr = c + static_cast<size_t>(r) * ldc + x0;
      for (int k = 0; k < kdim; k++) {
        const float x = a[r * ais + k * aks];
        for (int j = 0; j < w; j++) cr[j] += x * slice[k * w + j];
      }
    }
  }
}

void dot_scalar(int n, int m, int dp, const float* a, int lda, const float* b, int ldb, float* c, int ldc) {
  for (int j = 0; j < n; j++) {
    for (int r = 0; r < m; r++) {
      float acc = 0;
      for (int d = 0; d < dp; d++) acc += a[static_cast<size_t>(j) * lda + d] * b[static_cast<size_t>(r) * ldb + d];
      c[static_cast<size_t>(j) * ldc + r] = acc;
    }
  }
}

void softmax_scalar(const SoftmaxStep& a) {
  for (int r = 0; r < a.ncols; r++) {
    float block_max = -kInf;
    for (int j = 0; j < a.nk; j++) {
      float& x = a.s[static_cast<size_t>(j) * a.ld + r];
      x = x * a.c + (a.bias ? a.bias[static_cast<size_t>(j) * a.ld + r] : 0.f);
      block_max = std::max(block_max, x);
    }
    const float new_max = std::max(a.col_max[r], block_max);
    const float shift = new_max == -kInf ? 0.f : new_max;  // nothing visible yet: p = exp2(-inf) = 0
    float sum = 0;
    for (int j = 0; j < a.nk; j++) {
      float& x = a.s[static_cast<size_t>(j) * a.ld + r];
      x = std::exp2(x - shift);
      sum += x;
    }
    a.alpha[r] = std::exp2(a.col_max[r] - shift);
    a.col_sum[r] = a.col_sum[r] * a.alpha[r] + sum;
    a.col_max[r] = new_max;
  }
  for (int r = 0; r < a.m; r++) {
    if (a.alpha[r] == 1.f) continue;
    float* o = a.o + static_cast<size_t>(r) * a.ldo;
    for (int x = 0; x < a.dp; x++) o[x] *= a.alpha[r];
  }
}

void grad_scalar(const GradStep& a) {
  for (int r = 0; r < a.m; r++) {
    float* s = a.s + static_cast<size_t>(r) * a.ld;
    float* dp = a.dp + static_cast<size_t>(r) * a.ld;
    const float* bias = a.bias ? a.bias + static_cast<size_t>(r % a.nq) * a.ld : nullptr;
    for (int j = 0; j < a.ncols; j++) {
      const float p = std::exp2(s[j] * a.c + (bias ? bias[j] : 0.f) - a.lse2[r]);
      s[j] = p;
      dp[j] = p * (dp[j] - a.drow[r]) * a.scale;
    }
  }
}

void decode_scalar(const DecodeStep& a) {
  const int cols = a.heads * a.m;
  for (int j = 0; j < a.nk; j++) {
    float* s = a.s + static_cast<size_t>(j) * a.lds;
    for (int c = 0; c < a.ncols; c++) {
      float acc = 0;
      if (c < cols) {
        const float* kj = a.k + j * a.ld + (c / a.m) * a.hs;
        const float* q = a.q + static_cast<size_t>(c) * a.dp;
        for (int d = 0; d < a.dp; d++) acc += kj[d] * q[d];
      }
      s[c] = acc;
    }
  }
  softmax_scalar({a.s, a.lds, a.nk, a.ncols, a.bias, a.c, a.col_max, a.col_sum, a.alpha, a.o, a.dp, cols, a.dp});
  for (int j = 0; j < a.nk; j++) {
    const float* p = a.s + static_cast<size_t>(j) * a.lds;
    for (int c = 0; c < cols; c++) {
      const float* vj = a.v + j * a.ld + (c / a.m) * a.hs;
      float* o = a.o + static_cast<size_t>(c) * a.dp;
      for (int x = 0; x < a.dp; x++) o[x] += p[c] * vj[x];
    }
  }
}

}  // namespace

const Kernels& kernels_scalar() {
  static const Kernels k{1, kScalarPanel, nt_scalar, dot_scalar, nn_scalar, softmax_scalar, grad_scalar, decode_scalar};
  return k;
}

}  // namespace attn

namespace {

using attn::Kernels;
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr double kLog2e = 1.4426950408889634074;
constexpr double kLn2 = 0.69314718055994530942;
// The decode path takes up to this many rows (query heads of a group x queries) per kv head; more
// rows are compute-bound, where the packed panels of the blocked path win.
constexpr int kDecodeRows = 16;

const Kernels& pick_kernels() {
  switch (active_isa()) {
    case Isa::kAvx512: return attn::kernels_avx512();
    case Isa::kAvx2: return attn::kernels_avx2();
    default: return attn::kernels_scalar();
  }
}

int env_int(const char* name, int fallback) {
  const char* s = std::getenv(name);
  int v = s ? std::atoi(s) : 0;
  return v > 0 ? v : fallback;
}

// Per-thread scratch, grown on demand and kept: no allocation (or page faults) per block or call.
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
};
std::vector<Scratch> g_scratch;
std::mutex g_mutex;  // the scratch is shared: one attention call at a time per process

void reserve_scratch(size_t floats) {
  g_scratch.resize(std::max<size_t>(g_scratch.size(), num_threads()));
  for (auto& s : g_scratch) {
    if (s.n >= floats) continue;
    std::free(s.p);
    s.p = static_cast<float*>(std::aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64));
    if (!s.p) throw std::bad_alloc();
    s.n = floats;
  }
}

// K/V (forward) or Q/dO (backward) repacked once per call into contiguous blocks: the kernels
// then stream 32 KiB blocks instead of rows Hkv*D apart (often 4 KiB, which defeats the
// prefetchers and aliases onto a few L1 sets). Kept between calls unless large.
struct PackBuffer {
  float* p = nullptr;
  size_t bytes = 0;
  float* get(size_t floats) {
    const size_t want = (floats * sizeof(float) + (2u << 20) - 1) / (2u << 20) * (2u << 20);
    if (want > bytes) {
      release();
      void* m = mmap(nullptr, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) throw std::bad_alloc();
      madvise(m, want, MADV_HUGEPAGE);  // first-touch faults cost ~3 ms/MiB here with 4 KiB pages
      p = static_cast<float*>(m), bytes = want;
    }
    return p;
  }
  void release() {
    if (p) munmap(p, bytes);
    p = nullptr, bytes = 0;
  }
  void trim() {
    if (bytes > (size_t(256) << 20)) release();
  }
} g_pack;

// Hands out 64-byte aligned pieces of a scratch buffer (base null: just measures).
struct Carve {
  float* base;
  size_t used = 0;
  float* take(size_t n) {
    float* p = base ? base + used : nullptr;
    used += (n + 15) / 16 * 16;
    return p;
  }
};

// A KV cache may hold bf16 (the top half of a float32): the forward widens keys and values as it
// packs them, so the cache is read once at 2 bytes per element and never copied whole.
inline void widen(const float* src, int n, float* dst) { std::memcpy(dst, src, n * sizeof(float)); }
inline void widen(const uint16_t* src, int n, float* dst) {
  for (int i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}

// rows [n][d] with row stride `stride` -> dst [n][dp], zero-padded columns.
template <typename T>
void pack_rows(const T* src, int64_t stride, int n, int d, int dp, float* dst) {
  for (int j = 0; j < n; j++) {
    widen(src + j * stride, d, dst + static_cast<size_t>(j) * dp);
    std::fill(dst + static_cast<size_t>(j) * dp + d, dst + static_cast<size_t>(j + 1) * dp, 0.f);
  }
}

// rows [n][d] -> transposed panels [npan][dp][panel]; missing rows and columns are zeros.
void pack_panels(const float* src, int64_t stride, int n, int d, int dp, int panel, int npan, float* dst) {
  std::fill(dst, dst + static_cast<size_t>(npan) * dp * panel, 0.f);
  for (int j = 0; j < n; j++) {
    float* col = dst + static_cast<size_t>(j / panel) * dp * panel + j % panel;
    const float* s = src + j * stride;
    for (int x = 0; x < d; x++) col[static_cast<size_t>(x) * panel] = s[x];
  }
}

// rows [n][d] -> column slices of width W (the last one narrower): slice x0 is [n_total][w] at
// dst + x0 * n_total, these rows at row0. Each slice streams contiguously through the products;
// plain rows 512 B apart would pile onto a few L1 sets.
template <typename T>
void pack_slices(const T* src, int64_t stride, int n, int d, int dp, int W, float* dst, int n_total, int row0) {
  for (int j = 0; j < n; j++) {
    for (int x0 = 0; x0 < dp; x0 += W) {
      const int w = std::min(W, dp - x0), valid = std::max(0, std::min(w, d - x0));
      float* out = dst + static_cast<size_t>(x0) * n_total + static_cast<size_t>(row0 + j) * w;
      widen(src + j * stride + x0, valid, out);
      std::fill(out + valid, out + w, 0.f);
    }
  }
}

enum Cls { kSkip, kFull, kPartial };

struct BlockInfo {
  int64_t pos_lo, pos_hi;
  int32_t seg_lo, seg_hi;
  int valid;  // keys: 0 none valid, 1 some, 2 all
};

struct Plan {
  AttentionShape sh;
  AttentionMask mk;
  const Kernels* kn;
  float scale, c;
  int D, Dp, G, Bq, Bk, M, panel;
  int64_t nqb, nkb;
  bool seg;
  std::vector<BlockInfo> qinfo, kinfo;  // [B][nqb], [B][nkb]

  Plan(const AttentionShape& s, const AttentionMask& m, float sc) : sh(s), mk(m), kn(&pick_kernels()), scale(sc) {
    c = static_cast<float>(sc * kLog2e);
    D = static_cast<int>(sh.head_dim);
    Dp = (D + kn->vec - 1) / kn->vec * kn->vec;
    G = static_cast<int>(sh.heads / sh.kv_heads);
    // Rows of one block = G heads x Bq queries sharing each packed K/V block; ~64 rows keeps a
    // block's Q, O, K, V and scores inside L2 while amortising the packing.
    Bk = std::max(32, env_int("LWM_ATTN_BK", 64) / 32 * 32);
    Bq = env_int("LWM_ATTN_BQ", std::max(8, 64 / G));
    M = G * Bq;
    panel = kn->panel;
    nqb = (sh.q_len + Bq - 1) / Bq;
    nkb = (sh.kv_len + Bk - 1) / Bk;
    seg = mk.q_seg && mk.k_seg;
    summarise();
  }

  int64_t qpos(int64_t b, int64_t i) const { return mk.q_pos ? mk.q_pos[b * mk.q_pos_batch_stride + i] : mk.query_offset + i; }
  int64_t kpos(int64_t b, int64_t j) const { return mk.k_pos ? mk.k_pos[b * mk.k_pos_batch_stride + j] : j; }
  bool kvalid(int64_t b, int64_t j) const { return !mk.key_valid || mk.key_valid[b * sh.kv_len + j]; }

  void summarise() {
    qinfo.resize(sh.batch * nqb);
    kinfo.resize(sh.batch * nkb);
    for (int64_t b = 0; b < sh.batch; b++) {
      for (int64_t qb = 0; qb < nqb; qb++) {
        BlockInfo& q = qinfo[b * nqb + qb];
        q = {INT64_MAX, INT64_MIN, INT32_MAX, INT32_MIN, 2};
        for (int64_t i = qb * Bq; i < std::min<int64_t>((qb + 1) * Bq, sh.q_len); i++) {
          q.pos_lo = std::min(q.pos_lo, qpos(b, i));
          q.pos_hi = std::max(q.pos_hi, qpos(b, i));
          const int32_t s = seg ? mk.q_seg[b * sh.q_len + i] : 0;
          q.seg_lo = std::min(q.seg_lo, s);
          q.seg_hi = std::max(q.seg_hi, s);
        }
      }
      // With default key positions, blocks past the last query are invisible (a KV cache's unused
      // capacity): no need to scan them, only to mark them so.
      int64_t qmax = INT64_MIN;
      for (int64_t qb = 0; qb < nqb; qb++) qmax = std::max(qmax, qinfo[b * nqb + qb].pos_hi);
      for (int64_t kb = 0; kb < nkb; kb++) {
        BlockInfo& k = kinfo[b * nkb + kb];
        k = {INT64_MAX, INT64_MIN, INT32_MAX, INT32_MIN, 0};
        int64_t j0 = kb * Bk, j1 = std::min<int64_t>(j0 + Bk, sh.kv_len), nvalid = 0;
        if (mk.causal && !mk.k_pos && j0 > qmax) continue;
        for (int64_t j = j0; j < j1; j++) {
          if (!kvalid(b, j)) continue;  // padding never makes a block visible
          nvalid++;
          k.pos_lo = std::min(k.pos_lo, kpos(b, j));
          k.pos_hi = std::max(k.pos_hi, kpos(b, j));
          const int32_t s = seg ? mk.k_seg[b * sh.kv_len + j] : 0;
          k.seg_lo = std::min(k.seg_lo, s);
          k.seg_hi = std::max(k.seg_hi, s);
        }
        k.valid = nvalid == 0 ? 0 : nvalid == j1 - j0 ? 2 : 1;
      }
    }
  }

  // Forward and backward must skip exactly the same blocks, so both ask this one function.
  Cls classify(int64_t b, int64_t qb, int64_t kb) const {
    const BlockInfo& q = qinfo[b * nqb + qb];
    const BlockInfo& k = kinfo[b * nkb + kb];
    if (k.valid == 0) return kSkip;
    if (mk.causal && k.pos_lo > q.pos_hi) return kSkip;
    if (seg && (k.seg_hi < q.seg_lo || k.seg_lo > q.seg_hi)) return kSkip;
    const int64_t nk = std::min<int64_t>(Bk, sh.kv_len - kb * Bk);
    const bool full = k.valid == 2 && nk % panel == 0 && (!mk.causal || k.pos_hi <= q.pos_lo) &&
                      (!seg || (q.seg_lo == q.seg_hi && k.seg_lo == k.seg_hi && q.seg_lo == k.seg_lo));
    return full ? kFull : kPartial;
  }

  // First key block after kb that query block qb of batch b attends (nkb if none).
  int64_t next_block(int64_t b, int64_t qb, int64_t kb) const {
    for (int64_t j = kb + 1; j < nkb; j++) {
      if (classify(b, qb, j) != kSkip) return j;
    }
    return nkb;
  }

  // Additive mask [nq][Bk]: 0 where visible, -inf elsewhere (also columns past the last key).
  void build_bias(int64_t b, int64_t qb, int64_t kb, int ncols, float* bias) const {
    const int64_t q0 = qb * Bq, k0 = kb * Bk;
    const int nq = static_cast<int>(std::min<int64_t>(Bq, sh.q_len - q0));
    const int nk = static_cast<int>(std::min<int64_t>(Bk, sh.kv_len - k0));
    for (int i = 0; i < nq; i++) {
      const int64_t qp = qpos(b, q0 + i);
      const int32_t qs = seg ? mk.q_seg[b * sh.q_len + q0 + i] : 0;
      float* row = bias + static_cast<size_t>(i) * Bk;
      for (int j = 0; j < ncols; j++) {
        const int64_t kj = k0 + j;
        const bool visible = j < nk && kvalid(b, kj) && (!mk.causal || kpos(b, kj) <= qp) &&
                             (!seg || mk.k_seg[b * sh.kv_len + kj] == qs);
        row[j] = visible ? 0.f : -kInf;
      }
    }
  }

  // The same mask transposed for the forward tile [nk][ld]: column r is query r % nq (r < m).
  void build_bias_t(int64_t b, int64_t qb, int64_t kb, int m, int ld, float* bias) const {
    const int64_t q0 = qb * Bq, k0 = kb * Bk;
    const int nq = static_cast<int>(std::min<int64_t>(Bq, sh.q_len - q0));
    const int nk = static_cast<int>(std::min<int64_t>(Bk, sh.kv_len - k0));
    for (int j = 0; j < nk; j++) {
      const int64_t kj = k0 + j, kp = kpos(b, kj);
      const int32_t ks = seg ? mk.k_seg[b * sh.kv_len + kj] : 0;
      const bool valid = kvalid(b, kj);
      float* row = bias + static_cast<size_t>(j) * ld;
      for (int i = 0; i < nq; i++) {
        const bool visible = valid && (!mk.causal || kp <= qpos(b, q0 + i)) && (!seg || mk.q_seg[b * sh.q_len + q0 + i] == ks);
        row[i] = visible ? 0.f : -kInf;
      }
      for (int r = nq; r < m; r++) row[r] = row[r % nq];
      std::fill(row + m, row + ld, 0.f);
    }
  }

  int padded_rows() const { return (M + panel - 1) / panel * panel; }

  size_t forward_scratch(float* base, float** parts) const {
    Carve cv{base};
    const size_t mp = padded_rows();
    const size_t sizes[] = {size_t(M) * Dp, mp * Dp, size_t(M) * Dp, size_t(Bk) * mp, size_t(Bk) * mp, mp, mp, mp, kv_block()};
    for (int i = 0; i < 9; i++) parts[i] = cv.take(sizes[i]);
    return cv.used;
  }

  // Few query rows in one block (decoding): K and V are streamed in place (forward_decode).
  bool decode() const { return nqb == 1 && G * sh.q_len <= kDecodeRows; }

  // kv heads per decode work item: a row's whole span when the scores of a block stay small; one
  // head for head dims that are not whole vectors (its rows get packed, see forward_decode).
  int decode_heads() const {
    const int m = G * static_cast<int>(sh.q_len);
    return D != Dp ? 1 : static_cast<int>(std::min<int64_t>(sh.kv_heads, std::max(1, 64 / m)));
  }
  int decode_cols() const {
    const int cols = decode_heads() * G * static_cast<int>(sh.q_len);
    return (cols + kn->vec - 1) / kn->vec * kn->vec;
  }

  size_t decode_scratch(float* base, float** parts) const {
    Carve cv{base};
    const size_t rows = size_t(decode_heads()) * G * sh.q_len, ld = decode_cols();
    const size_t sizes[] = {rows * Dp, rows * Dp, size_t(Bk) * ld, size_t(Bk) * ld, ld, ld, ld, size_t(Bk) * Dp, size_t(Bk) * Dp};
    for (int i = 0; i < 9; i++) parts[i] = cv.take(sizes[i]);
    return cv.used;
  }

  // Packed block sizes (floats): K rows + V slices of a key block; Q rows + dO rows of a query block.
  size_t kv_block() const { return 2 * size_t(Bk) * Dp; }
  size_t qo_block() const { return 2 * size_t(M) * Dp; }

  // Key block idx = (b * Hkv + kh) * nkb + kb: K rows, then V column slices.
  template <typename T>
  void pack_kv_block(const T* k, const T* v, int64_t idx, float* blk) const {
    const int64_t sl = idx / nkb, kb = idx % nkb, b = sl / sh.kv_heads, kh = sl % sh.kv_heads;
    const int nk = static_cast<int>(std::min<int64_t>(Bk, sh.kv_len - kb * Bk));
    const int64_t src = ((b * sh.kv_len + kb * Bk) * sh.kv_heads + kh) * D, stride = sh.kv_heads * D;
    pack_rows(k + src, stride, nk, D, Dp, blk);
    pack_slices(v + src, stride, nk, D, Dp, panel, blk + size_t(Bk) * Dp, nk, 0);
  }

  void pack_qo(const float* q, const float* d_o, float* dst) const {
    parallel_for(sh.batch * sh.kv_heads * nqb, [&](int64_t idx, int) {
      const int64_t sl = idx / nqb, qb = idx % nqb, b = sl / sh.kv_heads, kh = sl % sh.kv_heads;
      const int nq = static_cast<int>(std::min<int64_t>(Bq, sh.q_len - qb * Bq));
      float* blk = dst + idx * qo_block();
      for (int g = 0; g < G; g++) {
        const int64_t src = ((b * sh.q_len + qb * Bq) * sh.heads + kh * G + g) * D;
        pack_rows(q + src, sh.heads * D, nq, D, Dp, blk + size_t(g) * nq * Dp);
        pack_rows(d_o + src, sh.heads * D, nq, D, Dp, blk + size_t(M + g * nq) * Dp);
      }
    });
  }

  size_t backward_scratch(float* base, float** parts) const {
    Carve cv{base};
    const size_t md = size_t(M) * Dp, kd = size_t(Bk) * Dp, mk_ = size_t(M) * Bk;
    const size_t sizes[] = {md, md, md, kd, kd, kd, kd, kd, mk_, mk_, size_t(Bq) * Bk, size_t(M), size_t(M)};
    for (int i = 0; i < 13; i++) parts[i] = cv.take(sizes[i]);
    return cv.used;
  }
};

// Normalises the rows of one query block (row r = head g of the group x query i, r = g * nq + i)
// into o and lse, or merges them into what o and lse hold (the ring step). O: unnormalised rows,
// mx: their base-2 max, sm: their sum of exp2(x - mx).
void finish_rows(const Plan& P, int64_t b, int64_t kh, int64_t q0, int nq, const float* O, int ldo, const float* mx,
                 const float* sm, float* o, float* lse, bool accumulate) {
  const int64_t H = P.sh.heads, Tq = P.sh.q_len;
  const int D = P.D;
  for (int g = 0; g < P.G; g++) {
    for (int i = 0; i < nq; i++) {
      const int r = g * nq + i;
      const int64_t h = kh * P.G + g;
      float* orow = o + ((b * Tq + q0 + i) * H + h) * D;
      float* L = lse + (b * H + h) * Tq + q0 + i;
      const float* a = O + size_t(r) * ldo;
      const double l = sm[r];
      const double lb = l > 0 ? (mx[r] + std::log2(l)) * kLn2 : -INFINITY;
      if (!accumulate || !(*L > -kInf)) {
        const float inv = l > 0 ? static_cast<float>(1 / l) : 0.f;
        for (int x = 0; x < D; x++) orow[x] = a[x] * inv;
        *L = static_cast<float>(lb);
      } else if (lb > -INFINITY) {
        // Ring merge of two normalised partials in max-shifted form (no exp overflow).
        const double la = *L, hi = std::max(la, lb), merged = hi + std::log1p(std::exp(-std::fabs(la - lb)));
        const float wa = static_cast<float>(std::exp(la - merged)), wb = static_cast<float>(std::exp(lb - merged) / l);
        for (int x = 0; x < D; x++) orow[x] = wa * orow[x] + wb * a[x];
        *L = static_cast<float>(merged);
      }
    }
  }
}

// One work item: query block qb of kv head kh in batch b, all G query heads of the group.
// kv: all key blocks packed (Plan::pack_kv_block), or null to pack each block here when this
// item is its only user (one query block with more rows than forward_decode takes, e.g. a short
// prompt), which saves a pass over the cache.
template <typename T>
void forward_item(const Plan& P, int64_t b, int64_t kh, int64_t qb, float* ws, const float* q, const T* k,
                  const T* v, const float* kv, float* o, float* lse, bool accumulate) {
  const AttentionShape& sh = P.sh;
  const Kernels& K = *P.kn;
  const int64_t H = sh.heads, Tq = sh.q_len, Tk = sh.kv_len, q0 = qb * P.Bq;
  const int D = P.D, Dp = P.Dp, G = P.G, Bk = P.Bk;
  const int nq = static_cast<int>(std::min<int64_t>(P.Bq, Tq - q0)), M = G * nq;
  const int Mp = (M + P.panel - 1) / P.panel * P.panel, ld = P.padded_rows();
  // Few query rows (a short last block): panels would be mostly padding, so take plain dot products.
  const bool dot = 2 * M <= P.panel;
  float* part[9];
  P.forward_scratch(ws, part);
  float *Qr = part[0], *Qt = part[1], *O = part[2], *St = part[3], *bias = part[4], *mx = part[5], *sm = part[6],
        *alpha = part[7], *own = part[8];

  for (int g = 0; g < G; g++) pack_rows(q + ((b * Tq + q0) * H + kh * G + g) * D, H * D, nq, D, Dp, Qr + size_t(g) * nq * Dp);
  if (!dot) pack_panels(Qr, Dp, M, Dp, Dp, P.panel, Mp / P.panel, Qt);
  else std::fill(St, St + size_t(Bk) * ld, 0.f);  // columns past M (no query) are read: keep them finite
  std::fill(O, O + size_t(M) * Dp, 0.f);
  std::fill(mx, mx + Mp, -kInf);
  std::fill(sm, sm + Mp, 0.f);

  const int64_t first = (b * sh.kv_heads + kh) * P.nkb;
  for (int64_t kb = 0; kb < P.nkb; kb++) {
    const Cls cls = P.classify(b, qb, kb);
    if (cls == kSkip) continue;
    const int nk = static_cast<int>(std::min<int64_t>(Bk, Tk - kb * Bk));
    if (!kv) P.pack_kv_block(k, v, first + kb, own);
    const float* Kr = kv ? kv + (first + kb) * P.kv_block() : own;
    const float* Vs = Kr + size_t(Bk) * Dp;
    if (dot) K.gemm_dot(nk, M, Dp, Kr, Dp, Qr, Dp, St, ld);
    else K.gemm_nt(nk, Mp / P.panel, Dp, Kr, Dp, Qt, St, ld);
    if (cls == kPartial) P.build_bias_t(b, qb, kb, M, ld, bias);
    K.softmax_step({St, ld, nk, Mp, cls == kPartial ? bias : nullptr, P.c, mx, sm, alpha, O, Dp, M, Dp});
    K.gemm_nn(M, nk, Dp, St, 1, ld, Vs, O, Dp);
  }

  finish_rows(P, b, kh, q0, nq, O, Dp, mx, sm, o, lse, accumulate);
}

// Decoding: one query block of at most kDecodeRows rows per kv head, so each key is used by one
// work item only. Streams K and V once, in place, and splits the visible keys of each batch row
// into fixed-size runs (work for every thread even at batch 1), whose partial softmax states merge
// by log-sum-exp. The runs do not depend on the thread count, and the merge goes in run order, so
// neither do the results (how heads are grouped into items changes nothing: heads are independent).
template <typename T>
void forward_decode(const Plan& P, const float* q, const T* k, const T* v, float* o, float* lse, bool accumulate) {
  constexpr bool bf16 = !std::is_same<T, float>::value;
  const AttentionShape& sh = P.sh;
  const Kernels& K = *P.kn;
  const int64_t B = sh.batch, Hkv = sh.kv_heads, H = sh.heads, Tq = sh.q_len, Tk = sh.kv_len;
  const int D = P.D, Dp = P.Dp, G = P.G, Bk = P.Bk, nq = static_cast<int>(Tq), M = G * nq, lds = P.decode_cols();
  const int64_t per = std::max(1, env_int("LWM_ATTN_SPLIT", 256) / Bk);  // key blocks per run

  // Runs of batch row b: key blocks [lo[b] + s * per, ...) up to hi[b]; at least one (possibly
  // empty) so that its rows get written.
  std::vector<int64_t> lo(B), hi(B), runs(B), first(B + 1, 0);
  int64_t total_runs = 0;
  size_t kv_bytes = 0;  // the K and V rows this call reads
  for (int64_t b = 0; b < B; b++) {
    lo[b] = P.next_block(b, 0, -1);
    hi[b] = lo[b];
    for (int64_t kb = lo[b]; kb < P.nkb; kb++) {
      if (P.classify(b, 0, kb) != kSkip) hi[b] = kb + 1;
    }
    runs[b] = std::max<int64_t>(1, (hi[b] - lo[b] + per - 1) / per);
    total_runs += runs[b];
    kv_bytes += size_t(hi[b] - lo[b]) * Bk * Hkv * D * 2 * sizeof(float);
  }
  // kv heads per item: whole rows (one stream) unless that leaves threads idle.
  int hc = P.decode_heads();
  const int64_t want = 2 * num_threads();
  if (total_runs * ((Hkv + hc - 1) / hc) < want) {
    const int64_t groups = std::min<int64_t>(Hkv, (want + total_runs - 1) / total_runs);
    hc = static_cast<int>(std::min<int64_t>(hc, (Hkv + groups - 1) / groups));
  }
  const int64_t ngroups = (Hkv + hc - 1) / hc;
  for (int64_t b = 0; b < B; b++) first[b + 1] = first[b] + runs[b] * ngroups;  // item first[b] + s * ngroups + group

  const size_t rows = size_t(hc) * M, pstride = (rows * Dp + 2 * rows + 15) / 16 * 16;
  const bool split = first[B] > B * ngroups;
  float* partial = split ? g_pack.get(first[B] * pstride) : nullptr;
  std::unique_ptr<std::atomic<int64_t>[]> done(split ? new std::atomic<int64_t>[B * ngroups]() : nullptr);

  parallel_for(first[B], [&](int64_t idx, int tid) {
    const int64_t b = std::upper_bound(first.begin(), first.end(), idx) - first.begin() - 1;
    const int64_t run = (idx - first[b]) / ngroups, grp = (idx - first[b]) % ngroups, h0 = grp * hc;
    const int heads = static_cast<int>(std::min<int64_t>(hc, Hkv - h0)), cols = heads * M;
    const int ncols = (cols + K.vec - 1) / K.vec * K.vec;
    // Software prefetch (DecodeStep) where it pays, measured: row spans of a few KiB are too short
    // for the hardware prefetchers to ramp up on, while from ~8 KiB on they stream well by
    // themselves and bursts of prefetches only got in their way; and keys that likely sit in cache
    // (a few MiB in all) only pay for the prefetch instructions. With it, a step's V and the next
    // step's K are fetched during the step, which must fit in L2 beside what is being read.
    const int span = heads * D * 4;
    const bool prefetch = !bf16 && D == Dp && span < 8192 && kv_bytes > (size_t(8) << 20);
    // bf16 keys and values are widened a step at a time into a buffer that stays in L1/L2.
    const int step = prefetch ? std::max(1, std::min(Bk, 65536 / span)) : bf16 ? std::max(1, std::min(Bk, 32768 / span)) : Bk;
    thread_local std::vector<float> wide;
    if (bf16) wide.resize(2 * size_t(step) * heads * Dp);
    float* part[9];
    P.decode_scratch(g_scratch[tid].p, part);
    float *Qr = part[0], *O = part[1], *S = part[2], *bias = part[3], *mx = part[4], *sm = part[5], *alpha = part[6],
          *Kp = part[7], *Vp = part[8];
    // Row c = h * M + g * nq + i: kv head h0 + h, query head (h0 + h) * G + g, query i.
    for (int h = 0; h < heads; h++) {
      for (int g = 0; g < G; g++) {
        pack_rows(q + (b * Tq * H + (h0 + h) * G + g) * D, H * D, nq, D, Dp, Qr + (size_t(h) * M + g * nq) * Dp);
      }
    }
    std::fill(O, O + size_t(cols) * Dp, 0.f);
    std::fill(mx, mx + ncols, -kInf);
    std::fill(sm, sm + ncols, 0.f);

    const int64_t kb_end = std::min(hi[b], lo[b] + (run + 1) * per);
    for (int64_t kb = lo[b] + run * per; kb < kb_end; kb++) {
      const Cls cls = P.classify(b, 0, kb);
      if (cls == kSkip) continue;
      const int64_t k0 = kb * Bk;
      int nk = static_cast<int>(std::min<int64_t>(Bk, Tk - k0));
      if (cls == kPartial) {
        P.build_bias_t(b, 0, kb, cols, lds, bias);
        // Keys past the last visible one are not read at all: in a KV cache they may be rows
        // not written yet, and 0 * NaN would leak into o.
        while (nk > 0) {
          const float* row = bias + size_t(nk - 1) * lds;
          if (std::any_of(row, row + nq, [](float x) { return x == 0.f; })) break;
          nk--;
        }
        if (nk == 0) continue;
      }
      const T* kt = k + ((b * Tk + k0) * Hkv + h0) * D;
      const T* vt = v + ((b * Tk + k0) * Hkv + h0) * D;
      const int64_t ldt = Hkv * D;
      if (bf16) {
        // Rows of `heads` heads widened to [n][heads][Dp] (zero-padded head dims), a step at a time.
        float *Kw = wide.data(), *Vw = Kw + size_t(step) * heads * Dp;
        for (int j0 = 0; j0 < nk; j0 += step) {
          const int n = std::min(step, nk - j0);
          for (int j = 0; j < n; j++) {
            pack_rows(kt + (j0 + j) * ldt, D, heads, D, Dp, Kw + size_t(j) * heads * Dp);
            pack_rows(vt + (j0 + j) * ldt, D, heads, D, Dp, Vw + size_t(j) * heads * Dp);
          }
          K.decode_step({Kw, Vw, int64_t(heads) * Dp, Dp, heads, n, Qr, M, Dp, S, lds, ncols,
                         cls == kPartial ? bias + size_t(j0) * lds : nullptr, P.c, mx, sm, alpha, O, false, nullptr, 0});
        }
        continue;
      }
      const float* kr = reinterpret_cast<const float*>(kt);
      const float* vr = reinterpret_cast<const float*>(vt);
      int64_t ld = ldt;
      const bool packed = D != Dp;
      if (packed) {  // in place, the last row's padded vector could run past the buffer
        pack_rows(kr, ld, nk, D, Dp, Kp);
        pack_rows(vr, ld, nk, D, Dp, Vp);
        kr = Kp, vr = Vp, ld = Dp;
      }
      const bool more = !packed && kb + 1 < kb_end && P.classify(b, 0, kb + 1) != kSkip;
      for (int j0 = 0; j0 < nk; j0 += step) {
        const int n = std::min(step, nk - j0);
        const float* next_k = nullptr;
        int next_nk = 0;
        if (j0 + n < nk) next_k = kr + (j0 + n) * ld, next_nk = std::min(step, nk - j0 - n);
        else if (more) next_k = kr + int64_t(Bk) * ld, next_nk = static_cast<int>(std::min<int64_t>(step, Tk - k0 - Bk));
        K.decode_step({kr + j0 * ld, vr + j0 * ld, ld, D, heads, n, Qr, M, Dp, S, lds, ncols,
                       cls == kPartial ? bias + size_t(j0) * lds : nullptr, P.c, mx, sm, alpha, O, prefetch, next_k, next_nk});
      }
    }

    if (split && runs[b] > 1) {
      float* mine = partial + idx * pstride;
      std::memcpy(mine, O, size_t(cols) * Dp * sizeof(float));
      std::memcpy(mine + rows * Dp, mx, cols * sizeof(float));
      std::memcpy(mine + rows * Dp + rows, sm, cols * sizeof(float));
      // The last run to finish merges them all, in run order.
      if (done[b * ngroups + grp].fetch_add(1, std::memory_order_acq_rel) + 1 != runs[b]) return;
      for (int r = 0; r < cols; r++) {
        float top = -kInf;
        for (int64_t s = 0; s < runs[b]; s++) top = std::max(top, partial[(first[b] + s * ngroups + grp) * pstride + rows * Dp + r]);
        float* orow = O + size_t(r) * Dp;
        std::fill(orow, orow + Dp, 0.f);
        float l = 0;
        if (top > -kInf) {
          for (int64_t s = 0; s < runs[b]; s++) {
            const float* ps = partial + (first[b] + s * ngroups + grp) * pstride;
            const float w = std::exp2(ps[rows * Dp + r] - top);  // 0 for a run that saw nothing
            if (w == 0.f) continue;
            l += w * ps[rows * Dp + rows + r];
            const float* pr = ps + size_t(r) * Dp;
            for (int x = 0; x < Dp; x++) orow[x] += w * pr[x];
          }
        }
        mx[r] = top;
        sm[r] = l;
      }
    }
    for (int h = 0; h < heads; h++) finish_rows(P, b, h0 + h, 0, nq, O + size_t(h) * M * Dp, Dp, mx + h * M, sm + h * M, o, lse, accumulate);
  });
}

struct Backward {
  const Plan& P;
  const float *k, *v, *qo;        // qo: packed Q and dO blocks (Plan::pack_qo)
  const float *lse2, *drow;     // [B][H][Tq]
  float *dq, *dk, *dv;
  bool acc_dkv;
  std::atomic<int64_t>* turn;   // [B][Hkv][nqb]: the key block allowed to add into dq next

  // One work item: key block kb of kv head kh in batch b. It owns that block's dK/dV; its dQ
  // contributions go in ascending kb order per query block, so dq is deterministic.
  void item(int64_t b, int64_t kh, int64_t kb, float* ws) const {
    const AttentionShape& sh = P.sh;
    const Kernels& K = *P.kn;
    const int64_t H = sh.heads, Hkv = sh.kv_heads, Tq = sh.q_len, Tk = sh.kv_len, k0 = kb * P.Bk;
    const int D = P.D, Dp = P.Dp, G = P.G, Bk = P.Bk;
    const int nk = static_cast<int>(std::min<int64_t>(Bk, Tk - k0));
    const int npan = (nk + P.panel - 1) / P.panel, ncols = npan * P.panel;
    float* part[13];
    P.backward_scratch(ws, part);
    float *Qs = part[0], *dOs = part[1], *dQt = part[2], *Kt = part[3], *Ks = part[4], *Vt = part[5], *dK = part[6],
          *dV = part[7], *S = part[8], *dP = part[9], *bias = part[10], *L2 = part[11], *Dr = part[12];
    const int64_t src = ((b * Tk + k0) * Hkv + kh) * D;
    pack_panels(k + src, Hkv * D, nk, D, Dp, P.panel, npan, Kt);
    pack_slices(k + src, Hkv * D, nk, D, Dp, P.panel, Ks, nk, 0);
    pack_panels(v + src, Hkv * D, nk, D, Dp, P.panel, npan, Vt);
    std::fill(dK, dK + size_t(nk) * Dp, 0.f);
    std::fill(dV, dV + size_t(nk) * Dp, 0.f);

    // Descending query blocks: items start in ascending kb order and move at the same pace, so
    // the item owning the previous turn of a query block is normally already past it.
    for (int64_t qb = P.nqb - 1; qb >= 0; qb--) {
      const Cls cls = P.classify(b, qb, kb);
      if (cls == kSkip) continue;
      const int64_t q0 = qb * P.Bq;
      const int nq = static_cast<int>(std::min<int64_t>(P.Bq, Tq - q0)), M = G * nq;
      const float* Qr = qo + ((b * Hkv + kh) * P.nqb + qb) * P.qo_block();
      const float* dOr = Qr + size_t(P.M) * Dp;
      pack_slices(Qr, Dp, M, Dp, Dp, P.panel, Qs, M, 0);
      pack_slices(dOr, Dp, M, Dp, Dp, P.panel, dOs, M, 0);
      for (int g = 0; g < G; g++) {
        const int64_t h = kh * G + g;
        std::memcpy(L2 + g * nq, lse2 + (b * H + h) * Tq + q0, nq * sizeof(float));
        std::memcpy(Dr + g * nq, drow + (b * H + h) * Tq + q0, nq * sizeof(float));
      }
      K.gemm_nt(M, npan, Dp, Qr, Dp, Kt, S, Bk);
      K.gemm_nt(M, npan, Dp, dOr, Dp, Vt, dP, Bk);
      if (cls == kPartial) P.build_bias(b, qb, kb, ncols, bias);
      K.grad_step({S, dP, Bk, M, ncols, cls == kPartial ? bias : nullptr, nq, P.c, L2, Dr, P.scale});
      K.gemm_nn(nk, M, Dp, S, 1, Bk, dOs, dV, Dp);   // dV += P^T dO
      K.gemm_nn(nk, M, Dp, dP, 1, Bk, Qs, dK, Dp);   // dK += dS^T Q
      std::fill(dQt, dQt + size_t(M) * Dp, 0.f);
      K.gemm_nn(M, nk, Dp, dP, Bk, 1, Ks, dQt, Dp);  // dQ block = dS K

      std::atomic<int64_t>& t = turn[(b * Hkv + kh) * P.nqb + qb];
      for (int spins = 0; t.load(std::memory_order_acquire) != kb; spins++) {
        if (spins > 100) std::this_thread::yield();
        else __builtin_ia32_pause();
      }
      for (int g = 0; g < G; g++) {
        for (int i = 0; i < nq; i++) {
          float* row = dq + ((b * Tq + q0 + i) * H + kh * G + g) * D;
          const float* a = dQt + size_t(g * nq + i) * Dp;
          for (int x = 0; x < D; x++) row[x] += a[x];
        }
      }
      t.store(P.next_block(b, qb, kb), std::memory_order_release);
    }

    for (int j = 0; j < nk; j++) {
      float* krow = dk + src + int64_t(j) * Hkv * D;
      float* vrow = dv + src + int64_t(j) * Hkv * D;
      const float *a = dK + size_t(j) * Dp, *bb = dV + size_t(j) * Dp;
      if (acc_dkv) {
        for (int x = 0; x < D; x++) krow[x] += a[x], vrow[x] += bb[x];
      } else {
        std::memcpy(krow, a, D * sizeof(float));
        std::memcpy(vrow, bb, D * sizeof(float));
      }
    }
  }
};

bool empty(const AttentionShape& s) { return s.batch <= 0 || s.q_len <= 0 || s.heads <= 0 || s.head_dim <= 0; }

template <typename T>
void forward_any(const AttentionShape& shape, const AttentionMask& mask, float scale, const float* q, const T* k,
                 const T* v, float* o, float* lse, bool accumulate) {
  if (empty(shape)) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  const Plan P(shape, mask, scale);
  if (P.decode()) {
    float* parts[9];
    reserve_scratch(P.decode_scratch(nullptr, parts));
    forward_decode(P, q, k, v, o, lse, accumulate);
    g_pack.trim();
    return;
  }
  float* parts[9];
  reserve_scratch(P.forward_scratch(nullptr, parts));
  float* kv = nullptr;
  if (P.nqb > 1) {
    const int64_t blocks = shape.batch * shape.kv_heads * P.nkb;
    kv = g_pack.get(blocks * P.kv_block());
    parallel_for(blocks, [&](int64_t idx, int) { P.pack_kv_block(k, v, idx, kv + idx * P.kv_block()); });
  }
  // One (batch, kv head) after another, so the threads share its K/V blocks in cache; within
  // it the largest causal items (the last query blocks) first.
  parallel_for(shape.batch * shape.kv_heads * P.nqb, [&](int64_t idx, int tid) {
    const int64_t sl = idx / P.nqb, qb = P.nqb - 1 - idx % P.nqb;
    forward_item(P, sl / shape.kv_heads, sl % shape.kv_heads, qb, g_scratch[tid].p, q, k, v, kv, o, lse, accumulate);
  });
  g_pack.trim();
}

}  // namespace

void attention_forward(const AttentionShape& shape, const AttentionMask& mask, float scale, const float* q,
                       const float* k, const float* v, float* o, float* lse, bool accumulate) {
  forward_any(shape, mask, scale, q, k, v, o, lse, accumulate);
}

void attention_forward_bf16kv(const AttentionShape& shape, const AttentionMask& mask, float scale, const float* q,
                              const uint16_t* k, const uint16_t* v, float* o, float* lse, bool accumulate) {
  forward_any(shape, mask, scale, q, k, v, o, lse, accumulate);
}

void attention_backward(const AttentionShape& shape, const AttentionMask& mask, float scale, const float* q,
                        const float* k, const float* v, const float* o, const float* d_o, const float* lse,
                        const float* d_lse, float* dq, float* dk, float* dv, bool accumulate_dq,
                        bool accumulate_dkv) {
  if (empty(shape)) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  const Plan P(shape, mask, scale);
  float* parts[13];
  reserve_scratch(P.backward_scratch(nullptr, parts));
  const int64_t B = shape.batch, Tq = shape.q_len, H = shape.heads, Hkv = shape.kv_heads, D = shape.head_dim;
  // Every key block is an item (also those no query sees), so dk/dv need no zeroing here.

  // Per row: lse in base 2 (+inf for rows without keys, so exp2 gives p = 0) and
  // D = rowsum(dO * O) - dLse (the lse gradient folds into the same term).
  std::vector<float> lse2(B * H * Tq), drow(B * H * Tq);
  parallel_for(B * Tq, [&](int64_t row, int) {
    const int64_t b = row / Tq, i = row % Tq;
    for (int64_t h = 0; h < H; h++) {
      const int64_t idx = (b * H + h) * Tq + i, off = (row * H + h) * D;
      lse2[idx] = lse[idx] > -kInf ? static_cast<float>(lse[idx] * kLog2e) : kInf;
      double acc = 0;
      for (int64_t x = 0; x < D; x++) acc += double(d_o[off + x]) * o[off + x];
      drow[idx] = static_cast<float>(acc - (d_lse && lse[idx] > -kInf ? d_lse[idx] : 0.f));
      if (!accumulate_dq) std::fill(dq + off, dq + off + D, 0.f);
    }
  });

  std::unique_ptr<std::atomic<int64_t>[]> turn(new std::atomic<int64_t>[B * Hkv * P.nqb]);
  for (int64_t b = 0; b < B; b++) {
    for (int64_t qb = 0; qb < P.nqb; qb++) {
      const int64_t first = P.next_block(b, qb, -1);
      for (int64_t kh = 0; kh < Hkv; kh++) turn[(b * Hkv + kh) * P.nqb + qb].store(first);
    }
  }
  float* qo = g_pack.get(B * Hkv * P.nqb * P.qo_block());
  P.pack_qo(q, d_o, qo);
  const Backward bw{P, k, v, qo, lse2.data(), drow.data(), dq, dk, dv, accumulate_dkv, turn.get()};
  // Ascending kb within each (batch, kv head): an item only ever waits for smaller kb, which
  // were handed out earlier and are running, so the turns cannot deadlock.
  parallel_for(B * Hkv * P.nkb, [&](int64_t idx, int tid) {
    const int64_t sl = idx / P.nkb, kb = idx % P.nkb;
    bw.item(sl / Hkv, sl % Hkv, kb, g_scratch[tid].p);
  });
  g_pack.trim();
}

}  // namespace lwm
