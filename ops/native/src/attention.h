// Fused blockwise attention (FlashAttention-2 style) on [B, T, H, D] tensors, forward and
// backward, with the ring merge ("accumulate") that RingAttention needs for one ring step.
#pragma once
#include <cstdint>

namespace lwm {

// q: [B, Tq, H, D]; k, v: [B, Tk, Hkv, D]; H a multiple of Hkv (query head h reads kv head
// h / (H / Hkv)).
struct AttentionShape {
  int64_t batch = 1, q_len = 0, kv_len = 0, heads = 1, kv_heads = 1, head_dim = 1;
};

// Key j is visible to query i iff (not causal or kPos[j] <= qPos[i]) and key_valid[j] and
// q_seg[i] == k_seg[j]. Positions are absolute token positions, so one call can be one ring step
// of any layout (contiguous, striped, zigzag).
struct AttentionMask {
  bool causal = true;
  int64_t query_offset = 0;               // qPos[i] = query_offset + i when q_pos is null
  const int32_t* q_pos = nullptr;         // [B, Tq] (batch stride Tq) or [Tq] (batch stride 0)
  int64_t q_pos_batch_stride = 0;
  const int32_t* k_pos = nullptr;         // kPos[j] = j when null; layout as q_pos
  int64_t k_pos_batch_stride = 0;
  const uint8_t* key_valid = nullptr;     // [B, Tk], 0 = padding; null = all valid
  const int32_t* q_seg = nullptr;         // [B, Tq]; segments are used only when both are set
  const int32_t* k_seg = nullptr;         // [B, Tk]
};

// o: [B, Tq, H, D]; lse: [B, H, Tq], natural-log log-sum-exp of the scaled, masked scores.
// A query with no visible key gets o = 0 and lse = -inf. With accumulate, (o, lse) already hold
// the result over other keys and this call merges its keys in by log-sum-exp (the ring step).
void attention_forward(const AttentionShape& shape, const AttentionMask& mask, float scale, const float* q,
                       const float* k, const float* v, float* o, float* lse, bool accumulate);

// The same with keys and values stored as bf16 (the top 16 bits of float32), e.g. a bf16 KV
// cache: widened to float32 as they are read (results match attention_forward on the widened
// arrays to float rounding: the decode path takes keys in smaller steps).
void attention_forward_bf16kv(const AttentionShape& shape, const AttentionMask& mask, float scale, const float* q,
                              const uint16_t* k, const uint16_t* v, float* o, float* lse, bool accumulate);

// Gradients of (o, lse) given the final o and lse (over all keys, for a ring: the global ones),
// d_o [B, Tq, H, D] and d_lse [B, H, Tq] (may be null). dq: [B, Tq, H, D]; dk, dv: [B, Tk, Hkv, D]
// (summed over the query heads of a group). accumulate_dq / accumulate_dkv add to the arrays'
// contents instead of overwriting them. Deterministic: the result does not depend on the thread
// count or scheduling.
void attention_backward(const AttentionShape& shape, const AttentionMask& mask, float scale, const float* q,
                        const float* k, const float* v, const float* o, const float* d_o, const float* lse,
                        const float* d_lse, float* dq, float* dk, float* dv, bool accumulate_dq,
                        bool accumulate_dkv);

// ---- Internal: the per-ISA building blocks the blocked driver (attention.cc) calls. ----
// Blocks: 64 keys by 64/G queries of each of the G heads of a kv group (LWM_ATTN_BK and
// LWM_ATTN_BQ override them, for tuning).
namespace attn {

// One (query block x key block) step of the online softmax, on the transposed score tile: a row
// per key, a column per query row (all heads of a kv group), so the running max and sum are
// plain vertical vector operations. Logits are base 2: x = s * c + bias, c = scale * log2(e).
struct SoftmaxStep {
  float* s;             // [nk][ld]: raw q.k in, exp2(x - running max) out
  int ld, nk, ncols;    // ncols: a multiple of the vector width, <= ld
  const float* bias;    // [nk][ld] additive 0 / -inf mask, or null
  float c;
  float* col_max;       // [ncols] running max of x (-inf before any visible key)
  float* col_sum;       // [ncols] running sum of exp2(x - col_max)
  float* alpha;         // [ncols] scratch: the rescale factor of this step
  float* o;             // [m][ldo] running unnormalised output rows, rescaled when the max grows
  int ldo, m, dp;
};

// Backward probabilities and score gradients of one block (a row per query, a column per key):
// p = exp2(s*c + bias - lse2), ds = p * (dp - drow) * scale, written over s and dp.
struct GradStep {
  float* s;
  float* dp;
  int ld, m, ncols;
  const float* bias;
  int nq;
  float c;
  const float* lse2;    // [m] lse * log2(e); +inf for rows without visible keys (p = 0)
  const float* drow;    // [m] rowsum(dO * O) - dLse
  float scale;
};

// One key block of the decode path: few query rows per kv head (decoding) against keys read where
// they lie in the [B, Tk, Hkv, D] cache. Decoding reads each key once, so a packed copy would only
// add a pass over the cache; and the rows are walked in memory order, all heads of a key row
// before the next row, because the hardware prefetchers follow that stream but not one head's
// rows Hkv*D floats apart (measured: ~2x the bandwidth). Scores are kept as in SoftmaxStep, a
// row per key and a column per (head, query row), c = h * m + r, so each row of the block is one
// pass over its heads and the softmax stays vertical.
struct DecodeStep {
  const float* k;       // key j of head h at k + j * ld + h * hs, likewise v; dp floats readable there
  const float* v;
  int64_t ld;
  int hs;
  int heads, nk;        // kv heads, keys
  const float* q;       // [heads * m][dp] query rows, row c = h * m + r
  int m, dp;
  float* s;             // [nk][lds] scratch, lds >= ncols
  int lds, ncols;       // ncols: heads * m rounded up to the vector width
  const float* bias;    // [nk][lds] additive 0 / -inf per key and column, or null
  float c;
  float* col_max;       // [ncols], as in SoftmaxStep
  float* col_sum;
  float* alpha;
  float* o;             // [heads * m][dp] running unnormalised output rows
  bool prefetch;        // software prefetch: this step's V rows and next_k's rows, during this step
  const float* next_k;  // the next step's K rows (same layout), or null
  int next_nk;
};

struct Kernels {
  int vec;    // floats per vector; head dims are zero-padded to a multiple of it
  int panel;  // width of packed panels (Q^T, K^T, V^T) and column slices: a multiple of vec dividing 32
  // c[r][n] = sum_d a[r][d] * B[n][d] for n < npanels*panel, B packed as panels [p][dp][panel].
  void (*gemm_nt)(int m, int npanels, int dp, const float* a, int lda, const float* bp, float* c, int ldc);
  // c[j][r] = sum_d a[j][d] * b[r][d] for j < n, r < m: few query rows (decoding), no packing.
  void (*gemm_dot)(int n, int m, int dp, const float* a, int lda, const float* b, int ldb, float* c, int ldc);
  // c[r][x] += sum_k a[r*ais + k*aks] * b(k, x) for x < dp (a multiple of vec); b in column slices
  // of width panel (the last one narrower): slice x0 is [kdim][w] at b + x0 * kdim.
  void (*gemm_nn)(int m, int kdim, int dp, const float* a, int64_t ais, int64_t aks, const float* b, float* c,
                  int ldc);
  void (*softmax_step)(const SoftmaxStep& a);
  void (*grad_step)(const GradStep& a);
  void (*decode_step)(const DecodeStep& a);
};

const Kernels& kernels_scalar();
const Kernels& kernels_avx2();
const Kernels& kernels_avx512();

}  // namespace attn
}  // namespace lwm
