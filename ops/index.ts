export { LwmError, ConfigError, CheckpointError, InputError } from './errors.js';
export { rmsNorm } from './rmsNorm.js';
export { swiglu } from './swiglu.js';
export { groupNorm, type GroupNormOptions } from './groupNorm.js';
export { ropeFrequencies, ropeAngles, applyRope, type RopeLayout } from './rope.js';
export { attention, type AttentionOptions } from './attention.js';
export { FUSED_ATTENTION } from './native/attentionKernel.js';
export { Rng, sampleToken, validateSampling, applyRepeatPenalty, argmax, logSoftmax, topEntries, type SamplingOptions } from './sample.js';
export {
  loadAddon,
  addonStatus,
  enableNativeKernels,
  disableNativeKernels,
  activeNativeKernels,
  isNativeKernelActive,
  type NativeAddon,
  type AddonStatus,
} from './native/index.js';
export {
  blockwiseAttention,
  blockwiseAttentionWithLse,
  ringAttention,
  ringAttentionWithLse,
  type BlockwiseAttentionOptions,
  type RingAttentionOptions,
} from './ringAttention.js';
export { layoutIndices, layoutOwners, paddedLength, layoutUnit, RING_LAYOUTS, type RingLayout } from './ring/layout.js';
export { ringForward, ringBackward, type RingProblem, type RingProgram, type RingOp } from './ring/core.js';
export { runOnGroup, runVirtualRing, SoloGroup } from './ring/drive.js';
export { defaultBlockKernel, nativeBlockKernel, tfjsBlockKernel, type BlockKernel, type TokenMeta, type RingDims } from './ring/blockKernels.js';
export { tagString, sameTag, type RingGroup, type RingTag, type RingArray } from './ring/types.js';
export { LowpWeight, matMulLowp, lowpNative, type LowpDtype } from './lowp.js';
export { attentionBf16Kv, type Bf16Kv } from './kvAttention.js';
export { bf16ToF32, f32ToBf16 } from './bf16.js';
