/** The two vitest tests that stand for one Python unittest run (used inside a describe block). */
import { expect, it } from 'vitest';
import type { PythonRun } from './python.ts';
import { reportPythonSkips, unittestProblem, unittestSummary } from './python.ts';

/**
 * Registers "the Python suite passes (<what>)" and "the Python suite skipped none of its tests";
 * `run()` returns the run made in the caller's beforeAll, `dir` names the suite in skip notices.
 */
export function pythonSuiteTests(what: string, dir: string, run: () => PythonRun): void {
  it(`the Python suite passes (${what})`, () => {
    const python = run();
    const problem = unittestProblem(python);
    if (problem !== null) console.error(python.output.slice(-6000));
    expect(problem).toBeNull();
  });

  it('the Python suite skipped none of its tests (skipped here, loudly, when it did)', ({ skip }) => {
    const python = run();
    reportPythonSkips(python, dir, skip);
    expect(unittestSummary(python.output)?.skipped).toBe(0);
  });
}
