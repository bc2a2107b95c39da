/**
 * No silent skips (issue 18): a suite that skips a group of tests calls announceSkip() with the
 * reason and the command that enables the group. It prints one `*** SKIPPED …` line while the suite
 * loads, and, under `npm test`, records the notice in $CIL_SKIP_LOG (a JSON line per notice), from
 * which scripts/run-tests.ts repeats every skipped group just above its closing line, and names the
 * test files that skipped tests without a notice. README.md "Skipped tests and how to enable them"
 * lists the groups.
 */
import { appendFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { expect } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..', '..');
/** The environment variable naming the notice log; scripts/run-tests.ts sets it. */
export const SKIP_LOG_ENV = 'CIL_SKIP_LOG';

export interface SkipNotice {
  /** What is skipped, e.g. "reference parity: dynamicrafter, videocrafter, svd-cil". */
  readonly group: string;
  /** Why, in a few words. */
  readonly reason: string;
  /** The command (or step) that makes the group run. */
  readonly enable: string;
  /** The test file that skipped (relative to the repository root), when known. */
  readonly file?: string;
}

/** The one line printed for a notice. */
export function skipLine(n: SkipNotice): string {
  return `*** SKIPPED ${n.group}: ${n.reason}. To run it: ${n.enable} ***`;
}

/** The test file being collected or run, relative to the repository root. */
function currentFile(): string | undefined {
  try {
    const p = expect.getState().testPath;
    return p ? relative(ROOT, p) : undefined;
  } catch {
    return undefined;
  }
}

/** Prints the notice's line and records it for the run's summary. */
export function announceSkip(group: string, reason: string, enable: string): void {
  const notice: SkipNotice = { group, reason, enable, file: currentFile() };
  console.warn(`\n${skipLine(notice)}\n`);
  const log = process.env[SKIP_LOG_ENV];
  if (log) appendFileSync(log, `${JSON.stringify(notice)}\n`);
}
