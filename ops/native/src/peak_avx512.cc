#include <immintrin.h>

#include <cstdint>

#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma")

namespace lwm {

float fma_loop_avx512(int64_t iters) {
  __m512 acc[12];
  for (int i = 0; i < 12; i++) acc[i] = _mm512_set1_ps(0.001f * i);
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; it++) {
    for (int i = 0; i < 12; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  return _mm512_reduce_add_ps(acc[0]) + _mm512_reduce_add_ps(acc[11]);
}

}  // namespace lwm
