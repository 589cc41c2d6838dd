export { LwmError, ConfigError, CheckpointError, InputError } from './errors.js';
export { rmsNorm } from './rmsNorm.js';
export { ropeFrequencies, ropeAngles, applyRope, type RopeLayout } from './rope.js';
export { attention, type AttentionOptions } from './attention.js';
export { Rng, sampleToken, validateSampling, argmax, logSoftmax, topEntries, type SamplingOptions } from './sample.js';
