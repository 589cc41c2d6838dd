import * as tf from '@tensorflow/tfjs';
import { InputError } from '../../ops/errors.js';
import { KVCache } from '../../models/kvCache.js';
import type { LlamaModel } from '../../models/llama.js';
import type { PromptBatch } from './prompts.js';

/**
 * What the sampling loop needs from a model: vision logits of each row's last position after a
 * prompt, then after each appended token. Kept this small so the loop can be tested with a stub.
 */
export interface VisionStepper {
  /** Vision vocabulary size V: every result is rows × V, row-major. */
  readonly vocabSize: number;
  /** Positions the model can hold (prompt + generated), when it has a limit. */
  readonly contextLength?: number;
  /** Starts a sequence (dropping any earlier one) and returns the logits after the prompt. */
  prefill(batch: PromptBatch): Promise<Float32Array>;
  /** Appends one vision-vocabulary token per row and returns the logits after it. */
  step(tokens: readonly number[]): Promise<Float32Array>;
  /** Frees the sequence state. */
  dispose(): void;
}

/** LlamaModel with a KV cache; decode steps embed their token with the vision table (LWM's sample_mode 'vision'). */
export class LlamaVisionStepper implements VisionStepper {
  readonly vocabSize: number;
  readonly contextLength: number;
  private cache: KVCache | null = null;
  /** RoPE position of each row's next token: its last position + 1. */
  private next: Int32Array = new Int32Array(0);

  constructor(private readonly model: LlamaModel) {
    if (!model.isVision) {
      throw new InputError('this is a text model (vision_vocab_size 0); image and video generation need a vision-language model such as LWM-Chat-1M');
    }
    this.vocabSize = model.config.visionVocabSize;
    this.contextLength = model.config.maxSeqLen;
  }

  async prefill(b: PromptBatch): Promise<Float32Array> {
    this.dispose();
    this.cache = this.model.newCache();
    const cache = this.cache;
    const shape: [number, number] = [b.rows, b.length];
    const out = tf.tidy(() =>
      this.model.forward(tf.tensor2d(b.tokens, shape, 'int32'), {
        cache,
        positions: tf.tensor2d(b.positions, shape, 'int32'),
        visionMask: tf.tensor2d(b.visionMask, shape, 'int32'),
        // Without pads the cache keeps no mask at all, which is cheaper per step.
        attentionMask: b.padded ? tf.tensor2d(b.attentionMask, shape, 'int32') : undefined,
        sampleMode: 'vision',
        lastOnly: true,
      }),
    );
    this.next = new Int32Array(b.rows);
    for (let r = 0; r < b.rows; r++) this.next[r] = b.positions[(r + 1) * b.length - 1]! + 1;
    return read(out);
  }

  async step(tokens: readonly number[]): Promise<Float32Array> {
    const cache = this.cache;
    if (!cache) throw new InputError('LlamaVisionStepper: step() before prefill()');
    const rows = this.next.length;
    if (tokens.length !== rows) throw new InputError(`LlamaVisionStepper: ${tokens.length} tokens for ${rows} rows`);
    const positions = this.next.slice();
    const out = tf.tidy(() =>
      this.model.forward(tf.tensor2d(Int32Array.from(tokens), [rows, 1], 'int32'), {
        cache,
        positions: tf.tensor2d(positions, [rows, 1], 'int32'),
        // sampleMode 'vision' alone picks the vision table, but the model's id check would then
        // hold the token to the text vocabulary; the explicit mask gives the same embedding.
        visionMask: tf.ones([rows, 1], 'int32') as tf.Tensor2D,
        sampleMode: 'vision',
        lastOnly: true,
      }),
    );
    for (let r = 0; r < rows; r++) this.next[r]!++;
    return read(out);
  }

  dispose(): void {
    this.cache?.dispose();
    this.cache = null;
  }
}

async function read(t: tf.Tensor): Promise<Float32Array> {
  try {
    return (await t.data()) as Float32Array;
  } finally {
    t.dispose();
  }
}
