import * as tf from '@tensorflow/tfjs';

// The cpu backend's "install tfjs-node" banner would repeat in every test file's output.
tf.env().set('PROD', true);
