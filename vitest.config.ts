import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['shared/**/*.test.ts', 'gpu-worker/**/*.test.ts', 'demo/**/*.test.ts', 'functions/**/*.test.ts', 'storage/**/*.test.ts', 'infra/**/*.test.ts', 'cli/**/*.test.ts', 'test/**/*.test.ts', 'local/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
});
