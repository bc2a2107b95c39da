/** The batch summary of functions/src/batchSummary (map run counts, summary.json, SNS). AWS calls go to aws-sdk-client-mock. */
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { DescribeMapRunCommand, ListMapRunsCommand, SFNClient } from '@aws-sdk/client-sfn';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import type { SummaryEvent } from '../src/batchSummary/core.ts';
import { buildSummary, subjectFor, summarize } from '../src/batchSummary/core.ts';

// One mock per client class (a second mockClient of the same class would replace the first).
const sfn = mockClient(SFNClient);
const s3 = mockClient(S3Client);
const sns = mockClient(SNSClient);
afterEach(() => {
  sfn.reset();
  s3.reset();
  sns.reset();
});

describe('batchSummary', () => {
  const event: SummaryEvent = {
    batch: { batchId: 'j-aaa', batchName: 'spring', bucket: 'cil-data', key: 'batches/spring.jsonl', versionId: 'v9', etag: 'e', reportPrefix: 'reports/spring/' },
    executionArn: 'arn:aws:states:us-east-1:1:execution:Batch:j-aaa',
    startedAt: '2025-01-01T00:00:00Z',
  };
  it('writes reports/<name>/summary.json with the map run counts and publishes it', async () => {
    sfn.on(ListMapRunsCommand).resolves({ mapRuns: [{ mapRunArn: 'arn:maprun', executionArn: event.executionArn, stateMachineArn: 'arn:sm', startDate: new Date() }] });
    sfn.on(DescribeMapRunCommand).resolves({ itemCounts: { total: 10, succeeded: 9, failed: 1, timedOut: 0, aborted: 0, pending: 0, running: 0, resultsWritten: 10 } });
    const clients = { sfn: new SFNClient({ region: 'us-east-1' }), s3: new S3Client({ region: 'us-east-1' }), sns: new SNSClient({ region: 'us-east-1' }) };
    const r = await summarize(event, clients, 'arn:topic', new Date('2025-01-01T01:00:00Z'));
    expect(r).toEqual({ summaryKey: 'reports/spring/summary.json', status: 'SUCCEEDED', items: { total: 10, succeeded: 9, failed: 1, timedOut: 0, aborted: 0, pending: 0, running: 0 } });
    const put = s3.commandCalls(PutObjectCommand)[0]?.args[0].input;
    expect(put?.Bucket).toBe('cil-data');
    expect(put?.Key).toBe('reports/spring/summary.json');
    const body = JSON.parse(put?.Body as string) as Record<string, unknown>;
    expect(body).toMatchObject({ format: 'cil-batch-summary/1', status: 'SUCCEEDED', mapRunArn: 'arn:maprun', finishedAt: '2025-01-01T01:00:00.000Z' });
    const pub = sns.commandCalls(PublishCommand)[0]?.args[0].input;
    expect(pub?.TopicArn).toBe('arn:topic');
    expect(pub?.Subject).toBe('CIL batch spring: SUCCEEDED (9/10 succeeded, 1 failed)');
  });

  it('reports a failed map (tolerance exceeded) as FAILED with its error, even with no map run', () => {
    const failed = { ...event, batch: { ...event.batch, mapError: { Error: 'States.ExceedToleratedFailureThreshold', Cause: 'too many' } } };
    const s = buildSummary(failed, null, null, '2025-01-01T01:00:00Z');
    expect(s.status).toBe('FAILED');
    expect(s.error).toEqual({ error: 'States.ExceedToleratedFailureThreshold', cause: 'too many' });
    expect(subjectFor(s)).toBe('CIL batch spring: FAILED');
  });
});

