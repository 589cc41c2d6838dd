{
  "targets": [
    {
      "target_name": "lwm_native",
      "sources": [
        "src/addon.cc",
        "src/threadpool.cc",
        "src/cpu.cc",
        "src/peak.cc",
        "src/peak_avx2.cc",
        "src/peak_avx512.cc",
        "src/gemm.cc",
        "src/gemm_avx2.cc",
        "src/gemm_avx512.cc",
        "src/gemm_napi.cc",
        "src/gemm_lowp.cc",
        "src/gemm_lowp_avx2.cc",
        "src/gemm_lowp_avx512.cc",
        "src/gemm_lowp_napi.cc",
        "src/attention.cc",
        "src/attention_avx2.cc",
        "src/attention_avx512.cc",
        "src/attention_napi.cc",
        "src/elementwise_napi.cc",
        "src/elementwise.cc",
        "src/conv.cc",
        "src/conv_napi.cc",
        "src/groupnorm.cc",
        "src/groupnorm_avx2.cc",
        "src/groupnorm_napi.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fvisibility=hidden", "-fno-math-errno", "-pthread"],
      "ldflags": ["-pthread"]
    }
  ]
}
