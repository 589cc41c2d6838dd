// N-API entry point: every kernel module adds its functions to the exports here.
#include <napi.h>
#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

#include "cpu.h"
#include "napi_util.h"
#include "peak.h"
#include "threadpool.h"

namespace lwm {

namespace {
constexpr uintptr_t kHuge = 2u << 20;
}  // namespace

Napi::Float32Array new_f32(Napi::Env env, size_t n) {
  // V8's own allocation, not external memory: V8 counts it towards its GC heuristics and frees it
  // during GC, whereas external buffers were only freed by a finalizer that Node defers to the
  // event loop, so a synchronous VQGAN decode piled up all of its outputs (4+ GiB of RSS).
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, n * sizeof(float));
  // Large buffers are fresh, untouched mmap memory: first-touch page faults cost ~0.85 ms per MiB
  // in this VM, ~0.27 ms on 2 MiB pages (measured), so advise the 2 MiB-aligned interior.
  const uintptr_t b = reinterpret_cast<uintptr_t>(ab.Data()), e = b + n * sizeof(float);
  const uintptr_t hb = (b + kHuge - 1) / kHuge * kHuge, he = e / kHuge * kHuge;
  if (he > hb) madvise(reinterpret_cast<void*>(hb), he - hb, MADV_HUGEPAGE);
  return Napi::Float32Array::New(env, n, ab, 0);
}

namespace {

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", isa_name(active_isa()));
  o.Set("threads", num_threads());
  return o;
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  set_num_threads(static_cast<int>(int_arg(info, 0, "threads")));
  return Napi::Number::New(info.Env(), num_threads());
}

Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  std::string s = info[0].As<Napi::String>().Utf8Value();
  Isa wanted = s == "avx512" ? Isa::kAvx512 : s == "avx2" ? Isa::kAvx2 : Isa::kScalar;
  return Napi::String::New(info.Env(), isa_name(set_isa(wanted)));
}

Napi::Value PeakGflops(const Napi::CallbackInfo& info) {
  double seconds = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0.5;
  return Napi::Number::New(info.Env(), measure_peak_gflops(seconds));
}

Napi::Value Alloc(const Napi::CallbackInfo& info) { return new_f32(info.Env(), static_cast<size_t>(int_arg(info, 0, "length"))); }
}  // namespace

void InitCore(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("setIsa", Napi::Function::New(env, SetIsa));
  exports.Set("peakGflops", Napi::Function::New(env, PeakGflops));
  exports.Set("alloc", Napi::Function::New(env, Alloc));
}

}  // namespace lwm

namespace lwm {
void InitConv(Napi::Env env, Napi::Object exports);       // conv_napi.cc
void InitGroupNorm(Napi::Env env, Napi::Object exports);  // groupnorm_napi.cc
void InitLowp(Napi::Env env, Napi::Object exports);       // gemm_lowp_napi.cc
}  // namespace lwm

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  lwm::InitCore(env, exports);
  lwm::InitGemm(env, exports);
  lwm::InitAttention(env, exports);
  lwm::InitElementwise(env, exports);
  lwm::InitConv(env, exports);
  lwm::InitGroupNorm(env, exports);
  lwm::InitLowp(env, exports);
  return exports;
}

NODE_API_MODULE(lwm_native, Init)
