// N-API bindings of the fused attention:
//   attentionForward(q, k, v, o|null, lse|null, shape, opts) -> [o, lse]   (k, v: Float32Array, or Uint16Array bf16)
//   attentionBackward(q, k, v, o, dO, lse, dLse|null, dq|null, dk|null, dv|null, shape, opts) -> [dq, dk, dv]
// shape = [B, Tq, Tk, H, Hkv, D]; opts = {causal, scale, queryOffset, qPos, kPos, keyMask, qSeg, kSeg,
// accumulate (forward), accumulateDq, accumulateDkv (backward)}. Null outputs are allocated
// (huge-page native memory); given ones are written in place, which the ring's accumulate needs.
#include <napi.h>

#include <cmath>
#include <exception>
#include <string>
#include <vector>

#include "attention.h"
#include "napi_util.h"

namespace lwm {
namespace {

struct Args {
  AttentionShape shape;
  AttentionMask mask;
  float scale = 1;
  std::vector<uint8_t> key_valid;  // keyMask > 0, whatever the typed array it came in
};

[[noreturn]] void fail(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }

void check_len(Napi::Env env, const Napi::Value& v, size_t want, const char* what) {
  if (length_of(v) != want) {
    fail(env, std::string(what) + " has " + std::to_string(length_of(v)) + " elements, expected " + std::to_string(want));
  }
}

Napi::Value get(const Napi::Object& o, const char* key) { return o.Has(key) ? o.Get(key) : o.Env().Undefined(); }
bool absent(const Napi::Value& v) { return v.IsUndefined() || v.IsNull(); }

// Positions are [T] (shared by the batch) or [B, T].
const int32_t* positions(Napi::Env env, const Napi::Value& v, int64_t batch, int64_t len, int64_t* batch_stride, const char* what) {
  if (absent(v)) return nullptr;
  const int32_t* p = i32(v, what);
  const size_t n = length_of(v);
  if (n == static_cast<size_t>(len)) *batch_stride = 0;
  else if (n == static_cast<size_t>(batch * len)) *batch_stride = len;
  else fail(env, std::string(what) + " has " + std::to_string(n) + " elements, expected " + std::to_string(len) + " or " + std::to_string(batch * len));
  return p;
}

Args parse(const Napi::CallbackInfo& info, size_t shape_at) {
  Napi::Env env = info.Env();
  Args a;
  if (shape_at >= info.Length() || !info[shape_at].IsArray()) fail(env, "shape must be [B, Tq, Tk, H, Hkv, D]");
  Napi::Array s = info[shape_at].As<Napi::Array>();
  if (s.Length() != 6) fail(env, "shape must be [B, Tq, Tk, H, Hkv, D]");
  int64_t d[6];
  for (uint32_t i = 0; i < 6; i++) {
    Napi::Value x = s.Get(i);
    if (!x.IsNumber() || x.As<Napi::Number>().Int64Value() < 0) fail(env, "shape entries must be non-negative integers");
    d[i] = x.As<Napi::Number>().Int64Value();
  }
  a.shape = {d[0], d[1], d[2], d[3], d[4], d[5]};
  if (d[4] < 1 || d[5] < 1 || d[3] % d[4] != 0) fail(env, "need Hkv >= 1, D >= 1 and H a multiple of Hkv");

  Napi::Object o = shape_at + 1 < info.Length() && info[shape_at + 1].IsObject() ? info[shape_at + 1].As<Napi::Object>() : Napi::Object::New(env);
  Napi::Value causal = get(o, "causal"), scale = get(o, "scale"), offset = get(o, "queryOffset");
  a.mask.causal = absent(causal) ? true : causal.ToBoolean().Value();
  a.scale = absent(scale) ? static_cast<float>(1 / std::sqrt(static_cast<double>(d[5]))) : scale.ToNumber().FloatValue();
  a.mask.query_offset = absent(offset) ? d[2] - d[1] : offset.ToNumber().Int64Value();
  a.mask.q_pos = positions(env, get(o, "qPos"), d[0], d[1], &a.mask.q_pos_batch_stride, "qPos");
  a.mask.k_pos = positions(env, get(o, "kPos"), d[0], d[2], &a.mask.k_pos_batch_stride, "kPos");

  Napi::Value km = get(o, "keyMask");
  if (!absent(km)) {
    if (!km.IsTypedArray()) fail(env, "keyMask must be a typed array [B, Tk]");
    check_len(env, km, d[0] * d[2], "keyMask");
    a.key_valid.resize(d[0] * d[2]);
    const napi_typedarray_type type = km.As<Napi::TypedArray>().TypedArrayType();
    if (type == napi_float32_array) {
      const float* m = km.As<Napi::Float32Array>().Data();
      for (size_t i = 0; i < a.key_valid.size(); i++) a.key_valid[i] = m[i] > 0;
    } else if (type == napi_int32_array) {
      const int32_t* m = km.As<Napi::Int32Array>().Data();
      for (size_t i = 0; i < a.key_valid.size(); i++) a.key_valid[i] = m[i] > 0;
    } else if (type == napi_uint8_array) {
      const uint8_t* m = km.As<Napi::Uint8Array>().Data();
      for (size_t i = 0; i < a.key_valid.size(); i++) a.key_valid[i] = m[i] > 0;
    } else {
      fail(env, "keyMask must be a Float32Array, Int32Array or Uint8Array");
    }
    a.mask.key_valid = a.key_valid.data();
  }
  Napi::Value qs = get(o, "qSeg"), ks = get(o, "kSeg");
  if (absent(qs) != absent(ks)) fail(env, "qSeg and kSeg go together");
  if (!absent(qs)) {
    a.mask.q_seg = i32(qs, "qSeg");
    a.mask.k_seg = i32(ks, "kSeg");
    check_len(env, qs, d[0] * d[1], "qSeg");
    check_len(env, ks, d[0] * d[2], "kSeg");
  }
  return a;
}

// An output given by the caller (checked) or a fresh one.
Napi::Float32Array output(Napi::Env env, const Napi::Value& v, size_t n, const char* what) {
  if (absent(v)) return new_f32(env, n);
  f32(v, what);
  check_len(env, v, n, what);
  return v.As<Napi::Float32Array>();
}

const float* input(Napi::Env env, const Napi::Value& v, size_t n, const char* what) {
  const float* p = f32(v, what);
  check_len(env, v, n, what);
  return p;
}

bool flag(const Napi::CallbackInfo& info, size_t opts_at, const char* key) {
  if (opts_at >= info.Length() || !info[opts_at].IsObject()) return false;
  Napi::Value v = get(info[opts_at].As<Napi::Object>(), key);
  return !absent(v) && v.ToBoolean().Value();
}

Napi::Value Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 6) fail(env, "attentionForward(q, k, v, o, lse, shape, opts)");
  Args a = parse(info, 5);
  const AttentionShape& s = a.shape;
  const size_t nq = s.batch * s.q_len * s.heads * s.head_dim, nkv = s.batch * s.kv_len * s.kv_heads * s.head_dim;
  const float* q = input(env, info[0], nq, "q");
  // k and v: Float32Arrays, or Uint16Arrays of bf16 bits (a bf16 KV cache).
  const bool bf16 = info[1].IsTypedArray() && info[1].As<Napi::TypedArray>().TypedArrayType() == napi_uint16_array;
  const uint16_t *kh = nullptr, *vh = nullptr;
  const float *k = nullptr, *v = nullptr;
  if (bf16) {
    if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint16_array) fail(env, "v must be a Uint16Array (bf16) like k");
    check_len(env, info[1], nkv, "k");
    check_len(env, info[2], nkv, "v");
    kh = info[1].As<Napi::Uint16Array>().Data();
    vh = info[2].As<Napi::Uint16Array>().Data();
  } else {
    k = input(env, info[1], nkv, "k");
    v = input(env, info[2], nkv, "v");
  }
  const bool accumulate = flag(info, 6, "accumulate");
  if (accumulate && (absent(info[3]) || absent(info[4]))) fail(env, "accumulate needs the existing o and lse");
  Napi::Float32Array o = output(env, info[3], nq, "o");
  Napi::Float32Array lse = output(env, info[4], s.batch * s.heads * s.q_len, "lse");
  try {
    if (bf16) attention_forward_bf16kv(s, a.mask, a.scale, q, kh, vh, o.Data(), lse.Data(), accumulate);
    else attention_forward(s, a.mask, a.scale, q, k, v, o.Data(), lse.Data(), accumulate);
  } catch (const std::exception& e) {  // out of memory for scratch: a JS error, not an abort
    throw Napi::Error::New(env, std::string("attentionForward: ") + e.what());
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, o);
  out.Set(1u, lse);
  return out;
}

