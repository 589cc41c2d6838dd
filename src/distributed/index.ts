// Multi-process runs: the ring's process group, its collectives, launcher detection and `lwm launch`.
export { ProcessGroup, type PeerInfo, type ProcessGroupOptions, type RingStats } from './processGroup.js';
export { allReduce, barrier, broadcast, type ReduceOp } from './collectives.js';
export { detectLaunch, type LaunchInfo, type LaunchSource } from './env.js';
export { freePort, launch, type LaunchOptions, type LaunchResult, type RankExit } from './launch.js';
