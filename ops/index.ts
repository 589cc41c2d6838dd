export { LwmError, ConfigError, CheckpointError, InputError } from './errors.js';
export { rmsNorm } from './rmsNorm.js';
export { swiglu } from './swiglu.js';
export { ropeFrequencies, ropeAngles, applyRope, type RopeLayout } from './rope.js';
export { attention, type AttentionOptions } from './attention.js';
export { Rng, sampleToken, validateSampling, argmax, logSoftmax, topEntries, type SamplingOptions } from './sample.js';
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
