/**
 * The glue Lambdas of infra/runtime: starter (idempotent execution names), prepareItem (manifest
 * lines), batchSummary, batchMetrics. AWS calls go to aws-sdk-client-mock.
 */
import { createHash } from 'node:crypto';
import { S3Client, PutObjectCommand } from '@aws-sdk/client-s3';
import { DescribeMapRunCommand, ExecutionAlreadyExists, ListMapRunsCommand, SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { emfRecord, gpuCount, jobMetrics, runMinutes, runnableMetrics } from '../runtime/batchMetrics.ts';
import type { SummaryEvent } from '../runtime/batchSummary.ts';
import { buildSummary, subjectFor, summarize } from '../runtime/batchSummary.ts';
import type { ObjectCreatedDetail } from '../runtime/starter.ts';
import { InvalidManifestLine, planStart, prepareItem, startNamedExecution } from '../runtime/starter.ts';

/** The job id formula of shared/src/schemas/layout.ts, written out independently. */
function expectedJobId(bucket: string, key: string, version: string): string {
  return `j-${createHash('sha256').update(`${bucket}\0${key}\0${version}`).digest('hex').slice(0, 24)}`;
}

const detail = (key: string, object: Partial<ObjectCreatedDetail['object']> = {}): ObjectCreatedDetail => ({
  bucket: { name: 'cil-data' },
  object: { key, size: 1234, etag: 'abc', 'version-id': 'v1', ...object },
});

describe('planStart', () => {
  it('starts the generation workflow for an image under inputs/, named by bucket, key and version', () => {
    const p = planStart(detail('inputs/cats/tabby.PNG'));
    expect(p.kind).toBe('generation');
    if (p.kind !== 'generation') return;
    expect(p.name).toBe(expectedJobId('cil-data', 'inputs/cats/tabby.PNG', 'v1'));
    expect(p.name).toMatch(/^j-[0-9a-f]{24}$/);
    expect(p.input).toEqual({ jobId: p.name, bucket: 'cil-data', key: 'inputs/cats/tabby.PNG', versionId: 'v1', etag: 'abc', size: 1234, request: null, batch: null });
  });

  it('gives the same name to a duplicate event and a new one to a new version', () => {
    const a = planStart(detail('inputs/a.jpg'));
    const b = planStart(detail('inputs/a.jpg'));
    const c = planStart(detail('inputs/a.jpg', { 'version-id': 'v2' }));
    expect(a.kind === 'generation' && b.kind === 'generation' && c.kind === 'generation').toBe(true);
    if (a.kind !== 'generation' || b.kind !== 'generation' || c.kind !== 'generation') return;
    expect(a.name).toBe(b.name);
    expect(c.name).not.toBe(a.name);
  });

  it('falls back to the ETag when the bucket gives no version id', () => {
    const p = planStart(detail('inputs/a.webp', { 'version-id': undefined, etag: 'e1' }));
    expect(p.kind === 'generation' && p.name).toBe(expectedJobId('cil-data', 'inputs/a.webp', 'e1'));
  });

  it('starts the batch workflow for a manifest, with its report prefix', () => {
    const p = planStart(detail('batches/spring/run-1.jsonl'));
    expect(p.kind).toBe('batch');
    if (p.kind !== 'batch') return;
    expect(p.input.batchName).toBe('spring/run-1');
    expect(p.input.reportPrefix).toBe('reports/spring/run-1/');
    expect(p.name).toBe(expectedJobId('cil-data', 'batches/spring/run-1.jsonl', 'v1'));
  });

  it('names the report after the batch id when the manifest name is not a safe key', () => {
    const p = planStart(detail('batches/my batch.jsonl'));
    expect(p.kind === 'batch' && p.input.reportPrefix).toBe(`reports/${p.kind === 'batch' ? p.name : ''}/`);
  });

  it('ignores sidecars and other objects', () => {
    expect(planStart(detail('inputs/a.json')).kind).toBe('ignored');
    expect(planStart(detail('outputs/j-1/video.mp4')).kind).toBe('ignored');
    expect(planStart(detail('batches/images/a.png')).kind).toBe('ignored');
  });
});

// One mock per client class (a second mockClient of the same class would replace the first).
const sfn = mockClient(SFNClient);
const s3 = mockClient(S3Client);
const sns = mockClient(SNSClient);
afterEach(() => {
  sfn.reset();
  s3.reset();
  sns.reset();
});

describe('startNamedExecution', () => {
  it('starts the execution under the given name with the input as JSON', async () => {
    sfn.on(StartExecutionCommand).resolves({ executionArn: 'arn:x', startDate: new Date() });
    const out = await startNamedExecution(new SFNClient({ region: 'us-east-1' }), 'arn:sm', 'j-0123', { a: 1 });
    expect(out).toBe('started');
    const call = sfn.commandCalls(StartExecutionCommand)[0];
    expect(call?.args[0].input).toEqual({ stateMachineArn: 'arn:sm', name: 'j-0123', input: '{"a":1}' });
  });

  it('treats ExecutionAlreadyExists as the duplicate event it is', async () => {
    sfn.on(StartExecutionCommand).rejects(new ExecutionAlreadyExists({ message: 'exists', $metadata: {} }));
    await expect(startNamedExecution(new SFNClient({ region: 'us-east-1' }), 'arn:sm', 'j-0123', {})).resolves.toBe('duplicate');
  });

  it('lets other errors through (EventBridge and Lambda retry them)', async () => {
    const err = Object.assign(new Error('slow down'), { name: 'ThrottlingException' });
    sfn.on(StartExecutionCommand).rejects(err);
    await expect(startNamedExecution(new SFNClient({ region: 'us-east-1' }), 'arn:sm', 'j-0123', {})).rejects.toThrow('slow down');
  });
});

describe('prepareItem', () => {
  const item = (line: unknown, index = 4) => ({ bucket: 'cil-data', manifestKey: 'batches/b.jsonl', manifestVersion: 'mv', batchName: 'b', index, line });

  it('turns a line into a generation input whose job id depends on the manifest version and line', () => {
    const g = prepareItem(item({ image: 'batches/b/cat.png', request: { seed: 3 } }));
    expect(g).toEqual({
      jobId: expectedJobId('cil-data', 'batches/b.jsonl#4', 'mv'),
      bucket: 'cil-data',
      key: 'batches/b/cat.png',
      versionId: null,
      etag: null,
      size: null,
      request: { seed: 3 },
      batch: { name: 'b', manifestKey: 'batches/b.jsonl', line: 5 },
    });
    expect(prepareItem(item({ image: 'inputs/x.png' }, 5)).jobId).not.toBe(prepareItem(item({ image: 'inputs/x.png' }, 4)).jobId);
  });

  it('refuses malformed lines with the manifest and line number', () => {
    expect(() => prepareItem(item({ img: 'inputs/x.png' }))).toThrow(InvalidManifestLine);
    expect(() => prepareItem(item({ img: 'inputs/x.png' }))).toThrow(/batches\/b\.jsonl line 5: .*image/);
    expect(() => prepareItem(item('just text'))).toThrow(InvalidManifestLine);
    expect(() => prepareItem(item({ image: 'inputs/../secrets/x.png' }))).toThrow(/must be a key under inputs\/ or batches\//);
    expect(() => prepareItem(item({ image: 'outputs/j-1/poster.png' }))).toThrow(/must be a key under/);
    expect(() => prepareItem(item({ image: 'inputs/x.png', request: [1] }))).toThrow(/request/);
  });
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

describe('batchMetrics', () => {
  const job = {
    jobId: 'id',
    status: 'SUCCEEDED',
    container: { resourceRequirements: [{ type: 'VCPU', value: '4' }, { type: 'GPU', value: '1' }] },
    // Two attempts: 10 min cut short by a Spot reclaim, then 25 min.
    attempts: [
      { startedAt: 0, stoppedAt: 600_000 },
      { startedAt: 900_000, stoppedAt: 900_000 + 1_500_000 },
    ],
  };

  it('counts GPU-minutes over every attempt', () => {
    expect(gpuCount(job)).toBe(1);
    expect(runMinutes(job)).toBe(35);
    expect(jobMetrics(job)).toEqual([
      { name: 'BatchJobsSucceeded', value: 1, unit: 'Count' },
      { name: 'GpuMinutes', value: 35, unit: 'None' },
    ]);
    const twoGpus = { ...job, status: 'FAILED', container: { resourceRequirements: [{ type: 'GPU', value: '2' }] } };
    expect(jobMetrics(twoGpus)).toEqual([
      { name: 'BatchJobsFailed', value: 1, unit: 'Count' },
      { name: 'GpuMinutes', value: 70, unit: 'None' },
    ]);
  });

  it('counts CPU-only jobs and array parents without GPU-minutes, and ignores other states', () => {
    expect(jobMetrics({ status: 'SUCCEEDED', arrayProperties: { size: 4 } })).toEqual([{ name: 'BatchJobsSucceeded', value: 1, unit: 'Count' }]);
    expect(jobMetrics({ ...job, status: 'RUNNING' })).toEqual([]);
  });

  it('measures the oldest RUNNABLE wait (0 when none waits)', () => {
    expect(runnableMetrics([], 1_000_000)).toEqual([
      { name: 'RunnableJobs', value: 0, unit: 'Count' },
      { name: 'OldestRunnableSeconds', value: 0, unit: 'Seconds' },
    ]);
    expect(runnableMetrics([400_000, 100_000, 700_000], 1_000_000)[1]?.value).toBe(900);
  });

  it('writes Embedded Metric Format records', () => {
    const rec = JSON.parse(emfRecord('CIL/Pipeline', [{ name: 'GpuMinutes', value: 3, unit: 'None' }], 42, { jobId: 'x' })) as Record<string, unknown>;
    expect(rec).toEqual({
      _aws: { Timestamp: 42, CloudWatchMetrics: [{ Namespace: 'CIL/Pipeline', Dimensions: [[]], Metrics: [{ Name: 'GpuMinutes', Unit: 'None' }] }] },
      jobId: 'x',
      GpuMinutes: 3,
    });
  });
});
