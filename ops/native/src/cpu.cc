#include "cpu.h"

#include <cstdlib>
#include <cstring>

namespace lwm {
namespace {

Isa hardware_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
  return Isa::kScalar;
}

Isa initial_isa() {
  Isa hw = hardware_isa();
  const char* s = std::getenv("LWM_SIMD");
  if (!s) return hw;
  Isa wanted = hw;
  if (!std::strcmp(s, "scalar")) wanted = Isa::kScalar;
  else if (!std::strcmp(s, "avx2")) wanted = Isa::kAvx2;
  else if (!std::strcmp(s, "avx512")) wanted = Isa::kAvx512;
  return wanted < hw ? wanted : hw;
}

Isa& current() {
  static Isa isa = initial_isa();
  return isa;
}

}  // namespace

Isa active_isa() { return current(); }

Isa set_isa(Isa wanted) {
  Isa hw = hardware_isa();
  current() = wanted < hw ? wanted : hw;
  return current();
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    default: return "scalar";
  }
}

}  // namespace lwm