Napi::Value Backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 11) fail(env, "attentionBackward(q, k, v, o, dO, lse, dLse, dq, dk, dv, shape, opts)");
  Args a = parse(info, 10);
  const AttentionShape& s = a.shape;
  const size_t nq = s.batch * s.q_len * s.heads * s.head_dim, nkv = s.batch * s.kv_len * s.kv_heads * s.head_dim;
  const size_t nrows = s.batch * s.heads * s.q_len;
  const float* q = input(env, info[0], nq, "q");
  const float* k = input(env, info[1], nkv, "k");
  const float* v = input(env, info[2], nkv, "v");
  const float* o = input(env, info[3], nq, "o");
  const float* d_o = input(env, info[4], nq, "dO");
  const float* lse = input(env, info[5], nrows, "lse");
  const float* d_lse = absent(info[6]) ? nullptr : input(env, info[6], nrows, "dLse");
  Napi::Float32Array dq = output(env, info[7], nq, "dq");
  Napi::Float32Array dk = output(env, info[8], nkv, "dk");
  Napi::Float32Array dv = output(env, info[9], nkv, "dv");
  try {
    attention_backward(s, a.mask, a.scale, q, k, v, o, d_o, lse, d_lse, dq.Data(), dk.Data(), dv.Data(),
                       flag(info, 11, "accumulateDq"), flag(info, 11, "accumulateDkv"));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("attentionBackward: ") + e.what());
  }
  Napi::Array out = Napi::Array::New(env, 3);
  out.Set(0u, dq);
  out.Set(1u, dk);
  out.Set(2u, dv);
  return out;
}

}  // namespace

void InitAttention(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionForward", Napi::Function::New(env, Forward));
  exports.Set("attentionBackward", Napi::Function::New(env, Backward));
}

}  // namespace lwm
