// Helpers shared by the N-API bindings: typed-array views, argument checks.
#pragma once
#include <napi.h>

#include <cstdint>
#include <string>

namespace lwm {

inline float* f32(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be a Float32Array");
  }
  return v.As<Napi::Float32Array>().Data();
}

inline int32_t* i32(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    throw Napi::TypeError::New(v.Env(), std::string(what) + " must be an Int32Array");
  }
  return v.As<Napi::Int32Array>().Data();
}

// Optional typed arrays: null/undefined gives nullptr.
inline float* f32_or_null(const Napi::Value& v, const char* what) { return v.IsNull() || v.IsUndefined() ? nullptr : f32(v, what); }
inline int32_t* i32_or_null(const Napi::Value& v, const char* what) { return v.IsNull() || v.IsUndefined() ? nullptr : i32(v, what); }

inline size_t length_of(const Napi::Value& v) { return v.As<Napi::TypedArray>().ElementLength(); }

inline int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (i >= info.Length() || !info[i].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  }
  return info[i].As<Napi::Number>().Int64Value();
}

// Float32Array of n elements backed by native memory advised for huge pages: first-touch page
// faults cost ~3 ms per MiB in this VM, ~30x less with 2 MiB pages.
Napi::Float32Array new_f32(Napi::Env env, size_t n);

// Each module registers its functions on the exports object.
void InitCore(Napi::Env env, Napi::Object exports);
void InitGemm(Napi::Env env, Napi::Object exports);
void InitAttention(Napi::Env env, Napi::Object exports);
void InitElementwise(Napi::Env env, Napi::Object exports);

}  // namespace lwm
