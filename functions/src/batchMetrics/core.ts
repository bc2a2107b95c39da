/**
 * Metrics AWS Batch and Step Functions do not publish themselves, for the dashboard and alarms:
 *
 * - on each "Batch Job State Change" to SUCCEEDED or FAILED of one of the stack's queues:
 *   GPU-minutes used (every attempt, including those a Spot reclaim cut short), the estimated
 *   spend (instance-hours at the on-demand price of the queue's fleet) and a job outcome count;
 * - on each "Step Functions Execution Status Change" to FAILED, TIMED_OUT or ABORTED of the
 *   stack's workflows: a failure count, user-caused (InvalidImage, InvalidRequest, …:
 *   USER_ERROR_NAMES) or system — alarms watch the system failures only;
 * - every few minutes (a schedule): how many jobs wait RUNNABLE and how long the oldest has
 *   waited, which the queue-wait alarm watches (no capacity, a quota, a job that fits nowhere).
 *
 * Metrics are written with Powertools for AWS Lambda's Metrics (CloudWatch Embedded Metric Format
 * lines on stdout, turned into metrics by CloudWatch Logs: no PutMetricData call). This module is
 * pure (handler.ts is the Lambda adapter); the names are a contract with the dashboard and the
 * alarms (infra/lib/observability.ts), kept in #shared/schemas (metrics.ts).
 */
import { METRIC_NAMES } from '#shared/schemas';
import { failureKind } from '../errors.ts';

/** One queue the function watches (the CIL_JOB_QUEUES variable). */
export interface WatchedQueue {
  readonly arn: string;
  readonly fleet: string;
  readonly tier: string;
  /** On-demand price of one instance of the fleet, per hour (an estimate). */
  readonly hourlyUsd: number;
}

interface ResourceRequirement {
  readonly type?: string;
  readonly value?: string;
}

interface Attempt {
  readonly startedAt?: number;
  readonly stoppedAt?: number;
}

/** The fields of a Batch Job State Change event's detail that are used here. */
export interface BatchJobStateDetail {
  readonly jobId?: string;
  readonly jobName?: string;
  readonly jobQueue?: string;
  readonly status?: string;
  readonly startedAt?: number;
  readonly stoppedAt?: number;
  readonly attempts?: readonly Attempt[];
  readonly container?: { readonly resourceRequirements?: readonly ResourceRequirement[] };
  readonly arrayProperties?: { readonly size?: number };
}

/** The fields of a Step Functions Execution Status Change event's detail that are used here. */
export interface ExecutionStatusDetail {
  readonly executionArn?: string;
  readonly stateMachineArn?: string;
  readonly status?: string;
  readonly error?: string | null;
  readonly cause?: string | null;
}

export interface Metric {
  readonly name: string;
  readonly value: number;
  readonly unit: 'Count' | 'Seconds' | 'None';
}

/** GPUs a job asked for (0 for CPU-only jobs and for array parents, whose children report). */
export function gpuCount(detail: BatchJobStateDetail): number {
  const gpu = detail.container?.resourceRequirements?.find((r) => r.type === 'GPU');
  const n = gpu?.value === undefined ? 0 : Number(gpu.value);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

/** Wall minutes the job held its instance, summed over attempts (job-level times when none are listed). */
export function runMinutes(detail: BatchJobStateDetail): number {
  const spans: Attempt[] = detail.attempts && detail.attempts.length > 0 ? [...detail.attempts] : [{ startedAt: detail.startedAt, stoppedAt: detail.stoppedAt }];
  let ms = 0;
  for (const a of spans) {
    if (typeof a.startedAt === 'number' && typeof a.stoppedAt === 'number' && a.stoppedAt > a.startedAt) ms += a.stoppedAt - a.startedAt;
  }
  return ms / 60_000;
}

/**
 * Metrics for one finished job. The spend assumes one GPU job per instance (every fleet is of
 * one-GPU instances, and a job asks for the whole instance): run hours × the fleet's price.
 */
export function jobMetrics(detail: BatchJobStateDetail, queues: readonly WatchedQueue[] = []): Metric[] {
  const out: Metric[] = [];
  if (detail.status === 'SUCCEEDED') out.push({ name: METRIC_NAMES.batchJobsSucceeded, value: 1, unit: 'Count' });
  else if (detail.status === 'FAILED') out.push({ name: METRIC_NAMES.batchJobsFailed, value: 1, unit: 'Count' });
  else return out;
  const gpus = gpuCount(detail);
  if (gpus > 0) {
    const minutes = runMinutes(detail);
    out.push({ name: METRIC_NAMES.gpuMinutes, value: gpus * minutes, unit: 'None' });
    const q = queues.find((x) => x.arn === detail.jobQueue);
    if (q) out.push({ name: METRIC_NAMES.gpuSpendUsd, value: (minutes / 60) * q.hourlyUsd, unit: 'None' });
  }
  return out;
}

/** A failed, timed-out or aborted execution: one user or system failure. Nothing for other statuses. */
export function executionMetrics(detail: ExecutionStatusDetail): Metric[] {
  if (detail.status !== 'FAILED' && detail.status !== 'TIMED_OUT' && detail.status !== 'ABORTED') return [];
  // A time-out or an abort is never the user's doing.
  const kind = detail.status === 'FAILED' ? failureKind(detail.error) : 'system';
  return [{ name: kind === 'user' ? METRIC_NAMES.userFailures : METRIC_NAMES.systemFailures, value: 1, unit: 'Count' }];
}

/** Count and oldest wait of RUNNABLE jobs, from their createdAt (ms since epoch). */
export function runnableMetrics(createdAt: readonly number[], nowMs: number): Metric[] {
  let oldest = nowMs;
  for (const t of createdAt) if (t < oldest) oldest = t;
  return [
    { name: METRIC_NAMES.runnableJobs, value: createdAt.length, unit: 'Count' },
    { name: METRIC_NAMES.oldestRunnableSeconds, value: Math.max(0, (nowMs - oldest) / 1000), unit: 'Seconds' },
  ];
}

/** Parses CIL_JOB_QUEUES; throws with what is wrong. */
export function parseWatchedQueues(raw: string): WatchedQueue[] {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw new Error('CIL_JOB_QUEUES is not JSON');
  }
  if (!Array.isArray(v) || v.length === 0) throw new Error('CIL_JOB_QUEUES must be a non-empty JSON list of {arn, fleet, tier, hourlyUsd}');
  return v.map((q: unknown, i) => {
    const o = q as Partial<WatchedQueue> | null;
    if (!o || typeof o.arn !== 'string' || typeof o.fleet !== 'string' || typeof o.tier !== 'string' || typeof o.hourlyUsd !== 'number') {
      throw new Error(`CIL_JOB_QUEUES[${i}] must be {arn, fleet, tier, hourlyUsd}`);
    }
    return { arn: o.arn, fleet: o.fleet, tier: o.tier, hourlyUsd: o.hourlyUsd };
  });
}
