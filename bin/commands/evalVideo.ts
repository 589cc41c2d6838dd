import * as path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { initBackend, InputError, loadTokenizer } from '../../src/index.js';
import { runVideoNeedleGrid } from '../../src/eval/videoNeedle.js';
import { chooseVqgan } from '../modelChoice.js';
import { handle, note } from '../output.js';
import { accuracyGrid, checkCommon, commonOptions, intList, openModel, pct, RoundProgress, writeResults, type CommonEvalArgs } from '../evalCommon.js';

interface VideoArgs extends CommonEvalArgs {
  seconds?: string;
  depths?: string;
  rounds: number;
  'max-frames'?: number;
  source: string;
  digits: number;
  'max-tokens': number;
  vqgan?: string;
  'work-dir'?: string;
}

export const videoNeedleCommand: CommandModule<object, VideoArgs> = {
  command: 'video-needle',
  describe: 'A number shown for one second in a generated video: accuracy over video length x depth, JSON and heatmap PNG',
  builder: (y) =>
    commonOptions(y, 'video-needle')
      .option('seconds', { type: 'string', describe: 'Video lengths in seconds at 1 fps, comma list (default 2, 4, 8, 12 that fit the context)' })
      .option('depths', { type: 'string', describe: 'Needle positions in percent of the video (default 0, 25, 50, 75, 100)' })
      .option('rounds', { type: 'number', default: 1, describe: 'Cases per cell' })
      .option('max-frames', { type: 'number', describe: "LWM's uniform frame sampling to at most N frames (default: every frame)" })
      .option('source', { type: 'string', default: 'testsrc2', choices: ['testsrc2', 'color'], describe: 'Haystack video (ffmpeg test pattern or a plain colour)' })
      .option('digits', { type: 'number', default: 3, describe: 'Digits of the number' })
      .option('max-tokens', { type: 'number', default: 16, describe: 'Answer tokens at most (greedy)' })
      .option('vqgan', { type: 'string', describe: "VQGAN folder (default: the model folder's vqgan/)" })
      .option('work-dir', { type: 'string', describe: 'Where clips and their VQ codes are cached (default: OUT/work)' }) as unknown as Argv<VideoArgs>,
  handler: handle<VideoArgs>('eval video-needle', runVideoNeedle),
};

async function runVideoNeedle(a: VideoArgs): Promise<void> {
  checkCommon(a);
  for (const [flag, v] of [['rounds', a.rounds], ['digits', a.digits], ['max-tokens', a['max-tokens']], ['max-frames', a['max-frames']]] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v >= 1)) throw new InputError(`--${flag} must be a positive integer, got ${v}`);
  }
  await initBackend();
  const choice = openModel('eval video-needle', a);
  const vqgan = chooseVqgan(a.vqgan, choice.dir);
  if (!choice.model.isVision) throw new InputError(`${choice.name} is a text model; the video needle test needs a vision-language model (LWM-Chat) with its VQGAN`);
  if (!vqgan) throw new InputError('no VQGAN: pass --vqgan DIR, or put the VQGAN in the model folder\'s vqgan/ (lwm convert LWM-Chat-1M-Jax/vqgan MODEL/vqgan)');
  const lengths = intList('seconds', a.seconds, 1) ?? [2, 4, 8, 12].filter((s) => s * 257 + 64 + a['max-tokens'] <= choice.model.config.maxSeqLen);
  if (lengths.length === 0) throw new InputError(`the model's context (${choice.model.config.maxSeqLen} tokens) holds no video of 2 seconds or more (257 tokens a frame); raise --max-len or give --max-frames`);
  const depths = intList('depths', a.depths, 0, 100) ?? [0, 25, 50, 75, 100];
  const progress = new RoundProgress('lwm eval video-needle', a.progress);
  let r;
  try {
    r = await runVideoNeedleGrid(
      { model: choice.model, tokenizer: loadTokenizer(choice.dir), vqgan },
      {
        lengths,
        depths,
        rounds: a.rounds,
        seed: a.seed,
        workDir: a['work-dir'] ?? path.join(a.out, 'work'),
        ...(a['max-frames'] !== undefined ? { maxFrames: a['max-frames'] } : {}),
        source: a.source as 'testsrc2' | 'color',
        digits: a.digits,
        maxTokens: a['max-tokens'],
        onProgress: (done, total, eta) => progress.update(done, total, eta),
      },
    );
  } finally {
    choice.model.dispose();
  }
  const rounds = r.cells.reduce((s, c) => s + c.rounds.length, 0);
  progress.finish(rounds, rounds, `overall ${pct(r.overall)}`);
  const files = await writeResults(a.out, 'video-needle', { test: 'video-needle', model: choice.name, modelDir: choice.dir ?? null, vqgan, ...r }, {
    heatmap: {
      title: `Video needle: ${choice.name}, ${pct(r.overall)} of ${rounds} rounds`,
      xLabel: 'Video length (seconds at 1 fps)',
      yLabel: 'Depth (%)',
      xTicks: r.config.lengths,
      yTicks: r.config.depths,
      values: accuracyGrid(r.cells, r.config.lengths, r.config.depths, (c) => c.seconds),
      legendLabel: 'Accuracy',
    },
  });
  note(`lwm eval video-needle: overall ${pct(r.overall)}; by length ${r.accuracyBySeconds.map((c) => `${c.seconds}s: ${pct(c.accuracy)}`).join(', ')}`);
  note(`lwm eval video-needle: wrote ${files.json} and ${files.png}`);
  if (a.json) process.stdout.write(JSON.stringify(r) + '\n');
}
