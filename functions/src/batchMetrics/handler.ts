/**
 * The metrics Lambda: a Batch job state change, a Step Functions execution status change or the
 * schedule in; metrics out through Powertools Metrics (core.ts decides which), the Batch client
 * traced with Powertools Tracer.
 */
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { BatchClient, paginateListJobs } from '@aws-sdk/client-batch';
import type { Context, EventBridgeEvent } from 'aws-lambda';
import { METRICS_NAMESPACE, METRICS_SERVICE } from '#shared/schemas';
import { LAMBDA_ENV, requiredVar } from '../env.ts';
import { MetricsConfigError } from '../errors.ts';
import { lambdaEntry, traced, tracer } from '../powertools.ts';
import type { BatchJobStateDetail, ExecutionStatusDetail, Metric, WatchedQueue } from './core.ts';
import { executionMetrics, jobMetrics, parseWatchedQueues, runnableMetrics } from './core.ts';

let batch: BatchClient | undefined;
let queues: WatchedQueue[] | undefined;

function watchedQueues(): WatchedQueue[] {
  if (queues) return queues;
  const raw = requiredVar(process.env, LAMBDA_ENV.jobQueues, MetricsConfigError);
  try {
    return (queues = parseWatchedQueues(raw));
  } catch (e) {
    throw new MetricsConfigError((e as Error).message);
  }
}

async function runnableCreatedAt(client: BatchClient, jobQueue: string): Promise<number[]> {
  const out: number[] = [];
  for await (const page of paginateListJobs({ client }, { jobQueue, jobStatus: 'RUNNABLE' })) {
    for (const j of page.jobSummaryList ?? []) if (typeof j.createdAt === 'number') out.push(j.createdAt);
  }
  return out;
}

const UNITS: Readonly<Record<Metric['unit'], (typeof MetricUnit)[keyof typeof MetricUnit]>> = { Count: MetricUnit.Count, Seconds: MetricUnit.Seconds, None: MetricUnit.NoUnit };

/** One EMF record of these metrics (and metadata: searchable in the log line, not dimensions). */
function publish(metrics: readonly Metric[], metadata: Readonly<Record<string, string>> = {}): void {
  if (metrics.length === 0) return;
  const m = new Metrics({ namespace: process.env[LAMBDA_ENV.metricsNamespace] ?? METRICS_NAMESPACE, serviceName: METRICS_SERVICE });
  for (const x of metrics) m.addMetric(x.name, UNITS[x.unit], x.value);
  for (const [k, v] of Object.entries(metadata)) m.addMetadata(k, v);
  m.publishStoredMetrics();
}

type Event =
  | EventBridgeEvent<'Batch Job State Change', BatchJobStateDetail>
  | EventBridgeEvent<'Step Functions Execution Status Change', ExecutionStatusDetail>
  | EventBridgeEvent<'Scheduled Event', unknown>;

export const handler: (event: Event, context?: Context) => Promise<void> = lambdaEntry(() => ({ tracer }), publishFor);

async function publishFor(event: Event): Promise<void> {
  if (event['detail-type'] === 'Batch Job State Change') {
    const d = event.detail;
    publish(jobMetrics(d, watchedQueues()), { jobId: d.jobId ?? '', jobName: d.jobName ?? '', jobQueue: d.jobQueue ?? '' });
    return;
  }
  if (event['detail-type'] === 'Step Functions Execution Status Change') {
    const d = event.detail;
    publish(executionMetrics(d), { executionArn: d.executionArn ?? '', error: d.error ?? '' });
    return;
  }
  batch ??= traced(new BatchClient({}));
  const client = batch;
  const created = (await Promise.all(watchedQueues().map((q) => runnableCreatedAt(client, q.arn)))).flat();
  publish(runnableMetrics(created, Date.now()));
}
