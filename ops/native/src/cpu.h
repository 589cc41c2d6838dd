// Which SIMD instruction set the kernels use, chosen once at run time.
#pragma once

namespace lwm {

enum class Isa { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

// The widest set this CPU and OS support (AVX-512 needs F, BW, DQ and VL; AVX2 needs FMA too),
// lowered by LWM_SIMD=scalar|avx2|avx512 so the fallbacks can be tested on any machine.
Isa active_isa();
const char* isa_name(Isa isa);
// Overrides the choice (capped at what the hardware has); returns the ISA now active.
Isa set_isa(Isa wanted);

}  // namespace lwm
