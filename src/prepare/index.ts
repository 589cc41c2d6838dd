export { prepareDataset, prepareStats, type PrepareOptions, type PrepareEvent, type PrepareResult } from './run.js';
export { writePreview, type PreviewOptions } from './preview.js';
export { openPrepared, readPreparedInfo, readTokenShard, PreparedRows, type PreparedInfo, type PreparedStats, type StoredExample } from './format.js';
export { CodesCache, codesCacheKey, encodeVisionFile, visionKind, type Sampling, type VisionCodesResult } from './codes.js';
export { inferFields } from './manifest.js';
