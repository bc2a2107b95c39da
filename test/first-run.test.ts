/**
 * The first ten minutes (issue 18): `npm run demo` and `npm test` install what they need
 * (scripts/bootstrap.js), npm prints no warnings, and no test is skipped without saying why and how
 * to enable it (test/helpers/skips.ts, scripts/run-tests.ts).
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  scripts: Record<string, string>;
  engines?: Record<string, string>;
  devDependencies: Record<string, string>;
  allowScripts: Record<string, boolean>;
};
const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string; optional?: boolean }> };
const work = mkdtempSync(join(tmpdir(), 'cil-first-run-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** npm's entry script: the npm running `npm test`, else the one on PATH. */
function npmCli(): string {
  const fromNpm = process.env.npm_execpath;
  if (fromNpm && existsSync(fromNpm)) return fromNpm;
  const r = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' });
  return realpathSync(r.stdout.trim());
}

/** Runs npm (on this process's Node, the pinned 24, as bootstrap.js runs `npm ci`) in `cwd`. */
function npm(args: readonly string[], cwd: string): { status: number | null; output: string } {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_config_')));
  const r = spawnSync(process.execPath, [npmCli(), ...args], { cwd, encoding: 'utf8', env, timeout: 120_000 });
  return { status: r.status, output: `${r.stdout}${r.stderr}` };
}

/**
 * Which `engines.node` ranges reject Node 20.20.2, by npm's own semver (shipped inside npm), so the
 * answer is npm's.
 */
function rejectNode20(ranges: readonly string[]): string[] {
  const semverPath = join(dirname(npmCli()), '..', 'node_modules', 'semver', 'index.js');
  const script = `const s = require(${JSON.stringify(semverPath)}); process.stdout.write(JSON.stringify(${JSON.stringify(ranges)}.filter((r) => !s.satisfies('20.20.2', r))))`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cannot load npm's semver at ${semverPath}: ${r.stderr}`);
  return JSON.parse(r.stdout) as string[];
}

