/**
 * Metrics AWS Batch does not publish itself, for the dashboard and the alarms:
 *
 * - on each "Batch Job State Change" to SUCCEEDED or FAILED of the stack's queue: GPU-minutes
 *   used (every attempt, including those a Spot reclaim cut short) and a job outcome count;
 * - every few minutes (a schedule): how many jobs wait RUNNABLE and how long the oldest has
 *   waited, which is what the "stuck RUNNABLE" alarm watches (no capacity, a quota, or a job
 *   that fits no instance).
 *
 * Metrics are written as CloudWatch Embedded Metric Format log lines, which CloudWatch Logs turns
 * into metrics: no PutMetricData call, no permission for it, no extra SDK in the bundle. This
 * module is pure (handler.ts is the Lambda adapter); the metric names are a contract with the
 * dashboard and alarms (infra/lib/observability.ts).
 */

/** CloudWatch namespace of the metrics this stack publishes itself. */
export const METRICS_NAMESPACE = 'CIL/Pipeline';

export const METRIC_NAMES = Object.freeze({
  gpuMinutes: 'GpuMinutes',
  batchJobsSucceeded: 'BatchJobsSucceeded',
  batchJobsFailed: 'BatchJobsFailed',
  runnableJobs: 'RunnableJobs',
  oldestRunnableSeconds: 'OldestRunnableSeconds',
});

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

/** Metrics for one finished job. */
export function jobMetrics(detail: BatchJobStateDetail): Metric[] {
  const out: Metric[] = [];
  if (detail.status === 'SUCCEEDED') out.push({ name: METRIC_NAMES.batchJobsSucceeded, value: 1, unit: 'Count' });
  else if (detail.status === 'FAILED') out.push({ name: METRIC_NAMES.batchJobsFailed, value: 1, unit: 'Count' });
  else return out;
  const gpus = gpuCount(detail);
  if (gpus > 0) out.push({ name: METRIC_NAMES.gpuMinutes, value: gpus * runMinutes(detail), unit: 'None' });
  return out;
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

/** One Embedded Metric Format record (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html). */
export function emfRecord(namespace: string, metrics: readonly Metric[], nowMs: number, properties: Readonly<Record<string, string>> = {}): string {
  const record: Record<string, unknown> = {
    _aws: {
      Timestamp: nowMs,
      CloudWatchMetrics: [{ Namespace: namespace, Dimensions: [[]], Metrics: metrics.map((m) => ({ Name: m.name, Unit: m.unit })) }],
    },
    ...properties,
  };
  for (const m of metrics) record[m.name] = m.value;
  return JSON.stringify(record);
}
