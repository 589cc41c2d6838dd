/** LWM's VQGAN image tokenizer (lwm/vqgan.py; lwm-spec.md section 4). */
export {
  VQGAN_DEFAULTS,
  VQGAN_TINY,
  VQGAN_PATH_SEP,
  vqganConfig,
  vqganConfigFromJson,
  validateVqganConfig,
  vqganDownsampleFactor,
  vqganParamSpecs,
  vqganParamSpecsInUseOrder,
  vqganParamCount,
  initVqganParams,
  type VqganConfig,
  type VqganParamSpec,
} from './vqgan/config.js';
export { groupNorm, conv2d, padBottomRight, upsampleNearest2x, vectorQuantize } from './vqgan/layers.js';
export { Vqgan } from './vqgan/model.js';
