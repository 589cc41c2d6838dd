// N-API binding of the convolution: typed arrays read in place, extents checked, output in
// new_f32 memory.
#include <napi.h>

#include <string>

#include "conv.h"
#include "napi_util.h"

namespace lwm {
namespace {

[[noreturn]] void conv_error(Napi::Env env, const std::string& what) { throw Napi::RangeError::New(env, "conv2d: " + what); }

// conv2d(x, filter, n, h, w, cin, kh, kw, cout, sh, sw, padT, padL, oh, ow,
//        [bias, act, leakyAlpha, prelu]) -> Float32Array[n * oh * ow * cout].
// x is NHWC [n, h, w, cin], filter HWIO [kh, kw, cin, cout]; bias and prelu weights, when
// given, hold cout values (one per output channel).
Napi::Value Conv2D(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const float* x = f32(info[0], "x");
  const float* f = f32(info[1], "filter");
  Conv2DShape s;
  s.n = int_arg(info, 2, "n"), s.h = int_arg(info, 3, "h"), s.w = int_arg(info, 4, "w"), s.cin = int_arg(info, 5, "cin");
  s.kh = int_arg(info, 6, "kh"), s.kw = int_arg(info, 7, "kw"), s.cout = int_arg(info, 8, "cout");
  s.sh = int_arg(info, 9, "sh"), s.sw = int_arg(info, 10, "sw");
  s.pad_t = int_arg(info, 11, "padT"), s.pad_l = int_arg(info, 12, "padL");
  s.oh = int_arg(info, 13, "oh"), s.ow = int_arg(info, 14, "ow");
  if (s.n < 0 || s.h < 0 || s.w < 0 || s.cin < 0 || s.kh < 0 || s.kw < 0 || s.cout < 0 || s.oh < 0 || s.ow < 0) {
    conv_error(env, "negative dimension");
  }
  if (s.sh < 1 || s.sw < 1) conv_error(env, "strides must be >= 1");
  if (static_cast<int64_t>(length_of(info[0])) < s.n * s.h * s.w * s.cin) conv_error(env, "x is shorter than its shape");
  if (static_cast<int64_t>(length_of(info[1])) < s.kh * s.kw * s.cin * s.cout) conv_error(env, "filter is shorter than its shape");
  Epilogue ep;
  if (info.Length() > 15) {
    ep.bias = f32_or_null(info[15], "bias");
    if (ep.bias && static_cast<int64_t>(length_of(info[15])) < s.cout) conv_error(env, "bias is shorter than cout");
    ep.bias_sm = 0, ep.bias_sn = 1;
    const int64_t act = info.Length() > 16 ? int_arg(info, 16, "act") : 0;
    if (act < 0 || act > static_cast<int64_t>(Act::kSigmoid)) conv_error(env, "unknown activation");
    ep.act = static_cast<Act>(act);
    if (info.Length() > 17 && info[17].IsNumber()) ep.leaky_alpha = info[17].As<Napi::Number>().DoubleValue();
    if (ep.act == Act::kPrelu) {
      ep.prelu = info.Length() > 18 ? f32_or_null(info[18], "prelu") : nullptr;
      if (!ep.prelu || static_cast<int64_t>(length_of(info[18])) < s.cout) conv_error(env, "prelu needs cout weights");
      ep.prelu_sm = 0, ep.prelu_sn = 1;
    }
  }
  Napi::Float32Array out = new_f32(env, static_cast<size_t>(s.n * s.oh * s.ow * s.cout));
  conv2d_nhwc(s, x, f, out.Data(), ep);
  return out;
}

// upsampleNearest(x, n, h, w, c, fh, fw) -> Float32Array[n * h*fh * w*fw * c].
Napi::Value UpsampleNearest(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const float* x = f32(info[0], "x");
  const int64_t n = int_arg(info, 1, "n"), h = int_arg(info, 2, "h"), w = int_arg(info, 3, "w"), c = int_arg(info, 4, "c");
  const int64_t fh = int_arg(info, 5, "fh"), fw = int_arg(info, 6, "fw");
  if (n < 0 || h < 0 || w < 0 || c < 0 || fh < 1 || fw < 1) throw Napi::RangeError::New(env, "upsampleNearest: bad shape or factors");
  if (static_cast<int64_t>(length_of(info[0])) < n * h * w * c) throw Napi::RangeError::New(env, "upsampleNearest: x is shorter than its shape");
  Napi::Float32Array out = new_f32(env, static_cast<size_t>(n * h * fh * w * fw * c));
  upsample_nearest_nhwc(x, out.Data(), n, h, w, c, fh, fw);
  return out;
}

}  // namespace

void InitConv(Napi::Env env, Napi::Object exports) {
  exports.Set("conv2d", Napi::Function::New(env, Conv2D));
  exports.Set("upsampleNearest", Napi::Function::New(env, UpsampleNearest));
}

}  // namespace lwm
