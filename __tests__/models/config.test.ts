import { describe, expect, it } from '@jest/globals';
import { ConfigError } from '../../ops/index.js';
import { fromHfConfig, paramCount, paramSpecs, presetConfig, toHfConfig } from '../../models/index.js';

const specTotal = (name: string) => paramSpecs(presetConfig(name)).reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);

describe('presets', () => {
  it('7b matches LLaMA-2-7B (lwm-spec 11 item 1)', () => {
    const c = presetConfig('7b');
    expect([c.hiddenSize, c.intermediateSize, c.numLayers, c.numHeads, c.headDim, c.vocabSize]).toEqual([4096, 11008, 32, 32, 128, 32000]);
    expect(c.rmsNormEps).toBe(1e-6);
    expect(c.ropeTheta).toBe(10000);
    expect(c.maxSeqLen).toBe(4096);
    expect(c.numKvHeads).toBe(32);
  });

  it('65b has eps 1e-5 and 3b has head dim 100', () => {
    expect(presetConfig('65b').rmsNormEps).toBe(1e-5);
    expect(presetConfig('3b').headDim).toBe(100);
  });

  it('parameter counts equal the spec, counted from the weight list and from the formula', () => {
    for (const [name, n] of [['7b', 6_738_415_616], ['7b-vision', 6_807_621_632], ['debug', 17_302_784], ['100m', 100_449_920], ['200m', 212_366_336], ['13b', 13_015_864_320], ['65b', 65_285_660_672]] as const) {
      expect({ name, n: specTotal(name) }).toEqual({ name, n });
      expect({ name, n: paramCount(presetConfig(name)) }).toEqual({ name, n });
    }
  });

  it('release names set theta and context length', () => {
    const cases: [string, number, number, number][] = [
      ['LWM-Text-128K', 1e7, 131072, 0],
      ['LWM-Text-Chat-256K', 1e7, 262144, 0],
      ['lwm-text-512k', 2.5e7, 524288, 0],
      ['LWM-Text-1M-Jax', 5e7, 1048576, 0],
      ['LWM-Chat-32K', 5e7, 32768, 8448],
      ['LWM-Chat-1M', 5e7, 1048576, 8448],
    ];
    for (const [name, theta, len, vision] of cases) {
      const c = presetConfig(name);
      expect({ name, theta: c.ropeTheta, len: c.maxSeqLen, vision: c.visionVocabSize, h: c.hiddenSize }).toEqual({ name, theta, len, vision, h: 4096 });
    }
  });

  it('rejects unknown presets, listing the known ones', () => {
    expect(() => presetConfig('8b')).toThrow(ConfigError);
    expect(() => presetConfig('8b')).toThrow(/unknown preset '8b'.*7b/);
  });
});

describe('Hugging Face config.json', () => {
  it('round-trips through toHfConfig/fromHfConfig', () => {
    for (const name of ['tiny', 'LWM-Chat-128K']) {
      const c = presetConfig(name);
      expect(fromHfConfig(toHfConfig(c, 'float32'))).toEqual(c);
    }
  });

  it('reads a LWM-Text-Chat-1M style config', () => {
    const c = fromHfConfig({
      architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008,
      num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, max_position_embeddings: 1048576,
      rms_norm_eps: 1e-6, rope_theta: 50000000.0, rope_scaling: null, tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, pad_token_id: 0,
    });
    expect(c.ropeTheta).toBe(5e7);
    expect(c.maxSeqLen).toBe(1048576);
    expect(paramCount(c)).toBe(6_738_415_616);
  });

  it('names the bad key in its errors', () => {
    const base = toHfConfig(presetConfig('tiny'), 'float32');
    expect(() => fromHfConfig({ ...base, hidden_size: undefined })).toThrow(/missing required key 'hidden_size'/);
    expect(() => fromHfConfig({ ...base, num_attention_heads: 3 })).toThrow(ConfigError);
    expect(() => fromHfConfig({ ...base, num_key_value_heads: 3 })).toThrow(/not a multiple of numKvHeads 3/);
    expect(() => fromHfConfig({ ...base, rope_theta: 'big' })).toThrow(/'rope_theta' must be a number/);
    expect(() => fromHfConfig({ ...base, model_type: 'gpt2' })).toThrow(/model_type 'gpt2'/);
    expect(() => fromHfConfig({ ...base, rope_scaling: { type: 'linear' } })).toThrow(/rope_scaling/);
  });
});
