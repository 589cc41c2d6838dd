// Tests are compiled by `tsc` (npm test builds first) and run as native ES modules,
// so jest needs no transform and sees exactly the code users run.
const slow = process.env.LWM_SLOW_TESTS === '1';
export default {
  testEnvironment: 'node',
  roots: ['<rootDir>/dist/__tests__'],
  testMatch: ['**/*.test.js'],
  testPathIgnorePatterns: slow ? [] : ['\\.slow\\.test\\.js$'],
  transform: {},
  setupFiles: ['<rootDir>/dist/__tests__/helpers/setup.js'],
  maxWorkers: 2,
  testTimeout: 120000,
};
