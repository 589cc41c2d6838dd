export { ChatSession, type ChatSessionOptions, type ChatMessage, type ChatTurnOptions, type ChatReply } from './session.js';
export { userTurnTokens, conversationTokens, documentPrefix, LWM_SYSTEM, type UserTurn, type TemplateOptions, type TurnTokens } from './template.js';
export { MediaEncoder, defaultCodesCacheDir, CHAT_MAX_FRAMES, type MediaEncoderOptions, type EncodedMedia } from './media.js';
export { savePromptCache, loadPromptCache, modelFingerprint, commonPrefix, type PromptCacheContents } from './promptCache.js';
export { ringPrefill } from './ringPrefill.js';
