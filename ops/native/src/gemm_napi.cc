// N-API bindings of the GEMM: typed arrays in place (no copies), checked extents, outputs in
// new_f32 memory.
#include <napi.h>

#include <string>
#include <vector>

#include "cpu.h"
#include "gemm.h"
#include "napi_util.h"
#include "threadpool.h"

namespace lwm {
namespace {

[[noreturn]] void range_error(Napi::Env env, const std::string& what) { throw Napi::RangeError::New(env, what); }

bool bool_arg(const Napi::CallbackInfo& info, size_t i) { return i < info.Length() && info[i].ToBoolean().Value(); }

// Element offsets of each batch item: idx[i] * item (idx null: i), all inside `len`.
std::vector<int64_t> batch_offsets(Napi::Env env, const Napi::Value& idx_v, int64_t batch, int64_t item, size_t len,
                                   const char* what) {
  const int32_t* idx = i32_or_null(idx_v, what);
  if (idx && static_cast<int64_t>(length_of(idx_v)) < batch) range_error(env, std::string(what) + " is shorter than the batch");
  std::vector<int64_t> off(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; i++) {
    const int64_t b = idx ? idx[i] : i;
    if (item > 0 && (b < 0 || (b + 1) * item > static_cast<int64_t>(len))) {
      range_error(env, std::string(what) + ": batch item " + std::to_string(b) + " is outside its array");
    }
    off[static_cast<size_t>(i)] = b * item;
  }
  return off;
}

// A broadcast operand of the epilogue (bias, prelu weights): per-item offsets plus row and
// column strides, all reads inside the array.
const float* epilogue_operand(Napi::Env env, const Napi::CallbackInfo& info, size_t at, int64_t batch, int64_t m,
                              int64_t n, std::vector<int64_t>& off, int64_t& sm, int64_t& sn, const char* what) {
  const float* data = f32_or_null(info[at], what);
  if (!data) return nullptr;
  const int64_t len = static_cast<int64_t>(length_of(info[at]));
  const int32_t* idx = i32_or_null(info[at + 1], what);
  sm = int_arg(info, at + 2, what);
  sn = int_arg(info, at + 3, what);
  if (idx && static_cast<int64_t>(length_of(info[at + 1])) < batch) range_error(env, std::string(what) + " offsets are shorter than the batch");
  if (sm < 0 || sn < 0) range_error(env, std::string(what) + " strides must be >= 0");
  off.resize(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; i++) {
    const int64_t o = idx ? idx[i] : 0;
    if (o < 0 || o + (m - 1) * sm + (n - 1) * sn >= len) range_error(env, std::string(what) + " reads outside its array");
    off[static_cast<size_t>(i)] = o;
  }
  return data;
}

// matmul(a, b, batch, M, N, K, transA, transB, aIdx, bIdx,
//        [bias, biasOff, biasSM, biasSN, act, leakyAlpha, prelu, preluOff, preluSM, preluSN])
// -> Float32Array[batch * M * N]. a holds [*, M, K] items ([*, K, M] when transA), b [*, K, N]
// ([*, N, K] when transB); item i uses a's item aIdx[i] and b's item bIdx[i] (null: i).
Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const float* a = f32(info[0], "a");
  const float* b = f32(info[1], "b");
  const int64_t batch = int_arg(info, 2, "batch"), m = int_arg(info, 3, "M"), n = int_arg(info, 4, "N"), k = int_arg(info, 5, "K");
  if (batch < 0 || m < 0 || n < 0 || k < 0) range_error(env, "matmul: negative dimension");
  GemmBatch g;
  g.trans_a = bool_arg(info, 6), g.trans_b = bool_arg(info, 7);
  g.batch = batch, g.m = m, g.n = n, g.k = k;
  const std::vector<int64_t> aoff = batch_offsets(env, info[8], batch, m * k, length_of(info[0]), "aIdx");
  const std::vector<int64_t> boff = batch_offsets(env, info[9], batch, k * n, length_of(info[1]), "bIdx");
  g.a = a, g.lda = g.trans_a ? m : k, g.a_off = aoff.data();
  g.b = b, g.ldb = g.trans_b ? k : n, g.b_off = boff.data();
  std::vector<int64_t> bias_off, prelu_off;
  if (info.Length() > 10 && batch > 0 && m > 0 && n > 0) {
    g.ep.bias = epilogue_operand(env, info, 10, batch, m, n, bias_off, g.ep.bias_sm, g.ep.bias_sn, "bias");
    g.ep.bias_off = g.ep.bias ? bias_off.data() : nullptr;
    const int64_t act = info.Length() > 14 ? int_arg(info, 14, "act") : 0;
    if (act < 0 || act > static_cast<int64_t>(Act::kSigmoid)) range_error(env, "matmul: unknown activation");
    g.ep.act = static_cast<Act>(act);
    if (info.Length() > 15 && info[15].IsNumber()) g.ep.leaky_alpha = info[15].As<Napi::Number>().DoubleValue();
    if (g.ep.act == Act::kPrelu) {
      g.ep.prelu = epilogue_operand(env, info, 16, batch, m, n, prelu_off, g.ep.prelu_sm, g.ep.prelu_sn, "prelu");
      if (!g.ep.prelu) range_error(env, "matmul: prelu needs its weights");
      g.ep.prelu_off = prelu_off.data();
    }
  }
  Napi::Float32Array out = new_f32(env, static_cast<size_t>(batch * m * n));
  g.c = out.Data(), g.ldc = n, g.stride_c = m * n;
  sgemm_batched(g);
  return out;
}

// Extent of a row-major rows x cols matrix with row stride ld.
void check_matrix(Napi::Env env, const Napi::Value& v, int64_t rows, int64_t cols, int64_t ld, const char* what) {
  if (rows == 0 || cols == 0) return;
  if (ld < cols || (rows - 1) * ld + cols > static_cast<int64_t>(length_of(v))) {
    range_error(env, std::string("sgemm: ") + what + " is too short for its shape and leading dimension");
  }
}

// sgemm(transA, transB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc): BLAS-style, in place on c.
Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool ta = bool_arg(info, 0), tb = bool_arg(info, 1);
  const int64_t m = int_arg(info, 2, "M"), n = int_arg(info, 3, "N"), k = int_arg(info, 4, "K");
  if (m < 0 || n < 0 || k < 0) range_error(env, "sgemm: negative dimension");
  const float alpha = static_cast<float>(info[5].As<Napi::Number>().DoubleValue());
  const float* a = f32(info[6], "a");
  const int64_t lda = int_arg(info, 7, "lda");
  const float* b = f32(info[8], "b");
  const int64_t ldb = int_arg(info, 9, "ldb");
  const float beta = static_cast<float>(info[10].As<Napi::Number>().DoubleValue());
  float* c = f32(info[11], "c");
  const int64_t ldc = int_arg(info, 12, "ldc");
  if (k > 0) {
    check_matrix(env, info[6], ta ? k : m, ta ? m : k, lda, "a");
    check_matrix(env, info[8], tb ? n : k, tb ? k : n, ldb, "b");
  }
  check_matrix(env, info[11], m, n, ldc, "c");
  sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  return env.Undefined();
}

Napi::Value Blocking(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const GemmBlocking bl = gemm_blocking();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", isa_name(active_isa()));
  o.Set("mr", bl.mr);
  o.Set("nr", bl.nr);
  o.Set("mc", bl.mc);
  o.Set("kc", bl.kc);
  o.Set("nc", bl.nc);
  return o;
}

}  // namespace

void InitGemm(Napi::Env env, Napi::Object exports) {
  // Starts the pool's workers now, long before the first product: a job posted while a worker
  // thread has not yet run (a fresh pool) can wait forever (threadpool.cc reads the generation
  // inside the new thread).
  (void)num_threads();
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("sgemm", Napi::Function::New(env, Sgemm));
  exports.Set("gemmBlocking", Napi::Function::New(env, Blocking));
}

}  // namespace lwm
