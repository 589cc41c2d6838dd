// N-API bindings of the fused row-wise kernels. Inputs are read in place; outputs are new
// huge-page native arrays.
#include <napi.h>

#include <vector>

#include "elementwise.h"
#include "napi_util.h"

namespace lwm {
namespace {

void require_len(const Napi::Env& env, size_t got, int64_t want, const char* what) {
  if (static_cast<int64_t>(got) < want) throw Napi::RangeError::New(env, std::string(what) + " is shorter than its shape");
}

// rmsnormForward(x, w, rows, dim, eps) -> y
Napi::Value RmsnormForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t rows = int_arg(info, 2, "rows"), dim = int_arg(info, 3, "dim");
  require_len(env, length_of(info[0]), rows * dim, "x");
  require_len(env, length_of(info[1]), dim, "w");
  Napi::Float32Array y = new_f32(env, rows * dim);
  rmsnorm_forward(f32(info[0], "x"), f32(info[1], "w"), y.Data(), rows, dim, info[4].As<Napi::Number>().FloatValue());
  return y;
}

// rmsnormBackward(x, w, dy, rows, dim, eps) -> [dx, dw]
Napi::Value RmsnormBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t rows = int_arg(info, 3, "rows"), dim = int_arg(info, 4, "dim");
  require_len(env, length_of(info[0]), rows * dim, "x");
  require_len(env, length_of(info[2]), rows * dim, "dy");
  require_len(env, length_of(info[1]), dim, "w");
  Napi::Float32Array dx = new_f32(env, rows * dim), dw = new_f32(env, dim);
  rmsnorm_backward(f32(info[0], "x"), f32(info[1], "w"), f32(info[2], "dy"), dx.Data(), dw.Data(), rows, dim,
                   info[5].As<Napi::Number>().FloatValue());
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, dx);
  out.Set(1u, dw);
  return out;
}

// rope(x, cos, sin, tokens, heads, dim, interleaved, sign) -> out
Napi::Value Rope(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t tokens = int_arg(info, 3, "tokens"), heads = int_arg(info, 4, "heads"), dim = int_arg(info, 5, "dim");
  if (dim % 2) throw Napi::RangeError::New(env, "rope: dim must be even");
  require_len(env, length_of(info[0]), tokens * heads * dim, "x");
  require_len(env, length_of(info[1]), tokens * dim / 2, "cos");
  require_len(env, length_of(info[2]), tokens * dim / 2, "sin");
  Napi::Float32Array out = new_f32(env, tokens * heads * dim);
  rope_apply(f32(info[0], "x"), f32(info[1], "cos"), f32(info[2], "sin"), out.Data(), tokens, heads, dim, info[6].ToBoolean(),
             info[7].As<Napi::Number>().FloatValue());
  return out;
}

// swigluForward(gate, up) -> out
Napi::Value SwigluForward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t n = length_of(info[0]);
  require_len(env, length_of(info[1]), n, "up");
  Napi::Float32Array out = new_f32(env, n);
  swiglu_forward(f32(info[0], "gate"), f32(info[1], "up"), out.Data(), n);
  return out;
}

// swigluBackward(gate, up, dy) -> [dgate, dup]
Napi::Value SwigluBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t n = length_of(info[0]);
  require_len(env, length_of(info[1]), n, "up");
  require_len(env, length_of(info[2]), n, "dy");
  Napi::Float32Array dg = new_f32(env, n), du = new_f32(env, n);
  swiglu_backward(f32(info[0], "gate"), f32(info[1], "up"), f32(info[2], "dy"), dg.Data(), du.Data(), n);
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, dg);
  out.Set(1u, du);
  return out;
}

// segmentSum(x, segmentIds, n, inner, segments) -> out [segments * inner]
Napi::Value SegmentSum(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t n = int_arg(info, 2, "n"), inner = int_arg(info, 3, "inner"), segments = int_arg(info, 4, "segments");
  require_len(env, length_of(info[0]), n * inner, "x");
  require_len(env, length_of(info[1]), n, "segmentIds");
  Napi::Float32Array out = new_f32(env, segments * inner);
  segment_sum(f32(info[0], "x"), i32(info[1], "segmentIds"), out.Data(), n, inner, segments);
  return out;
}

std::vector<int64_t> shape_arg(const Napi::Value& v) {
  Napi::Array arr = v.As<Napi::Array>();
  std::vector<int64_t> s(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) s[i] = arr.Get(i).As<Napi::Number>().Int64Value();
  return s;
}

int64_t product(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// binary(op, a, aShape, b, bShape, outShape) -> out; shapes already padded to one rank.
Napi::Value Binary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int op = static_cast<int>(int_arg(info, 0, "op"));
  std::vector<int64_t> as = shape_arg(info[2]), bs = shape_arg(info[4]), os = shape_arg(info[5]);
  if (as.size() != os.size() || bs.size() != os.size() || op < 0 || op > 3) throw Napi::TypeError::New(env, "binary: bad shapes or op");
  for (size_t d = 0; d < os.size(); d++) {
    if ((as[d] != os[d] && as[d] != 1) || (bs[d] != os[d] && bs[d] != 1)) throw Napi::RangeError::New(env, "binary: shapes do not broadcast");
  }
  require_len(env, length_of(info[1]), product(as), "a");
  require_len(env, length_of(info[3]), product(bs), "b");
  Napi::Float32Array out = new_f32(env, product(os));
  binary_broadcast(static_cast<BinaryOp>(op), f32(info[1], "a"), as.data(), f32(info[3], "b"), bs.data(), out.Data(), os.data(),
                   static_cast<int>(os.size()));
  return out;
}

// unary(op, x) -> out
Napi::Value Unary(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int op = static_cast<int>(int_arg(info, 0, "op"));
  if (op < 0 || op > 3) throw Napi::TypeError::New(env, "unary: bad op");
  const size_t n = length_of(info[1]);
  Napi::Float32Array out = new_f32(env, n);
  unary(static_cast<UnaryOp>(op), f32(info[1], "x"), out.Data(), n);
  return out;
}

}  // namespace

void InitElementwise(Napi::Env env, Napi::Object exports) {
  exports.Set("rmsnormForward", Napi::Function::New(env, RmsnormForward));
  exports.Set("rmsnormBackward", Napi::Function::New(env, RmsnormBackward));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("swigluForward", Napi::Function::New(env, SwigluForward));
  exports.Set("swigluBackward", Napi::Function::New(env, SwigluBackward));
  exports.Set("segmentSum", Napi::Function::New(env, SegmentSum));
  exports.Set("binary", Napi::Function::New(env, Binary));
  exports.Set("unary", Napi::Function::New(env, Unary));
}

}  // namespace lwm
