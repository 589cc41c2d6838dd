// The fused attention kernel (LwmFusedAttention) is defined here by the attention module.
export {};
