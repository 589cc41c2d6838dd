/** LWM's image and video generation (spec 3.7): the guided sampling loop, VQGAN decoding, PNG / MP4 output. */
export {
  generateVision,
  sampleVisionTokens,
  frameCodes,
  TOKENS_PER_GENERATED_FRAME,
  type GenerateVisionOptions,
  type GenerateVisionResult,
  type SampleVisionOptions,
  type VisionStepperFactory,
} from './generation.js';
export { LlamaVisionStepper, type VisionStepper } from './llamaStepper.js';
export {
  conditionalPrompt,
  encodeVisionPrompt,
  leftPadBatch,
  visionPromptIds,
  UNCONDITIONAL_PROMPT,
  PAD_ID,
  type PromptBatch,
  type PromptRow,
  type VisionKind,
} from './prompts.js';
export {
  classifierFreeGuidance,
  sampleVisionToken,
  topKIndices,
  validateVisionSampling,
  LWM_IMAGE_SAMPLING,
  LWM_VIDEO_SAMPLING,
  type VisionSampling,
} from './sampling.js';
export {
  decodeVisionCodes,
  outputKind,
  writeCodesJson,
  writeFramesMp4,
  writeFramesPng,
  writeVisionOutput,
  LWM_VIDEO_FPS,
  type DecodedFrames,
} from './output.js';
export {
  generateVisionFile,
  resolveVqganDir,
  randomTinyVqgan,
  checkVisionOutput,
  type VisionFileOptions,
  type VisionFileResult,
} from './run.js';
