// N-API bindings of the elementwise kernels (filled in by the elementwise module).
#include <napi.h>

#include "napi_util.h"

namespace lwm {

void InitElementwise(Napi::Env env, Napi::Object exports) {
  (void)env;
  (void)exports;
}

}  // namespace lwm
