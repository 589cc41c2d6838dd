export { defaultTokenizer, loadTokenizer, tokenizerFromJson, TokenStreamDecoder, type Tokenizer } from './tokenizer.js';
export { findFfmpeg, type FfmpegLocation } from './ffmpeg.js';
export * from './frames.js';
export * from './preprocess.js';
export * from './visionTokens.js';
export * from './examples.js';
export * from './packing.js';
export * from './batches.js';
export * from './passkey.js';
