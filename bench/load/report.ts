/**
 * The load report (bench/load/run.ts measures, this accounts): per-job results, every failure
 * with its reason, nearest-rank latency percentiles, throughput, and the text `cil local load`
 * prints.
 */

export type LoadJobStatus = 'SUCCEEDED' | 'FAILED' | 'TIMED_OUT' | 'ABORTED' | 'NO_RESULT' | 'UPLOAD_FAILED' | 'UNFINISHED';

export interface LoadJobResult {
  readonly index: number;
  readonly key: string;
  /** Null when the upload itself failed. */
  readonly jobId: string | null;
  /** Deliberately invalid image. */
  readonly invalid: boolean;
  readonly status: LoadJobStatus;
  /** From just before the upload to the execution's stopDate; null when it did not end. */
  readonly latencyS: number | null;
  readonly failedStep: string | null;
  readonly error: string | null;
  readonly reason: string | null;
}

export interface LoadFailure {
  readonly jobId: string | null;
  readonly key: string;
  readonly status: LoadJobStatus;
  /** True for a deliberately invalid upload that failed as it should. */
  readonly expected: boolean;
  readonly failedStep: string | null;
  readonly error: string | null;
  readonly reason: string | null;
}

export interface LoadReport {
  readonly jobs: number;
  readonly invalid: number;
  readonly succeeded: number;
  /** Ended other than SUCCEEDED with result.json (FAILED, TIMED_OUT, ABORTED, NO_RESULT, UPLOAD_FAILED). */
  readonly failed: number;
  /** Not ended by the deadline. */
  readonly unfinished: number;
  /** Every job that did not succeed, with its reason. */
  readonly failures: readonly LoadFailure[];
  /** Every job accounted for, none unfinished, every valid upload succeeded, every invalid one failed at Validate with InvalidImage. */
  readonly ok: boolean;
  /** From the first upload to the last job accounted for. */
  readonly wallS: number;
  /** Succeeded jobs per minute of wallS. */
  readonly throughputJobsPerMin: number;
  /** Latency percentiles (nearest rank) and maximum over the jobs that succeeded; null when none did. */
  readonly p50S: number | null;
  readonly p95S: number | null;
  readonly maxS: number | null;
  /** The pipeline's worker concurrency, and the most Batch jobs that held a worker at once. */
  readonly workers: number;
  readonly peakWorkers: number;
  readonly timeoutS: number;
  /** The faults of a chaos run, as injected: S3 errors answered by the proxy, worker attempts killed. */
  readonly chaos: { readonly s3ErrorRate: number; readonly killFraction: number; readonly s3FaultsInjected: number; readonly workersKilled: number } | null;
  readonly results: readonly LoadJobResult[];
}

export class PercentileError extends Error {
  override readonly name = 'PercentileError';
}

/**
 * Nearest-rank percentile: the smallest value with at least p % of the values at or below it
 * (always one of the values; p = 0 gives the minimum). Null for no values.
 */
export function percentile(values: readonly number[], p: number): number | null {
  if (!Number.isFinite(p) || p < 0 || p > 100) throw new PercentileError(`percentile: p must be in [0, 100], got ${p}`);
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * s.length));
  return s[rank - 1];
}

/** An invalid upload failed as it should: at Validate, as an invalid image. */
function expectedFailure(r: LoadJobResult): boolean {
  return r.invalid && r.status === 'FAILED' && r.failedStep === 'Validate' && r.error === 'InvalidImage';
}

/** The report of a set of job results (exported for tests). */
export function report(results: readonly LoadJobResult[], m: { jobs: number; invalid: number; wallS: number; workers: number; peakWorkers: number; timeoutS: number; chaos?: LoadReport['chaos'] }): LoadReport {
  const succeeded = results.filter((r) => r.status === 'SUCCEEDED');
  const unfinished = results.filter((r) => r.status === 'UNFINISHED').length;
  const failures: LoadFailure[] = results
    .filter((r) => r.status !== 'SUCCEEDED')
    .map((r) => ({ jobId: r.jobId, key: r.key, status: r.status, expected: expectedFailure(r), failedStep: r.failedStep, error: r.error, reason: r.reason }));
  const latencies = succeeded.map((r) => r.latencyS).filter((v): v is number => v !== null);
  const ok = results.length === m.jobs && unfinished === 0 && results.every((r) => (r.invalid ? expectedFailure(r) : r.status === 'SUCCEEDED'));
  return {
    jobs: m.jobs,
    invalid: m.invalid,
    succeeded: succeeded.length,
    failed: results.length - succeeded.length - unfinished,
    unfinished,
    failures,
    ok,
    wallS: m.wallS,
    throughputJobsPerMin: m.wallS > 0 ? (succeeded.length / m.wallS) * 60 : 0,
    p50S: percentile(latencies, 50),
    p95S: percentile(latencies, 95),
    maxS: latencies.length > 0 ? Math.max(...latencies) : null,
    workers: m.workers,
    peakWorkers: m.peakWorkers,
    timeoutS: m.timeoutS,
    chaos: m.chaos ?? null,
    results,
  };
}

/** A few lines for people: counts, latency, throughput, workers, and each unexpected failure. */
export function formatLoadReport(r: LoadReport): string {
  const f = (v: number | null): string => (v === null ? '–' : `${v.toFixed(2)} s`);
  const lines = [
    `${r.jobs} jobs (${r.invalid} deliberately invalid): ${r.succeeded} succeeded, ${r.failed} failed, ${r.unfinished} unfinished`,
    `wall ${r.wallS.toFixed(1)} s, ${r.throughputJobsPerMin.toFixed(1)} jobs/min; latency p50 ${f(r.p50S)}, p95 ${f(r.p95S)}, max ${f(r.maxS)}`,
    `workers ${r.workers}, at most ${r.peakWorkers} at once`,
  ];
  if (r.chaos) lines.push(`chaos: S3 503 rate ${r.chaos.s3ErrorRate} (${r.chaos.s3FaultsInjected} injected), ${r.chaos.workersKilled} worker attempts killed mid-denoise`);
  const unexpected = r.failures.filter((x) => !x.expected);
  for (const x of unexpected.slice(0, 20)) lines.push(`  ${x.status} ${x.jobId ?? '(no job)'} ${x.key}${x.failedStep ? ` in ${x.failedStep}` : ''}${x.error ? ` (${x.error})` : ''}: ${x.reason ?? ''}`);
  if (unexpected.length > 20) lines.push(`  … and ${unexpected.length - 20} more`);
  lines.push(r.ok ? 'every job accounted for' : 'NOT OK: see the failures above');
  return `${lines.join('\n')}\n`;
}