describe('two commands: npm run demo and npm test install what they need', () => {
  it('the demo and test scripts go through scripts/bootstrap.js, which hands over to the pinned Node', () => {
    expect(pkg.scripts.demo).toBe('node scripts/bootstrap.js demo');
    expect(pkg.scripts.test).toBe('node scripts/bootstrap.js test');
    const src = readFileSync(join(ROOT, 'scripts', 'bootstrap.js'), 'utf8');
    expect(src).toContain("join(ROOT, 'node_modules', 'node', 'bin', 'node')");
    // Plain JavaScript for the system's node: no type annotations, no .ts imports.
    expect(src).not.toMatch(/from '[^']*\.ts'/);
    expect(pkg.devDependencies.node).toMatch(/^\^24\./);
    expect(lock.packages['node_modules/node'].version).toMatch(/^24\./);
  });

  /** A tree with bootstrap.js and the given lockfiles; returns what `bootstrap.js check` says. */
  function check(name: string, lockPackages: Record<string, object>, hidden: Record<string, object> | null, pinnedNode = true, optionalDependencies: Record<string, string> = {}): { status: number | null; out: string } {
    const dir = join(work, name);
    mkdirSync(join(dir, 'scripts'), { recursive: true });
    copyFileSync(join(ROOT, 'scripts', 'bootstrap.js'), join(dir, 'scripts', 'bootstrap.js'));
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module', optionalDependencies }));
    writeFileSync(join(dir, 'package-lock.json'), JSON.stringify({ lockfileVersion: 3, packages: { '': {}, ...lockPackages } }));
    if (hidden !== null) {
      mkdirSync(join(dir, 'node_modules', 'node', 'bin'), { recursive: true });
      writeFileSync(join(dir, 'node_modules', '.package-lock.json'), JSON.stringify({ lockfileVersion: 3, packages: hidden }));
      if (pinnedNode) writeFileSync(join(dir, 'node_modules', 'node', 'bin', 'node'), '');
    }
    const r = spawnSync(process.execPath, [join(dir, 'scripts', 'bootstrap.js'), 'check'], { encoding: 'utf8' });
    return { status: r.status, out: r.stdout.trim() };
  }

  it('bootstrap.js runs `npm ci` exactly when node_modules differs from package-lock.json', () => {
    const want = {
      'node_modules/node': { version: '24.21.0' },
      'node_modules/a': { version: '1.0.0' },
      'node_modules/@esbuild/darwin-arm64': { version: '0.28.2', optional: true },
    };
    const installed = { 'node_modules/node': { version: '24.21.0' }, 'node_modules/a': { version: '1.0.0' } };
    expect(check('fresh', want, installed)).toEqual({ status: 0, out: 'npm: node_modules matches package-lock.json' });
    expect(check('clone', want, null)).toEqual({ status: 1, out: 'npm: node_modules is missing' });
    expect(check('older', want, { ...installed, 'node_modules/a': { version: '0.9.0' } }).out).toBe('npm: node_modules/a is 0.9.0, package-lock.json wants 1.0.0');
    expect(check('partial', want, { 'node_modules/node': { version: '24.21.0' } }).out).toBe('npm: node_modules/a is not installed');
    expect(check('extra', want, { ...installed, 'node_modules/b': { version: '2.0.0' } }).out).toBe('npm: node_modules/b is installed but not in package-lock.json');
    expect(check('no-binary', want, installed, false).out).toMatch(/^npm: the pinned Node .* is missing/);
    // The project's own optional dependencies (left out by npm on Node 20) are needed all the same;
    // a platform's optional package (esbuild's for another OS) is not.
    const withOptional = { ...want, 'node_modules/c': { version: '3.0.0', optional: true } };
    expect(check('optional-missing', withOptional, installed, true, { c: '^3.0.0' }).out).toMatch(/^npm: node_modules\/c is not installed \(npm leaves this optional package out when it runs on Node\.js older/);
    expect(check('optional-there', withOptional, { ...installed, 'node_modules/c': { version: '3.0.0', optional: true } }, true, { c: '^3.0.0' }).status).toBe(0);
  });

  it('bootstrap.js is silent and fast when nothing is missing (this checkout)', () => {
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [join(ROOT, 'scripts', 'bootstrap.js'), 'deps'], { encoding: 'utf8' });
    expect(r.status).toBe(0);
    expect(`${r.stdout}${r.stderr}`).toBe('');
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('setup-python.sh says when pip fails, tries once more, and stops (no silent half-installed .venv)', () => {
    // A stand-in Python 3.11 whose virtualenvs' pip fails with exit 3 the first `fails` times.
    const dir = join(work, 'pip-fails');
    mkdirSync(dir, { recursive: true });
    const counter = join(dir, 'pip-calls');
    const base = join(dir, 'python3.11');
    const venvPython = `#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
  n=$(cat "${counter}" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "${counter}"
  [ "$n" -gt "$FAILS" ] || { echo "ERROR: stand-in pip failure $n" >&2; exit 3; }
  exit 0
fi
cat > /dev/null
echo "setup-python: torch 0, onnx 0 in stand-in"
exit 0
`;
    writeFileSync(base, `#!/bin/sh\nif [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin"; cat > "$3/bin/python" <<'EOF'\n${venvPython}EOF\nchmod +x "$3/bin/python"; fi\nexit 0\n`);
    chmodSync(base, 0o755);
    const run = (fails: number) => {
      rmSync(join(dir, 'venv'), { recursive: true, force: true });
      rmSync(counter, { force: true });
      return spawnSync('bash', [join(ROOT, 'scripts', 'setup-python.sh')], {
        cwd: ROOT,
        encoding: 'utf8',
        env: { ...process.env, CIL_VENV: join(dir, 'venv'), CIL_PYTHON_BASE: base, FAILS: String(fails) },
      });
    };
    const twice = run(2);
    expect(twice.status).toBe(1);
    expect(twice.stderr).toContain('setup-python: pip install failed (exit 3; above 128 means killed by a signal); trying once more');
    expect(twice.stderr).toContain('setup-python: pip install failed again (exit 3)');
    expect(existsSync(join(dir, 'venv', '.requirements.sha256'))).toBe(false);
    const once = run(1);
    expect(once.status, once.stderr).toBe(0);
    expect(once.stderr).toContain('trying once more');
    expect(readFileSync(counter, 'utf8').trim()).toBe('2');
    expect(existsSync(join(dir, 'venv', '.requirements.sha256'))).toBe(true);
  });

  it('the setup scripts print nothing with CIL_SETUP_QUIET when there is nothing to do', () => {
    // setup-python.sh against a stand-in virtualenv: its stamp, then the installed-versions check.
    const venv = join(work, 'venv');
    mkdirSync(join(venv, 'bin'), { recursive: true });
    writeFileSync(join(venv, 'bin', 'python'), '#!/bin/sh\nexit 0\n');
    chmodSync(join(venv, 'bin', 'python'), 0o755);
    const run = (quiet: boolean) =>
      spawnSync('bash', [join(ROOT, 'scripts', 'setup-python.sh')], {
        cwd: ROOT,
        encoding: 'utf8',
        env: { ...process.env, CIL_VENV: venv, CIL_SETUP_QUIET: quiet ? '1' : '' },
      });
    // No stamp: the stand-in python says every pinned version is installed.
    let r = run(true);
    expect([r.status, r.stdout, r.stderr]).toEqual([0, '', '']);
    expect(run(false).stdout).toContain('holds the versions of tools/reference/requirements.txt');
    const sha = spawnSync('sha256sum', [join(ROOT, 'tools', 'reference', 'requirements.txt')], { encoding: 'utf8' }).stdout.split(' ')[0];
    writeFileSync(join(venv, '.requirements.sha256'), `${sha}\n`);
    r = run(true);
    expect([r.status, r.stdout, r.stderr]).toEqual([0, '', '']);
    expect(run(false).stdout).toContain('matches tools/reference/requirements.txt');
    expect(readFileSync(join(ROOT, 'scripts', 'setup-system.sh'), 'utf8')).toContain('[ -n "${CIL_SETUP_QUIET:-}" ] || echo "setup-system: all present');
  });
});

describe('quiet installs: npm prints no warnings', () => {
  it('no .npmrc key npm does not know (npm config list warns about none)', () => {
    const r = npm(['config', 'list'], ROOT);
    expect(r.status).toBe(0);
    expect(r.output).not.toMatch(/npm warn/i);
  });

  it('`npm ci --dry-run` on the pinned Node prints no warning (no EBADENGINE, no unknown config)', () => {
    const dir = join(work, 'ci');
    mkdirSync(dir);
    for (const f of ['package.json', 'package-lock.json', '.npmrc']) if (existsSync(join(ROOT, f))) copyFileSync(join(ROOT, f), join(dir, f));
    const r = npm(['ci', '--dry-run', '--no-audit', '--no-fund'], dir);
    expect(r.status, r.output.slice(-2000)).toBe(0);
    expect(r.output.split('\n').filter((l) => /npm warn/i.test(l))).toEqual([]);
  }, 120_000);

  it("`npm ci --dry-run` on the system's node prints no warning either (no EBADENGINE on Node 20)", () => {
    // The system's node, as a hand-typed `npm ci` runs it (not the pinned one npm test runs on).
    const nodes = ['/usr/bin/node', '/usr/local/bin/node'].filter((p) => existsSync(p));
    const dir = join(work, 'ci-system');
    mkdirSync(dir);
    for (const f of ['package.json', 'package-lock.json', '.npmrc']) if (existsSync(join(ROOT, f))) copyFileSync(join(ROOT, f), join(dir, f));
    // With no system node (a machine with only the pinned one), this node stands in.
    for (const node of nodes.length > 0 ? nodes : [process.execPath]) {
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.toLowerCase().startsWith('npm_config_')));
      const r = spawnSync(node, [npmCli(), 'ci', '--dry-run', '--no-audit', '--no-fund'], { cwd: dir, encoding: 'utf8', env, timeout: 120_000 });
      const output = `${r.stdout}${r.stderr}`;
      expect(r.status, output.slice(-2000)).toBe(0);
      expect(output.split('\n').filter((l) => /npm warn/i.test(l)), node).toEqual([]);
    }
  }, 240_000);

  it('every package a Node 20 npm must install accepts Node 20 (the rest are optional, installed by bootstrap.js on the pinned Node)', () => {
    const entries = lock.packages as Record<string, { version?: string; optional?: boolean; engines?: Record<string, string> }>;
    const required = Object.entries(entries).filter(([p, v]) => p !== '' && !v.optional && v.engines?.node !== undefined);
    const rejected = new Set(rejectNode20(required.map(([, v]) => v.engines?.node ?? '')));
    expect(required.filter(([, v]) => rejected.has(v.engines?.node ?? '')).map(([p, v]) => `${p}@${v.version}: ${v.engines?.node}`)).toEqual([]);
    // The check itself bites: the ranges that made npm warn before (vitest 5, commander 15).
    expect(rejectNode20(['^22.12.0 || ^24.0.0 || >=26.0.0', '>=22.12.0', '>=20'])).toEqual(['^22.12.0 || ^24.0.0 || >=26.0.0', '>=22.12.0']);
  });

  it('the Node 24 pin is the `node` devDependency, not an `engines` field that warns on the system node', () => {
    // npm checks `engines` against the node running npm (the system's, 20 on the dev machines), not
    // against the pinned one that runs the code; bootstrap.js and bin/cil.js switch to the pinned one.
    expect(pkg.engines?.node).toBeUndefined();
  });

  it("allowScripts runs node's and esbuild's install scripts and not onnxruntime-node's (no CUDA download)", () => {
    expect(pkg.allowScripts).toEqual({ node: true, esbuild: true, 'onnxruntime-node': false });
    // The CPU binaries ship inside the package; the script would only add the CUDA provider.
    const bin = join(ROOT, 'node_modules', 'onnxruntime-node', 'bin', 'napi-v6', process.platform, process.arch);
    expect(existsSync(join(bin, 'onnxruntime_binding.node'))).toBe(true);
    if (process.platform === 'linux' && process.arch === 'x64') expect(existsSync(join(bin, 'libonnxruntime_providers_cuda.so'))).toBe(false);
    // The GPU image asks for the CUDA provider itself, running the script by hand.
    const dockerfile = readFileSync(join(ROOT, 'gpu-worker', 'Dockerfile'), 'utf8');
    expect(dockerfile).toContain('ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js');
  });
});

