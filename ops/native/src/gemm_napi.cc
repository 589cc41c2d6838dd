// N-API bindings of the gemm kernels (filled in by the gemm module).
#include <napi.h>

#include "napi_util.h"

namespace lwm {

void InitGemm(Napi::Env env, Napi::Object exports) {
  (void)env;
  (void)exports;
}

}  // namespace lwm
