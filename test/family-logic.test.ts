/**
 * Where family logic may live: the sampler is set up only through makePlan (shared/src/sampler/
 * plan.ts), and code branches on a family only in the defaults table (shared/src/sampler/families.ts)
 * and the worker's family adapters (gpu-worker/src/families/), never by comparing family names.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const FOLDERS = ['shared/src', 'gpu-worker/src', 'demo/src', 'cli', 'bench', 'functions/src', 'local/src', 'infra', 'scripts'];

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (name === 'node_modules' || name === 'test' || name.startsWith('.') || name === 'cdk.out') return [];
    if (statSync(p).isDirectory()) return sources(p);
    return name.endsWith('.ts') && !name.endsWith('.test.ts') && !name.endsWith('.d.ts') ? [p] : [];
  });
}

const files = FOLDERS.flatMap((d) => sources(join(ROOT, d))).map((f) => ({ file: relative(ROOT, f), text: readFileSync(f, 'utf8') }));

describe('family logic in one place', () => {
  it('finds the sources', () => {
    expect(files.length).toBeGreaterThan(100);
    expect(files.some((f) => f.file === join('gpu-worker', 'src', 'generate.ts'))).toBe(true);
  });

  it('no family-name comparisons outside the defaults table and the worker adapters', () => {
    const allowed = (f: string): boolean => f === join('shared', 'src', 'sampler', 'families.ts') || f.startsWith(join('gpu-worker', 'src', 'families') + '/');
    const compare = /[!=]==\s*'(dynamicrafter|videocrafter|svd)'|'(dynamicrafter|videocrafter|svd)'\s*[!=]==|\bisVpFamily\b/;
    const found = files.filter((f) => !allowed(f.file) && compare.test(f.text)).map((f) => f.file);
    expect(found).toEqual([]);
  });

  it('only makePlan builds DDIM or Euler plans and initial-latent coefficients', () => {
    const builders = /\b(ddimPlan|eulerPlan|ddimSteps|eulerSteps|vpInitCoefs|veInitCoefs)\(/;
    const found = files.filter((f) => !f.file.startsWith(join('shared', 'src', 'sampler') + '/') && builders.test(f.text)).map((f) => f.file);
    expect(found).toEqual([]);
  });
});