describe('no silent skips', () => {
  /** Test files under the suite's folders (those vitest.config.ts includes). */
  function testFiles(dir: string): string[] {
    return readdirSync(dir).flatMap((name) => {
      const p = join(dir, name);
      if (name === 'node_modules' || name.startsWith('.') || name === 'fixtures') return [];
      if (statSync(p).isDirectory()) return testFiles(p);
      return name.endsWith('.test.ts') ? [p] : [];
    });
  }

  it('every test file that can skip announces why (announceSkip, pythonOrWarn, reportPythonSkips or refFixtures)', () => {
    const files = ['shared', 'gpu-worker', 'demo', 'functions', 'infra', 'cli', 'test'].flatMap((d) => testFiles(join(ROOT, d)));
    expect(files.length).toBeGreaterThan(50);
    const silent = files.filter((f) => {
      const src = readFileSync(f, 'utf8');
      const skips = /\.(skipIf|runIf|skip|todo)\(|\bskip\(/.test(src);
      const announces = /announceSkip|pythonOrWarn|reportPythonSkips|HAVE_REFERENCE/.test(src);
      return skips && !announces && f !== join(ROOT, 'test', 'first-run.test.ts');
    });
    expect(silent.map((f) => relative(ROOT, f))).toEqual([]);
  });

  it('run-tests.ts lists each skipped group with its reason and command, names silent skips, and ends with the count line', () => {
    const r = spawnSync(process.execPath, [join(ROOT, 'scripts', 'run-tests.ts'), '--config', 'test/fixtures/skips/vitest.config.ts'], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 120_000,
    });
    expect(r.status, r.stderr.slice(-2000)).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.at(-1)).toBe('2 passed, 0 failed, 3 skipped');
    const summary = lines.slice(lines.indexOf('Skipped groups (README.md, "Skipped tests and how to enable them"):'));
    expect(summary.slice(1, 3)).toEqual([
      '*** SKIPPED fixture group: the fixture has no GPU. To run it: CIL_FIXTURE_GPU=1 npm test *** [test/fixtures/skips/announced.check.ts]',
      '*** test/fixtures/skips/silent.check.ts: 1 test skipped without a stated reason (announce it: test/helpers/skips.ts) ***',
    ]);
  }, 120_000);
});
