/**
 * The BatchMetrics Lambda: a Batch job state change or the schedule in, one Embedded Metric
 * Format line out (core.ts builds it; this adapter reads the queue and the clock).
 */
import { BatchClient, paginateListJobs } from '@aws-sdk/client-batch';
import type { EventBridgeEvent } from 'aws-lambda';
import { LAMBDA_ENV, requiredVar } from '../env.ts';
import { MetricsConfigError } from '../errors.ts';
import type { BatchJobStateDetail } from './core.ts';
import { emfRecord, jobMetrics, METRICS_NAMESPACE, runnableMetrics } from './core.ts';

let batch: BatchClient | undefined;

async function runnableCreatedAt(client: BatchClient, jobQueue: string): Promise<number[]> {
  const out: number[] = [];
  for await (const page of paginateListJobs({ client }, { jobQueue, jobStatus: 'RUNNABLE' })) {
    for (const j of page.jobSummaryList ?? []) if (typeof j.createdAt === 'number') out.push(j.createdAt);
  }
  return out;
}

type Event = EventBridgeEvent<'Batch Job State Change', BatchJobStateDetail> | EventBridgeEvent<'Scheduled Event', unknown>;

export async function handler(event: Event): Promise<void> {
  const namespace = process.env[LAMBDA_ENV.metricsNamespace] ?? METRICS_NAMESPACE;
  const now = Date.now();
  if (event['detail-type'] === 'Batch Job State Change') {
    const detail = event.detail;
    const metrics = jobMetrics(detail);
    if (metrics.length > 0) process.stdout.write(`${emfRecord(namespace, metrics, now, { jobId: detail.jobId ?? '', jobName: detail.jobName ?? '' })}\n`);
    return;
  }
  const queue = requiredVar(process.env, LAMBDA_ENV.jobQueueArn, MetricsConfigError);
  batch ??= new BatchClient({});
  const created = await runnableCreatedAt(batch, queue);
  // Written with process.stdout, not console: EMF must be the whole log line.
  process.stdout.write(`${emfRecord(namespace, runnableMetrics(created, now), now)}\n`);
}
