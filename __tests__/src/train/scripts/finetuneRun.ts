// `node finetuneRun.js DATA OUT`: the library's finetune() in a plain Node process (jest's VM
// makes the tfjs kernels slow on a 32000-token vocabulary); prints one JSON object of results.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { finetune, initBackend, initParams, LlamaModel, loadModel, paramName, presetConfig } from '../../../../src/index.js';

const [data, out] = process.argv.slice(2) as [string, string];
await initBackend();
const config = presetConfig('tiny', { maxSeqLen: 128 });
const model = new LlamaModel(config, initParams(config, 5));
const before = Array.from(model.params.get(paramName.lmHead).dataSync());
const losses: number[] = [];
const r = await finetune({ model, data, out: path.join(out, 'mem'), seqLen: 64, batchSize: 2, steps: 4, lr: 1e-2, onStep: (s) => losses.push(s.loss) });
const untouched = Array.from(model.params.get(paramName.lmHead).dataSync()).every((v, i) => v === before[i]);
const trained = loadModel(r.checkpoint);
const changed = tf.tidy(() => tf.max(tf.abs(tf.sub(trained.params.get(paramName.lmHead), model.params.get(paramName.lmHead)))).dataSync()[0]!);
trained.dispose();
const stages = await finetune({
  model: 'preset:tiny',
  data,
  out: path.join(out, 'stages'),
  batchSize: 2,
  lr: 1e-2,
  stages: [
    { seqLen: 64, ropeTheta: 1e4, steps: 2 },
    { seqLen: 128, ropeTheta: 1e6, steps: 2 },
  ],
});
const metrics = fs.readFileSync(path.join(out, 'stages', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const last = loadModel(stages.checkpoint);
process.stdout.write(JSON.stringify({ steps: r.steps, losses, untouched, changed, stageSteps: stages.steps, stageRows: metrics.map((m) => [m.step, m.seq_len, m.stage]), theta: last.config.ropeTheta }) + '\n');
last.dispose();
model.dispose();
