// The kernel modules define themselves on import.
import './gemmKernels.js';
import './attentionKernel.js';
import './fusedKernels.js';
import './elementwiseKernels.js';
import './convKernels.js';
import './groupNormKernels.js';

export { loadAddon, addonStatus, type NativeAddon, type AddonStatus } from './addon.js';
export { enableNativeKernels, disableNativeKernels, activeNativeKernels, isNativeKernelActive } from './registry.js';
