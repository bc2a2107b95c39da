/**
 * The CLI's start (issue 17): the verb table of cli/main.ts against what the verb modules
 * register, one verb's module loaded per run, and the prebuilt bundle (bin/bundle.js) giving the
 * same output as the TypeScript sources and rebuilding when a source changes.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Help } from 'commander';
import { describe, expect, it } from 'vitest';
import { MissingDependency, missingOptionalPackage, OPTIONAL_PACKAGES } from '../errors.ts';
import { buildFullProgram, buildProgram, VERBS } from '../main.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = join(ROOT, 'bin', 'cil.js');

function cil(args: string[], env: Record<string, string> = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('verb table', () => {
  it('lists every verb the modules register, with their help line and description (add a new verb to VERBS)', async () => {
    const full = await buildFullProgram();
    const help = new Help();
    const registered = full.commands.map((c) => ({ name: c.name(), term: help.subcommandTerm(c), description: c.description() }));
    expect(VERBS.map((v) => ({ name: v.name, term: v.term, description: v.description }))).toEqual(registered);
  });

  it('the top-level help lists the verbs as the full program does, without loading any', async () => {
    const full = await buildFullProgram();
    const lazy = await buildProgram(['--help']);
    expect(lazy.helpInformation()).toBe(full.helpInformation());
  });

  it('a run registers only its verb and the verbs its module brings', async () => {
    expect((await buildProgram(['worker', '--spec', '{}'])).commands.map((c) => c.name())).toEqual(['worker']);
    expect((await buildProgram(['help', 'plan'])).commands.map((c) => c.name())).toEqual(['plan']);
    expect((await buildProgram(['status', 'x'])).commands.map((c) => c.name()).sort()).toEqual(['fetch', 'smoke', 'status', 'submit']);
  });

  it('an unknown verb is a usage error naming it (exit 2)', () => {
    const r = cil(['nosuchverb']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown command 'nosuchverb'/);
  });
});

describe('optional packages (npm on Node 20 leaves them out)', () => {
  /**
   * Node's own error for importing `name` from a folder without node_modules, made by a separate
   * Node process (an import in this one would go through vitest's resolver, which finds the package).
   */
  function importError(name: string): Error {
    const dir = mkdtempSync(join(tmpdir(), 'cil-optional-'));
    try {
      writeFileSync(join(dir, 'm.mjs'), `import(${JSON.stringify(name)}).then(() => console.log('{}'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })));\n`);
      const r = spawnSync(process.execPath, [join(dir, 'm.mjs')], { cwd: dir, encoding: 'utf8' });
      const { code, message } = JSON.parse(r.stdout) as { code?: string; message?: string };
      return Object.assign(new Error(message), { code });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it("OPTIONAL_PACKAGES are package.json's optionalDependencies", () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { optionalDependencies?: Record<string, string> };
    expect([...OPTIONAL_PACKAGES].sort()).toEqual(Object.keys(pkg.optionalDependencies ?? {}).sort());
  });

  it('a verb whose optional package is missing fails as MissingDependency, naming the package and `npm run deps`', () => {
    const missing = importError('aws-local-stepfunctions');
    expect((missing as NodeJS.ErrnoException).code).toBe('ERR_MODULE_NOT_FOUND');
    const e = missingOptionalPackage(missing);
    expect(e).toBeInstanceOf(MissingDependency);
    expect(e?.message).toMatch(/^the package aws-local-stepfunctions is not installed\..*run `npm run deps`/);
    // Any other missing package, or any other error, is left as it is.
    expect(missingOptionalPackage(importError('no-such-package-cil'))).toBeNull();
    expect(missingOptionalPackage(new Error("Cannot find package 'aws-local-stepfunctions'"))).toBeNull();
  });
});

describe('bundle', () => {
  it('gives the same output as the sources, and a changed source rebuilds it', () => {
    const fromSources = cil(['plan', '--family', 'svd', '--steps', '3', '--json'], { CIL_NO_BUNDLE: '1' });
    expect(fromSources.code).toBe(0);
    const bundled = cil(['plan', '--family', 'svd', '--steps', '3', '--json']);
    expect(bundled.stdout).toBe(fromSources.stdout);
    const inputs = join(ROOT, 'dist', 'cli', 'inputs.json');
    // esbuild is a devDependency, so a development checkout always has the bundle after a run.
    expect(existsSync(inputs)).toBe(true);
    const before = (JSON.parse(readFileSync(inputs, 'utf8')) as { startedMs: number }).startedMs;
    const src = join(ROOT, 'cli', 'plan.ts');
    const { atime, mtime } = statSync(src);
    try {
      const later = new Date(Date.now() + 1000);
      utimesSync(src, later, later);
      expect(cil(['plan', '--family', 'svd', '--steps', '3', '--json']).stdout).toBe(fromSources.stdout);
      expect((JSON.parse(readFileSync(inputs, 'utf8')) as { startedMs: number }).startedMs).toBeGreaterThan(before);
    } finally {
      utimesSync(src, atime, mtime);
    }
  });
});
