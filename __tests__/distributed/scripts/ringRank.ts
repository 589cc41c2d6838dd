// One rank of the multi-process ring tests, started by `lwm launch -n N`:
//   node ringRank.js OUT op      ring attention (the tfjs op, forward + gradient) on every layout
//   node ringRank.js OUT model   a tiny model's logits and all-reduced weight gradients
// Each rank writes its results as raw float32 files into OUT for the test to compare.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend, ringAttention, ringAttentionWithLse, type RingGroup } from '../../../src/index.js';
import { ProcessGroup } from '../../../src/distributed/processGroup.js';
import { makeRingCase, shardCase } from '../../helpers/ringCase.js';
import { lossSum, MODEL_LAYOUT, modelGrads, modelInputs, OP_CASES, testModel, opCaseName } from '../../helpers/ringProcessCases.js';

function write(out: string, name: string, arrays: ArrayLike<number>[]): void {
  const all = new Float32Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    all.set(a, at);
    at += a.length;
  }
  fs.writeFileSync(path.join(out, name), Buffer.from(all.buffer));
}

function runOps(group: ProcessGroup, out: string): void {
  for (const spec of OP_CASES) {
    const c = makeRingCase({ n: group.size, layout: spec.layout, causal: spec.causal, seed: 1000 + group.size });
    const sh = shardCase(c, group.rank);
    const { b, h, hkv, d } = c.opts;
    const t = sh.idx.length;
    const tensors = tf.tidy(() => {
      const q = tf.tensor4d(sh.q, [b, t, h, d]);
      const k = tf.tensor4d(sh.k, [b, t, hkv, d]);
      const v = tf.tensor4d(sh.v, [b, t, hkv, d]);
      const dO = tf.tensor4d(sh.dO, [b, t, h, d]);
      const dLse = tf.tensor3d(sh.dLse, [b, h, t]);
      // blockSize 0 and 5: the virtual ring on the test side runs the same (blockSize 0 native, 5 tfjs).
      const opts = { group, layout: spec.layout, causal: spec.causal, kernel: spec.kernel, blockSize: spec.kernel === 'tfjs' ? 5 : 0, segmentIds: sh.meta.seg!, keyMask: sh.meta.valid!, positions: sh.meta.pos };
      const { out: o, lse } = ringAttentionWithLse(q, k, v, opts);
      const loss = (qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor) => {
        const r = ringAttentionWithLse(qq as tf.Tensor4D, kk as tf.Tensor4D, vv as tf.Tensor4D, opts);
        return tf.add(tf.sum(tf.mul(r.out, dO)), tf.sum(tf.where(tf.isFinite(r.lse), tf.mul(r.lse, dLse), tf.zerosLike(r.lse))));
      };
      const [dq, dk, dv] = tf.grads(loss)([q, k, v]);
      return [o, lse, dq!, dk!, dv!];
    });
    const result = tensors.map((x) => x.dataSync() as Float32Array);
    tf.dispose(tensors);
    write(out, `${opCaseName(spec)}-r${group.rank}.bin`, result);
  }
}

function runModel(group: ProcessGroup, out: string): void {
  const model = testModel();
  const x = modelInputs(group.size, { size: group.size, rank: group.rank, layout: MODEL_LAYOUT });
  const fwd = (m: typeof model) => m.forward(x.ids, { ring: { group, layout: MODEL_LAYOUT }, attentionMask: x.mask, segmentIds: x.segmentIds, positions: x.positions });
  const lt = fwd(model);
  const logits = lt.dataSync() as Float32Array;
  lt.dispose();
  const { loss, grads } = modelGrads(model, (m) => lossSum(fwd(m), x.labels, x.weights));
  const total = Float32Array.of(loss);
  group.allReduce(total);
  for (const g of grads) group.allReduce(g);
  write(out, `model-logits-r${group.rank}.bin`, [logits]);
  write(out, `model-grads-r${group.rank}.bin`, [total, ...grads]);
}

/** Rank 1 SIGKILLs itself in the middle of a ring attention forward (after its 2nd send). */
function runDie(pg: ProcessGroup, out: string): void {
  let sends = 0;
  const group: RingGroup = {
    rank: pg.rank,
    size: pg.size,
    nextCall: () => pg.nextCall(),
    recvPrev: (tag) => pg.recvPrev(tag),
    sendNext: (tag, arrays) => {
      pg.sendNext(tag, arrays);
      if (pg.rank === 1 && ++sends === 2) process.kill(process.pid, 'SIGKILL');
    },
  };
  fs.writeFileSync(path.join(out, `started-r${pg.rank}`), String(Date.now()));
  const q = tf.randomNormal([1, 64, 2, 8]) as tf.Tensor4D;
  for (let i = 0; i < 4; i++) ringAttention(q, q, q, { group }).dispose();
  fs.writeFileSync(path.join(out, `finished-r${pg.rank}`), 'no one died?');
}

const [out, mode] = process.argv.slice(2);
if (!out || !mode) throw new Error('usage: ringRank.js OUT op|model|die');
await initBackend();
const group = await ProcessGroup.init();
if (mode === 'op') runOps(group, out);
else if (mode === 'die') runDie(group, out);
else runModel(group, out);
group.barrier();
await group.close();
