// N-API bindings of the low-precision-weight linear layers (gemm_lowp.h): typed arrays read in
// place (the weights are never copied or widened), extents checked, the output a new Float32Array.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "bf16.h"
#include "gemm_lowp.h"
#include "napi_util.h"
#include "threadpool.h"

namespace lwm {
namespace {

[[noreturn]] void range_error(Napi::Env env, const std::string& what) { throw Napi::RangeError::New(env, what); }

template <typename T>
const T* typed(const Napi::Value& v, napi_typedarray_type type, const char* fn, const char* what, const char* kind) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) {
    throw Napi::TypeError::New(v.Env(), std::string(fn) + ": " + what + " must be a " + kind);
  }
  return v.As<Napi::TypedArrayOf<T>>().Data();
}

// info[a] as a non-negative integer below 2^53.
int64_t count_arg(const Napi::CallbackInfo& info, size_t a, const char* fn, const char* name) {
  if (a >= info.Length() || !info[a].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(fn) + ": " + name + " must be a number");
  const double d = info[a].As<Napi::Number>().DoubleValue();
  if (!(d >= 0) || d != static_cast<double>(static_cast<int64_t>(d)) || d > 9007199254740991.0) {
    range_error(info.Env(), std::string(fn) + ": " + name + " must be a non-negative integer, got " + info[a].ToString().Utf8Value());
  }
  return static_cast<int64_t>(d);
}

// Whether a * b stays below 2^53 (lengths are compared exactly afterwards).
bool product_fits(int64_t a, int64_t b) { return a == 0 || b <= (int64_t(1) << 53) / a; }

// m, n, k at info[at..at+2]: non-negative integers whose products fit the typed arrays' range.
void dims(const Napi::CallbackInfo& info, size_t at, const char* fn, int64_t& m, int64_t& n, int64_t& k) {
  m = count_arg(info, at, fn, "m");
  n = count_arg(info, at + 1, fn, "n");
  k = count_arg(info, at + 2, fn, "k");
  if (!product_fits(m, k) || !product_fits(n, k) || !product_fits(m, n)) range_error(info.Env(), std::string(fn) + ": m, n, k are too large");
}

void check_length(Napi::Env env, const Napi::Value& v, int64_t want, const char* fn, const char* what, const char* shape) {
  const int64_t got = static_cast<int64_t>(length_of(v));
  if (got != want) {
    range_error(env, std::string(fn) + ": " + what + " has " + std::to_string(got) + " elements, expected " + shape + " = " +
                         std::to_string(want));
  }
}

// matmulBf16(x: Float32Array [m, k], w: Uint16Array [n, k] bf16 bits, m, n, k) -> Float32Array [m, n]
Napi::Value MatmulBf16(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "matmulBf16";
  const float* x = typed<float>(info[0], napi_float32_array, fn, "x", "Float32Array");
  const uint16_t* w = typed<uint16_t>(info[1], napi_uint16_array, fn, "w", "Uint16Array (bf16 bit patterns)");
  int64_t m, n, k;
  dims(info, 2, fn, m, n, k);
  check_length(env, info[0], m * k, fn, "x", "m * k");
  check_length(env, info[1], n * k, fn, "w", "n * k");
  Napi::Float32Array out = new_f32(env, static_cast<size_t>(m * n));
  matmul_bf16(x, w, out.Data(), m, n, k);
  return out;
}

// matmulInt8(x: Float32Array [m, k], q: Int8Array [n, k], scales: Float32Array [n], m, n, k) -> Float32Array [m, n]
Napi::Value MatmulInt8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "matmulInt8";
  const float* x = typed<float>(info[0], napi_float32_array, fn, "x", "Float32Array");
  const int8_t* q = typed<int8_t>(info[1], napi_int8_array, fn, "q", "Int8Array");
  const float* scales = typed<float>(info[2], napi_float32_array, fn, "scales", "Float32Array");
  int64_t m, n, k;
  dims(info, 3, fn, m, n, k);
  check_length(env, info[0], m * k, fn, "x", "m * k");
  check_length(env, info[1], n * k, fn, "q", "n * k");
  check_length(env, info[2], n, fn, "scales", "n");
  Napi::Float32Array out = new_f32(env, static_cast<size_t>(m * n));
  matmul_int8(x, q, scales, out.Data(), m, n, k);
  return out;
}

