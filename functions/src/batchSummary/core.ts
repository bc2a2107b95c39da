/**
 * Last step of the batch-production workflow, whether the Distributed Map succeeded or failed:
 * looks up the map run's item counts, writes `reports/<batchName>/summary.json` beside the map
 * run's own result files, and publishes the summary to the notification topic. The logic, with
 * its clients handed in; handler.ts is the Lambda adapter.
 */
import { PutObjectCommand } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { DescribeMapRunCommand, ListMapRunsCommand } from '@aws-sdk/client-sfn';
import type { SFNClient } from '@aws-sdk/client-sfn';
import { PublishCommand } from '@aws-sdk/client-sns';
import type { SNSClient } from '@aws-sdk/client-sns';
import type { BatchInput } from '../starter/core.ts';

export const SUMMARY_FORMAT = 'cil-batch-summary/1';

export interface StatesError {
  readonly Error?: string;
  readonly Cause?: string;
}

/** What the workflow passes: its state (the starter's input plus the map's error, if any). */
export interface SummaryEvent {
  readonly batch: BatchInput & { readonly mapError?: StatesError };
  readonly executionArn: string;
  readonly startedAt: string;
}

export interface ItemCounts {
  readonly total: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly timedOut: number;
  readonly aborted: number;
  readonly pending: number;
  readonly running: number;
}

export interface BatchSummary {
  readonly format: typeof SUMMARY_FORMAT;
  readonly batchId: string;
  readonly batchName: string;
  readonly manifest: { readonly bucket: string; readonly key: string; readonly versionId: string | null };
  readonly status: 'SUCCEEDED' | 'FAILED';
  readonly error: { readonly error: string; readonly cause: string } | null;
  readonly items: ItemCounts | null;
  /** Prefix holding the map run's per-item results (manifest.json, SUCCEEDED_n.json, FAILED_n.json). */
  readonly resultsPrefix: string;
  readonly mapRunArn: string | null;
  readonly executionArn: string;
  readonly startedAt: string;
  readonly finishedAt: string;
}

export function summaryKey(reportPrefix: string): string {
  return `${reportPrefix}summary.json`;
}

/** Builds the summary document (pure). The map's error wins; without one, failed items below tolerance still mean SUCCEEDED. */
export function buildSummary(event: SummaryEvent, mapRunArn: string | null, items: ItemCounts | null, finishedAt: string): BatchSummary {
  const b = event.batch;
  const err = b.mapError;
  return {
    format: SUMMARY_FORMAT,
    batchId: b.batchId,
    batchName: b.batchName,
    manifest: { bucket: b.bucket, key: b.key, versionId: b.versionId },
    status: err ? 'FAILED' : 'SUCCEEDED',
    error: err ? { error: err.Error ?? 'Unknown', cause: err.Cause ?? '' } : null,
    items,
    resultsPrefix: b.reportPrefix,
    mapRunArn,
    executionArn: event.executionArn,
    startedAt: event.startedAt,
    finishedAt,
  };
}

export function subjectFor(s: BatchSummary): string {
  const counts = s.items ? ` (${s.items.succeeded}/${s.items.total} succeeded, ${s.items.failed + s.items.timedOut + s.items.aborted} failed)` : '';
  // SNS subjects: at most 100 printable ASCII characters.
  return `CIL batch ${s.batchName}: ${s.status}${counts}`.replace(/[^\x20-\x7e]/g, '?').slice(0, 100);
}

export interface Clients {
  readonly sfn: Pick<SFNClient, 'send'>;
  readonly s3: Pick<S3Client, 'send'>;
  readonly sns: Pick<SNSClient, 'send'>;
}

async function mapRunOf(sfn: Clients['sfn'], executionArn: string): Promise<{ arn: string | null; items: ItemCounts | null }> {
  const runs = await sfn.send(new ListMapRunsCommand({ executionArn }));
  const arn = runs.mapRuns?.[0]?.mapRunArn ?? null;
  if (!arn) return { arn: null, items: null };
  const d = await sfn.send(new DescribeMapRunCommand({ mapRunArn: arn }));
  const c = d.itemCounts;
  if (!c) return { arn, items: null };
  return {
    arn,
    items: {
      total: c.total ?? 0,
      succeeded: c.succeeded ?? 0,
      failed: c.failed ?? 0,
      timedOut: c.timedOut ?? 0,
      aborted: c.aborted ?? 0,
      pending: c.pending ?? 0,
      running: c.running ?? 0,
    },
  };
}

/** Looks up, writes and publishes the summary; returns a small result for the workflow. */
export async function summarize(event: SummaryEvent, clients: Clients, topicArn: string, now: Date): Promise<{ summaryKey: string; status: BatchSummary['status']; items: ItemCounts | null }> {
  const run = await mapRunOf(clients.sfn, event.executionArn);
  const summary = buildSummary(event, run.arn, run.items, now.toISOString());
  const key = summaryKey(event.batch.reportPrefix);
  const body = `${JSON.stringify(summary, null, 2)}\n`;
  await clients.s3.send(new PutObjectCommand({ Bucket: event.batch.bucket, Key: key, Body: body, ContentType: 'application/json' }));
  await clients.sns.send(new PublishCommand({ TopicArn: topicArn, Subject: subjectFor(summary), Message: body }));
  return { summaryKey: key, status: summary.status, items: summary.items };
}
