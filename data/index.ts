export { defaultTokenizer, loadTokenizer, tokenizerFromJson, TokenStreamDecoder, type Tokenizer } from './tokenizer.js';
export { findFfmpeg, type FfmpegLocation } from './ffmpeg.js';
