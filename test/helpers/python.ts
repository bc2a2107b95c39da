/**
 * The Python side of the cross-language tests: Debian's python3 with torch and onnx
 * (scripts/setup-python.sh). A suite that needs them reports itself skipped, loudly, where they
 * are missing; the Python unittest suites run as one command each.
 */
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

export const PY = '/usr/bin/python3';
const ROOT = resolve(import.meta.dirname, '..', '..');

/** Why PY cannot import torch and onnx, or null when it can. */
export function pythonProblem(): string | null {
  const r = spawnSync(PY, ['-c', 'import torch, onnx'], { encoding: 'utf8', timeout: 60_000 });
  if (r.error) return r.error.message;
  return r.status === 0 ? null : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`);
}

/** pythonProblem(), and a warning naming `what` and the fix when there is one. */
export function pythonOrWarn(what: string): string | null {
  const missing = pythonProblem();
  if (missing !== null) {
    console.warn(
      `\n*** ${what} SKIPPED: ${PY} cannot import torch and onnx (${missing}).\n` +
        `*** Install Debian's python3-torch and python3-onnx: sudo bash scripts/setup-python.sh ***\n`,
    );
  }
  return missing;
}

export interface PythonRun {
  readonly status: number | null;
  readonly output: string;
}

/** `python3 -m unittest discover -s <dir>` from the repository root, stdout and stderr together. */
export function runPythonSuite(dir: string, env: Readonly<Record<string, string>>): PythonRun {
  const r = spawnSync(PY, ['-m', 'unittest', 'discover', '-s', dir], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 300_000,
    env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1', OMP_NUM_THREADS: '2', ...env },
  });
  return { status: r.status, output: `${r.stdout}\n${r.stderr}${r.error ? `\n${r.error.message}` : ''}` };
}
