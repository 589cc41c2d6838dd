// N-API bindings of the attention kernels (filled in by the attention module).
#include <napi.h>

#include "napi_util.h"

namespace lwm {

void InitAttention(Napi::Env env, Napi::Object exports) {
  (void)env;
  (void)exports;
}

}  // namespace lwm
