import * as path from 'node:path';
import { createModel, saveModel } from '../../../../src/index.js';
import { saveTinyVqgan } from '../../../helpers/media.js';

// A random tiny vision-language model with its VQGAN in vqgan/ (LWM-Chat's layout), made outside
// jest's VM, where tfjs initialisation of a 32000-token vocabulary is slow.
const dir = process.argv[2]!;
const model = createModel('tiny-vision', { seed: 1 });
saveModel(dir, model);
model.dispose();
saveTinyVqgan(path.join(dir, 'vqgan'));
