/**
 * The Python side of the cross-language tests: the repository's virtualenv (.venv, or $CIL_VENV),
 * made by scripts/setup-python.sh from tools/reference/requirements.txt. A suite that needs it
 * reports itself skipped, loudly, where it is missing; the Python unittest suites run as one
 * command each.
 */
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..', '..');
/** The virtualenv's interpreter. */
export const PY = join(process.env.CIL_VENV ?? join(ROOT, '.venv'), 'bin', 'python');

/** Why PY cannot import `modules` (default torch and onnx), or null when it can. */
export function pythonProblem(modules: readonly string[] = ['torch', 'onnx']): string | null {
  const r = spawnSync(PY, ['-c', `import ${modules.join(', ')}`], { encoding: 'utf8', timeout: 120_000 });
  if (r.error) return r.error.message;
  return r.status === 0 ? null : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`);
}

/** pythonProblem(), and a warning naming `what` and the fix when there is one. */
export function pythonOrWarn(what: string, modules: readonly string[] = ['torch', 'onnx']): string | null {
  const missing = pythonProblem(modules);
  if (missing !== null) {
    console.warn(
      `\n*** ${what} SKIPPED: ${PY} cannot import ${modules.join(', ')} (${missing}).\n` +
        `*** Create the Python environment: bash scripts/setup-python.sh ***\n`,
    );
  }
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

/** `python -m unittest discover -s <dir>` from the repository root. */
export function runPythonSuite(dir: string, env: Readonly<Record<string, string>>): PythonRun {
  return runPython(['-m', 'unittest', 'discover', '-s', dir], env);
}
