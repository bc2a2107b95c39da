/**
 * The house rules of docs/design.md §2.1, checked on the tree itself so that CI fails when one
 * breaks: shared/ is reached only through its entry points (the ESLint rule bites), the sampler
 * stays pure, onnxruntime-node has one importer, no source file grows past 450 lines, and the
 * project cites its own design document, not an external brief.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ESLint } from 'eslint';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');
const tracked = execFileSync('git', ['ls-files', '-co', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' }).split('\n').filter(Boolean);
const isTest = (f: string): boolean => /(^|\/)(test|tests)\//.test(f) || /\.test\.ts$/.test(f) || /(^|\/)test_[^/]*\.py$/.test(f);
// Spelled in two parts so this file does not cite it.
const BRIEF = ['DESIGN', 'md'].join('.');
const SOURCE = /\.(ts|js|py)$/;
const lines = (f: string): number => readFileSync(join(ROOT, f), 'utf8').split('\n').length - 1;

describe('house rules (docs/design.md §2.1)', () => {
  let eslint: ESLint;
  beforeAll(() => {
    eslint = new ESLint({ cwd: ROOT });
  });

  async function ruleIds(text: string, filePath: string): Promise<string[]> {
    const [r] = await eslint.lintText(text, { filePath: join(ROOT, filePath) });
    return r.messages.map((m) => `${m.ruleId}: ${m.message}`);
  }

  it('a deep import of shared/src from another folder fails lint; the entry point passes', async () => {
    const deep = await ruleIds("import { tensor } from '../shared/src/sampler/tensor.ts';\nexport const t = tensor;\n", 'cli/main.ts');
    expect(deep.join('\n')).toMatch(/no-restricted-imports: .*entry points/);
    const entry = await ruleIds("import { tensor } from '#shared/sampler';\nexport const t = tensor;\n", 'cli/main.ts');
    expect(entry.filter((m) => m.startsWith('no-restricted-imports'))).toEqual([]);
  }, 60_000);

  it('the sampler entry stays pure: Node built-ins, Math.random and other entries fail lint', async () => {
    const where = 'shared/src/sampler/tensor.ts';
    expect((await ruleIds("import { readFileSync } from 'node:fs';\nexport const r = readFileSync;\n", where)).join('\n')).toMatch(/no Node built-ins/);
    expect((await ruleIds('export const r = Math.random();\n', where)).join('\n')).toMatch(/no-restricted-properties/);
    expect((await ruleIds("import { readNpy } from '#shared/formats';\nexport const r = readNpy;\n", where)).join('\n')).toMatch(/imports no other entry/);
    expect((await ruleIds("import { readNpy } from '../formats/npy.ts';\nexport const r = readNpy;\n", where)).join('\n')).toMatch(/no-restricted-imports/);
  }, 60_000);

  it('only one module imports onnxruntime-node', () => {
    const importers = tracked.filter((f) => /\.ts$/.test(f) && !isTest(f) && /from 'onnxruntime-node'|import\('onnxruntime-node'\)/.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(importers).toHaveLength(1);
  });

  it('no non-test source file is over 450 lines', () => {
    const long = tracked.filter((f) => SOURCE.test(f) && !isTest(f) && !f.startsWith('node_modules/')).map((f) => [f, lines(f)] as const).filter(([, n]) => n > 450);
    expect(long).toEqual([]);
  });

  it('the design document is the repository\'s own: nothing cites the external brief', () => {
    const citing = tracked.filter((f) => f !== 'docs/design.md' && !f.startsWith('test/fixtures/') && /\.(ts|js|py|md|sh|json)$/.test(f) && readFileSync(join(ROOT, f), 'utf8').includes(BRIEF));
    expect(citing).toEqual([]);
  });
});
