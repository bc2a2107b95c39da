/**
 * The worker's metrics, as one CloudWatch Embedded Metric Format line per job on stdout (the job's
 * log): the execution provider the job ran on and its step time, so that a CPU fallback or a slow
 * GPU raises an alarm instead of an hour-long CPU job. Batch's awslogs driver does not mark lines
 * as EMF, so the stack turns them into metrics with metric filters on these fields (the names are
 * the contract: WORKER_METRICS in #shared/schemas, docs/worker.md "Metrics"); the same line is
 * valid EMF wherever EMF is extracted.
 */
import { METRICS_NAMESPACE, WORKER_METRICS } from '#shared/schemas';

export interface WorkerMetricValues {
  readonly family: string;
  readonly executionProvider: string;
  readonly values: Partial<Record<keyof typeof WORKER_METRICS, number>>;
}

const UNITS: Record<keyof typeof WORKER_METRICS, string> = {
  executionProviderFallback: 'Count',
  gpuUnavailable: 'Count',
  stepSeconds: 'Seconds',
  downloadSeconds: 'Seconds',
  sessionOpenSeconds: 'Seconds',
};

/** The EMF record: metrics by family and provider, and the fallback/GPU counts also without dimensions (what the alarms watch). */
export function workerMetricsLine(m: WorkerMetricValues, now: Date = new Date()): Record<string, unknown> {
  const keys = (Object.keys(m.values) as (keyof typeof WORKER_METRICS)[]).filter((k) => Number.isFinite(m.values[k]));
  const def = (k: keyof typeof WORKER_METRICS): { Name: string; Unit: string } => ({ Name: WORKER_METRICS[k], Unit: UNITS[k] });
  const counts = keys.filter((k) => k === 'executionProviderFallback' || k === 'gpuUnavailable');
  const directives: Record<string, unknown>[] = [{ Namespace: METRICS_NAMESPACE, Dimensions: [['Family', 'ExecutionProvider']], Metrics: keys.map(def) }];
  if (counts.length) directives.push({ Namespace: METRICS_NAMESPACE, Dimensions: [[]], Metrics: counts.map(def) });
  const line: Record<string, unknown> = {
    event: 'metrics',
    _aws: { Timestamp: now.getTime(), CloudWatchMetrics: directives },
    Family: m.family,
    ExecutionProvider: m.executionProvider,
  };
  for (const k of keys) line[WORKER_METRICS[k]] = m.values[k];
  return line;
}