// Rows [n][k] of w (float32, or bf16 bits) -> int8 q and one scale per row: scale = fround(amax
// / 127), q = clamp(floor(w / scale + 0.5), -127, 127) in double, as quantizeInt8 in JS computes
// it, so both give the same bytes. Rows in parallel: a 7B model's 6.5G weights in seconds.
template <typename T, typename Cvt>
void quantize_rows(const T* w, int64_t n, int64_t k, int8_t* q, float* scales, Cvt cvt) {
  parallel_for(n, [&](int64_t j, int) {
    const T* row = w + j * k;
    float amax = 0;
    for (int64_t p = 0; p < k; p++) amax = std::max(amax, std::fabs(cvt(row[p])));
    const float s = static_cast<float>(static_cast<double>(amax) / 127.0);
    scales[j] = s;
    int8_t* out = q + j * k;
    if (s == 0) {
      std::memset(out, 0, static_cast<size_t>(k));
      return;
    }
    for (int64_t p = 0; p < k; p++) {
      const double r = std::floor(static_cast<double>(cvt(row[p])) / static_cast<double>(s) + 0.5);
      out[p] = static_cast<int8_t>(std::max(-127.0, std::min(127.0, r)));
    }
  });
}

// quantizeInt8(w: Float32Array | Uint16Array (bf16) [n, k], n, k) -> [Int8Array q, Float32Array scales]
Napi::Value QuantizeInt8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* fn = "quantizeInt8";
  if (info.Length() < 3 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, std::string(fn) + ": w must be a Float32Array or a Uint16Array of bf16");
  const int64_t n = count_arg(info, 1, fn, "n"), k = count_arg(info, 2, fn, "k");
  if (!product_fits(n, k)) range_error(env, std::string(fn) + ": n, k are too large");
  const napi_typedarray_type type = info[0].As<Napi::TypedArray>().TypedArrayType();
  check_length(env, info[0], n * k, fn, "w", "n * k");
  Napi::Int8Array q = Napi::Int8Array::New(env, static_cast<size_t>(n * k));
  Napi::Float32Array scales = Napi::Float32Array::New(env, static_cast<size_t>(n));
  if (type == napi_float32_array) {
    quantize_rows(info[0].As<Napi::Float32Array>().Data(), n, k, q.Data(), scales.Data(), [](float x) { return x; });
  } else if (type == napi_uint16_array) {
    quantize_rows(info[0].As<Napi::Uint16Array>().Data(), n, k, q.Data(), scales.Data(), bf16_to_f32);
  } else {
    throw Napi::TypeError::New(env, std::string(fn) + ": w must be a Float32Array or a Uint16Array of bf16");
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, q);
  out.Set(1u, scales);
  return out;
}

// lowpInfo() -> { isa, bf16Dot, dotMaxM }: the kernels a call would use now.
Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const LowpInfo li = lowp_info();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", li.isa);
  o.Set("bf16Dot", li.bf16_dot);
  o.Set("dotMaxM", static_cast<double>(kLowpDotMaxM));
  return o;
}

}  // namespace

void InitLowp(Napi::Env env, Napi::Object exports) {
  (void)num_threads();  // start the pool's workers early (see InitGemm)
  exports.Set("matmulBf16", Napi::Function::New(env, MatmulBf16));
  exports.Set("matmulInt8", Napi::Function::New(env, MatmulInt8));
  exports.Set("lowpInfo", Napi::Function::New(env, Info));
  exports.Set("quantizeInt8", Napi::Function::New(env, QuantizeInt8));
}

}  // namespace lwm
