/** The unittest summary parser the Python wrapper tests use (test/helpers/python.ts). */
import { describe, expect, it } from 'vitest';
import { unittestProblem, unittestSummary } from './helpers/python.ts';

const run = (tail: string, status = 0) => ({ status, output: `test_a (m.C.test_a) ... ok\n${tail}` });
const LINE = '----------------------------------------------------------------------';

describe('unittestSummary', () => {
  it('a clean pass', () => {
    const r = run(`${LINE}\nRan 12 tests in 3.456s\n\nOK\n`);
    expect(unittestSummary(r.output)).toMatchObject({ ran: 12, ok: true, skipped: 0, failures: 0 });
    expect(unittestProblem(r)).toBeNull();
  });

  it('"OK (skipped=1)" is a pass with a skip, and the skipped test is named (what /\\nOK\\b/ took for a clean pass)', () => {
    const r = run(`test_b (m.C.test_b) ... skipped 'open_clip is not installed'\n${LINE}\nRan 2 tests in 0.1s\n\nOK (skipped=1)\n`);
    expect(/\nOK\b/.test(r.output)).toBe(true);
    const s = unittestSummary(r.output)!;
    expect(s).toMatchObject({ ran: 2, ok: true, skipped: 1 });
    expect(s.skippedTests).toEqual(["test_b (m.C.test_b): 'open_clip is not installed'"]);
    expect(unittestProblem(r)).toBeNull();
  });

  it('failures, errors, all skipped, no tests, no summary are problems', () => {
    expect(unittestSummary(`${LINE}\nRan 5 tests in 1.0s\n\nFAILED (failures=1, errors=2, skipped=1)\n`)).toMatchObject({ ok: false, failures: 1, errors: 2, skipped: 1 });
    expect(unittestProblem(run(`Ran 5 tests in 1.0s\n\nFAILED (failures=1)\n`, 1))).toMatch(/1 failures/);
    expect(unittestProblem(run(`Ran 2 tests in 0.0s\n\nOK (skipped=2)\n`))).toMatch(/no test ran/);
    expect(unittestProblem(run(`Ran 0 tests in 0.0s\n\nNO TESTS RAN\n`, 5))).toMatch(/exit 5/);
    expect(unittestProblem(run('Traceback (most recent call last):\nImportError: x\n', 1))).toMatch(/no unittest summary/);
    // An OK printed by a test itself is not the verdict.
    expect(unittestProblem(run('OK\n'))).toMatch(/no unittest summary/);
  });

  it('expected failures and unexpected successes are counted', () => {
    expect(unittestSummary(`Ran 3 tests in 0.0s\n\nOK (expected failures=1, unexpected successes=0)\n`)).toMatchObject({ ok: true, expectedFailures: 1 });
  });
});
