/**
 * `npm test` (after scripts/bootstrap.js has installed what the tests need): vitest, then every
 * skipped group with its reason and the command that enables it (test/helpers/skips.ts), then one
 * closing line `N passed, M failed, K skipped`, always the last line (CI reads that line).
 * Extra arguments go to vitest (e.g. `npm test -- shared/test/ddim.test.ts`).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { SKIP_LOG_ENV, skipLine } from '../test/helpers/skips.ts';
import type { SkipNotice } from '../test/helpers/skips.ts';

const dir = mkdtempSync(join(tmpdir(), 'cil-vitest-'));
const out = join(dir, 'results.json');
const skipLog = join(dir, 'skips.jsonl');
const ROOT = join(import.meta.dirname, '..');
const vitest = join(ROOT, 'node_modules', 'vitest', 'vitest.mjs');
const r = spawnSync(process.execPath, [vitest, 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${out}`, ...process.argv.slice(2)], {
  stdio: 'inherit',
  env: { ...process.env, [SKIP_LOG_ENV]: skipLog },
});
let passed = 0;
let failed: number;
let skipped = 0;
/** Skipped tests per test file (relative path). */
const skippedIn = new Map<string, number>();
if (existsSync(out)) {
  const j = JSON.parse(readFileSync(out, 'utf8')) as {
    numPassedTests: number;
    numFailedTests: number;
    numPendingTests: number;
    numTodoTests: number;
    numFailedTestSuites: number;
    testResults: { name: string; assertionResults: { status: string }[] }[];
  };
  passed = j.numPassedTests;
  failed = j.numFailedTests + (j.numFailedTestSuites > 0 && j.numFailedTests === 0 ? j.numFailedTestSuites : 0);
  skipped = j.numPendingTests + j.numTodoTests;
  for (const f of j.testResults) {
    const n = f.assertionResults.filter((a) => a.status === 'skipped' || a.status === 'pending' || a.status === 'todo').length;
    if (n > 0) skippedIn.set(relative(ROOT, f.name), n);
  }
} else {
  failed = 1;
}
const notices = existsSync(skipLog)
  ? readFileSync(skipLog, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as SkipNotice)
  : [];
rmSync(dir, { recursive: true, force: true });
process.stdout.write(skipSummary(notices, skippedIn, process.argv.slice(2)));
const code = r.status ?? 1;
if (code !== 0 && failed === 0) failed = 1;
process.stdout.write(`\n${passed} passed, ${failed} failed, ${skipped} skipped\n`);
process.exit(code);

/**
 * The skipped groups, one line each (a group announced by several files once, with its files), and
 * the files that skipped tests without announcing why (not with a name filter, -t, which skips
 * tests on purpose). Empty when nothing was skipped.
 */
function skipSummary(notices: readonly SkipNotice[], skippedIn: ReadonlyMap<string, number>, args: readonly string[]): string {
  const groups = new Map<string, { notice: SkipNotice; files: Set<string> }>();
  for (const n of notices) {
    const key = skipLine(n);
    const g = groups.get(key) ?? { notice: n, files: new Set<string>() };
    if (n.file) g.files.add(n.file);
    groups.set(key, g);
  }
  const announced = new Set(notices.map((n) => n.file));
  const filtered = args.some((a) => a === '-t' || a.startsWith('--testNamePattern') || a.startsWith('-t='));
  const silent = filtered ? [] : [...skippedIn].filter(([file]) => !announced.has(file));
  if (groups.size === 0 && silent.length === 0) return '';
  const lines = ['', 'Skipped groups (README.md, "Skipped tests and how to enable them"):'];
  for (const [line, g] of groups) lines.push(`${line}${g.files.size ? ` [${[...g.files].sort().join(', ')}]` : ''}`);
  for (const [file, n] of silent) lines.push(`*** ${file}: ${n} test${n === 1 ? '' : 's'} skipped without a stated reason (announce it: test/helpers/skips.ts) ***`);
  return `${lines.join('\n')}\n`;
}
