// N-API binding of the fused GroupNorm: typed arrays read in place, extents checked, output in
// new_f32 memory.
#include <napi.h>

#include <string>

#include "groupnorm.h"
#include "napi_util.h"

namespace lwm {
namespace {

[[noreturn]] void gn_error(Napi::Env env, const std::string& what) { throw Napi::RangeError::New(env, "groupNorm: " + what); }

// groupNorm(x, scale, bias, n, hw, c, groups, eps, silu) -> Float32Array[n * hw * c].
Napi::Value GroupNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const float* x = f32(info[0], "x");
  const float* scale = f32(info[1], "scale");
  const float* bias = f32(info[2], "bias");
  GroupNormShape s;
  s.n = int_arg(info, 3, "n"), s.hw = int_arg(info, 4, "hw"), s.c = int_arg(info, 5, "c"), s.groups = int_arg(info, 6, "groups");
  if (info.Length() < 9 || !info[7].IsNumber() || !info[8].IsBoolean()) gn_error(env, "eps must be a number and silu a boolean");
  s.eps = info[7].As<Napi::Number>().FloatValue();
  s.silu = info[8].As<Napi::Boolean>().Value();
  if (s.n < 0 || s.hw < 0 || s.c < 0) gn_error(env, "negative dimension");
  if (s.groups < 1 || s.c % s.groups != 0) gn_error(env, "groups must divide the channels");
  const int64_t size = s.n * s.hw * s.c;
  if (static_cast<int64_t>(length_of(info[0])) < size) gn_error(env, "x is shorter than its shape");
  if (static_cast<int64_t>(length_of(info[1])) < s.c || static_cast<int64_t>(length_of(info[2])) < s.c) {
    gn_error(env, "scale and bias need one value per channel");
  }
  Napi::Float32Array out = new_f32(env, static_cast<size_t>(size));
  group_norm_nhwc(s, x, scale, bias, out.Data());
  return out;
}

}  // namespace

void InitGroupNorm(Napi::Env env, Napi::Object exports) { exports.Set("groupNorm", Napi::Function::New(env, GroupNorm)); }

}  // namespace lwm
