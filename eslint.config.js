// Type-aware lint: typescript-eslint's recommendedTypeChecked over every TS file, plus the house
// rules of docs/design.md §6: shared/ is reached only through its entry points, and the sampler
// entry stays pure (no Node built-ins, no OS randomness).
import { builtinModules } from 'node:module';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const ENTRY_POINTS = '#shared/sampler, #shared/formats, #shared/schemas or #shared/stats';
const NODE_BUILTINS = builtinModules.flatMap((m) => [m, `node:${m}`]);

export default tseslint.config(
  { ignores: ['node_modules/**', 'cdk.out/**', 'dist/**', 'coverage/**', '**/*.d.ts', 'tools/**', '.venv/**', '.local/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-floating-promises': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // Everything outside shared/ imports it through package.json "imports" entry points only.
    ignores: ['shared/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ group: ['**/shared/src/**', '**/shared/src'], message: `import shared/ through its entry points (${ENTRY_POINTS}), not a deep path` }] }],
    },
  },
  {
    // Inside shared/src, one group reaches another only through its entry point, and nothing
    // outside shared/ is imported (shared depends on nobody).
    files: ['shared/src/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [
        { group: ['../*/**', '../../**'], message: `shared/src groups import each other through entry points (${ENTRY_POINTS})` },
      ] }],
    },
  },
  {
    // The sampler is pure math: the same code must run in a Lambda, a worker thread or a browser.
    files: ['shared/src/sampler/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', {
        paths: NODE_BUILTINS.map((name) => ({ name, message: 'the sampler entry stays pure: no Node built-ins' })),
        patterns: [
          { group: ['../*/**', '../../**'], message: 'the sampler imports nothing outside shared/src/sampler' },
          { regex: '^#shared/', message: 'the sampler is the base of shared/: it imports no other entry' },
        ],
      }],
      'no-restricted-properties': ['error', { object: 'Math', property: 'random', message: 'the sampler draws only from its seeded NormalGenerator' }],
      'no-restricted-globals': ['error', { name: 'crypto', message: 'no OS randomness in the sampler' }, { name: 'process', message: 'the sampler reads no environment' }],
    },
  },
  {
    files: ['**/*.js'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      globals: { process: 'readonly', console: 'readonly' },
    },
  },
);
