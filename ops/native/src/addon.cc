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
constexpr size_t kHuge = 2u << 20;

void free_buffer(Napi::Env, void* data, size_t* bytes) {
  if (*bytes >= kHuge) munmap(data, *bytes);
  else std::free(data);
  delete bytes;
}
}  // namespace

Napi::Float32Array new_f32(Napi::Env env, size_t n) {
  size_t bytes = n * sizeof(float);
  void* p = nullptr;
  if (bytes >= kHuge) {
    bytes = (bytes + kHuge - 1) / kHuge * kHuge;
    p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw Napi::Error::New(env, "out of memory allocating " + std::to_string(bytes) + " bytes");
    madvise(p, bytes, MADV_HUGEPAGE);
  } else {
    p = std::calloc(n ? n : 1, sizeof(float));
    if (!p) throw Napi::Error::New(env, "out of memory allocating " + std::to_string(bytes) + " bytes");
  }
  auto ab = Napi::ArrayBuffer::New(env, p, n * sizeof(float), free_buffer, new size_t(bytes));
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
void InitConv(Napi::Env env, Napi::Object exports);  // conv_napi.cc
}  // namespace lwm

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  lwm::InitCore(env, exports);
  lwm::InitGemm(env, exports);
  lwm::InitAttention(env, exports);
  lwm::InitElementwise(env, exports);
  lwm::InitConv(env, exports);
  return exports;
}

NODE_API_MODULE(lwm_native, Init)
