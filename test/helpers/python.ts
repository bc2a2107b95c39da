/**
 * The Python side of the cross-language tests: the repository's virtualenv (.venv, or $CIL_VENV),
 * made by scripts/setup-python.sh from tools/reference/requirements.txt. A suite that needs it
 * reports itself skipped, loudly, where it is missing; the Python unittest suites run as one
 * command each.
 */
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { announceSkip } from './skips.ts';

const ROOT = resolve(import.meta.dirname, '..', '..');
/** The virtualenv's interpreter. */
export const PY = join(process.env.CIL_VENV ?? join(ROOT, '.venv'), 'bin', 'python');

/** Why PY cannot import `modules` (default torch and onnx), or null when it can. */
export function pythonProblem(modules: readonly string[] = ['torch', 'onnx']): string | null {
  const r = spawnSync(PY, ['-c', `import ${modules.join(', ')}`], { encoding: 'utf8', timeout: 120_000 });
  if (r.error) return r.error.message;
  return r.status === 0 ? null : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`);
}

/** The command that creates the Python environment (`npm test` runs it first). */
export const SETUP_PYTHON = 'bash scripts/setup-python.sh (npm test runs it)';

/** pythonProblem(), and a skip notice naming `what` and the fix when there is one. */
export function pythonOrWarn(what: string, modules: readonly string[] = ['torch', 'onnx']): string | null {
  const missing = pythonProblem(modules);
  if (missing !== null) announceSkip(what, `${PY} cannot import ${modules.join(', ')} (${missing})`, SETUP_PYTHON);
  return missing;
}

export interface PythonRun {
  readonly status: number | null;
  readonly output: string;
}

/** Runs PY with `args` (and `input` on stdin) from the repository root, stdout and stderr together. */
export function runPython(args: readonly string[], env: Readonly<Record<string, string>> = {}, timeoutMs = 300_000, input?: string): PythonRun {
  const r = spawnSync(PY, args, {
    cwd: ROOT,
    input,
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 256 << 20,
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', OMP_NUM_THREADS: '2', ...env },
  });
  return { status: r.status, output: `${r.stdout}\n${r.stderr}${r.error ? `\n${r.error.message}` : ''}` };
}

/**
 * `python -m unittest discover -v -s <dir>` from the repository root (`-v`: one line per test, so
 * skipped tests are named; see unittestSummary).
 */
export function runPythonSuite(dir: string, env: Readonly<Record<string, string>>): PythonRun {
  return runPython(['-m', 'unittest', 'discover', '-v', '-s', dir], env);
}

/** What a unittest run's closing lines say. */
export interface UnittestSummary {
  /** From `Ran N tests in …s`. */
  readonly ran: number;
  /** The verdict line said `OK` (possibly with details), not `FAILED` or `NO TESTS RAN`. */
  readonly ok: boolean;
  readonly failures: number;
  readonly errors: number;
  readonly skipped: number;
  readonly expectedFailures: number;
  readonly unexpectedSuccesses: number;
  /** `name (module.Class.name) ... skipped 'reason'` lines (printed with -v). */
  readonly skippedTests: readonly string[];
}

/**
 * Parses unittest's summary: `Ran N tests in Xs`, a blank line, then `OK`, `OK (skipped=1)`,
 * `FAILED (failures=1, errors=2, skipped=3)` or `NO TESTS RAN`. Null when the output has none
 * (the interpreter never got that far). `/\nOK\b/` alone would take `OK (skipped=1)` for a pass.
 */
export function unittestSummary(output: string): UnittestSummary | null {
  const runs = [...output.matchAll(/^Ran (\d+) tests? in [\d.]+s\s*\n\s*\n(OK|FAILED|NO TESTS RAN)(?: \(([^)\n]*)\))?[ \t]*$/gm)];
  const m = runs.at(-1);
  if (m === undefined) return null;
  const counts = new Map<string, number>();
  for (const part of (m[3] ?? '').split(',')) {
    const kv = /^\s*([a-z ]+)=(\d+)\s*$/.exec(part);
    if (kv) counts.set(kv[1], Number(kv[2]));
  }
  const skippedTests = [...output.matchAll(/^(.*?) \.\.\. skipped (.*)$/gm)].map((x) => `${x[1].trim()}: ${x[2].trim()}`);
  return {
    ran: Number(m[1]),
    ok: m[2] === 'OK',
    failures: counts.get('failures') ?? 0,
    errors: counts.get('errors') ?? 0,
    skipped: counts.get('skipped') ?? 0,
    expectedFailures: counts.get('expected failures') ?? 0,
    unexpectedSuccesses: counts.get('unexpected successes') ?? 0,
    skippedTests,
  };
}

/**
 * Why a unittest run is not a clean pass of at least one test, or null. Skips are not counted here:
 * the caller reports them as vitest skips (reportPythonSkips), never as passes.
 */
export function unittestProblem(run: PythonRun): string | null {
  const s = unittestSummary(run.output);
  if (s === null) return `no unittest summary in the output (exit ${String(run.status)})`;
  if (run.status !== 0 || !s.ok) return `exit ${String(run.status)}: ${s.failures} failures, ${s.errors} errors, ${s.unexpectedSuccesses} unexpected successes of ${s.ran}`;
  if (s.ran === 0 || s.ran === s.skipped) return `no test ran (${s.ran} run, ${s.skipped} skipped)`;
  return null;
}

/**
 * For a vitest test standing for a unittest run's skips: when the run skipped any, a loud '***'
 * skip notice naming them (announceSkip) and `skip()` (vitest then counts this test as skipped); otherwise returns.
 */
export function reportPythonSkips(run: PythonRun, what: string, skip: (note?: string) => never): void {
  const s = unittestSummary(run.output);
  if (s === null || s.skipped === 0) return;
  const names = s.skippedTests.length > 0 ? s.skippedTests : ['(names not printed: run unittest with -v)'];
  // The Python suites skip only where a package of the environment is missing.
  announceSkip(`${what}: ${s.skipped} of ${s.ran} Python tests`, names.join('; '), `${SETUP_PYTHON}, where the reason is a missing package`);
  skip(`${s.skipped} Python tests skipped`);
}
