// Native GEMM kernels (BatchMatMul, _FusedMatMul) are defined here by the gemm module.
export {};
