// bf16 is the top half of a float32: widening is a shift (the same as ops/bf16.ts).
#pragma once
#include <cstdint>
#include <cstring>

namespace lwm {

inline float bf16_to_f32(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace lwm
