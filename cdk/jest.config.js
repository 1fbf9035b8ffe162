module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  transform: { '^.+\\.tsx?$': 'ts-jest' },
  // Synthesising a stack takes seconds; cdk-nag over all of them longer.
  testTimeout: 120000,
};
