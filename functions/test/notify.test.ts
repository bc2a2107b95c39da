/** Notify and the failure recorder: cores, SNS/EventBridge through aws-sdk-client-mock, S3 through s3rver. */
import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobIdFor } from '#shared/schemas';
import type { JobSpec } from '#shared/schemas';
import { dataBucket, eventBusName, presignConfig, topicArn } from '../src/env.ts';
import { PipelineError } from '../src/errors.ts';
import { logger } from '../src/logger.ts';
import { buildFailureRecord, buildNotification, FailureRecord, parseFailureInput, parseNotifyInput, reasonFromCause } from '../src/notify/core.ts';
import { createNotifyHandler, createRecordFailureHandler } from '../src/notify/handler.ts';
import type { JobResult } from '../src/postprocess/core.ts';
import { tinyJobResult, tinyJobSpec, uploadEvent } from './helpers/fixtures.ts';
import { mockNotifyClients } from './helpers/notifyMocks.ts';
import type { LocalS3 } from './helpers/s3server.ts';
import { startLocalS3 } from './helpers/s3server.ts';

const PROMPT = 'a confidential prompt';
const NOW = new Date('2025-01-15T13:00:00.000Z');

function spec(): JobSpec {
  return tinyJobSpec(PROMPT);
}

function result(s: JobSpec): JobResult {
  return tinyJobResult(s, [['mp4', 'video.mp4'], ['poster', 'poster.png'], ['png-frame', 'frames/0000.png'], ['metadata', 'metadata.json']]);
}

const lambdaCause = JSON.stringify({ errorType: 'InvalidImage', errorMessage: 'inputs/cat.png: 1×1 is too small; each side must be at least 64 pixels', trace: ['at x'] });

beforeAll(() => logger.setLogLevel('SILENT'));

describe('reasonFromCause', () => {
  it.each([
    ['a Lambda error', lambdaCause, 'inputs/cat.png: 1×1 is too small; each side must be at least 64 pixels'],
    ['a Batch job', JSON.stringify({ StatusReason: 'Essential container in task exited', Container: { Reason: 'OutOfMemoryError', ExitCode: 137, LogStreamName: 'cil/default/abc' } }), 'Essential container in task exited; OutOfMemoryError; exit code 137; log stream cil/default/abc'],
    ['plain text', 'The task timed out', 'The task timed out'],
    ['nothing', undefined, 'States.Timeout'],
  ])('%s', (_what, cause, want) => {
    expect(reasonFromCause('States.Timeout', cause)).toBe(want);
  });
});

describe('buildFailureRecord', () => {
  it('names the job from the spec, without the prompt', () => {
    const s = spec();
    const r = buildFailureRecord(parseFailureInput({ failedStep: 'Generate', error: { Error: 'States.TaskFailed', Cause: 'boom' }, spec: s, executionArn: 'arn:x' }), NOW);
    expect(r).toEqual({
      format: 'cil-failure/1', status: 'failed', jobId: s.jobId, failedStep: 'Generate', error: 'States.TaskFailed', reason: 'boom',
      bucket: 'cil-data', input: { key: 'inputs/cat.png', versionId: null }, model: 'tiny', executionArn: 'arn:x',
      failureKey: `failures/${s.jobId}.json`, failedAt: '2025-01-15T13:00:00.000Z',
    });
    expect(JSON.stringify(r)).not.toContain('confidential');
  });

  it('records the placement of a job resubmitted on-demand after a Spot cancellation (and only then); the failure notification carries it', () => {
    const s = spec();
    const spot = { tier: 'interactive', queue: 'arn:aws:batch:us-east-1:1:job-queue/spot', capacity: 'spot', spotCancellations: 0, executionStartedAt: '2025-01-15T12:00:00.000Z' };
    const onDemand = { ...spot, queue: 'arn:aws:batch:us-east-1:1:job-queue/od', capacity: 'on-demand', spotCancellations: 1, resubmittedFrom: 'spot-1', resubmitReason: 'Canceled by JobStateTimeLimit action due to reason: CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY' };
    const input = (placement: unknown): unknown => ({ failedStep: 'Generate', error: { Error: 'States.TaskFailed', Cause: 'boom' }, spec: s, placement });
    const plain = buildFailureRecord(parseFailureInput(input(spot)), NOW);
    expect(plain).not.toHaveProperty('placement');
    expect(plain).toEqual(buildFailureRecord(parseFailureInput(input(undefined)), NOW));
    const resubmitted = buildFailureRecord(parseFailureInput(input(onDemand)), NOW);
    expect(resubmitted.placement).toEqual(onDemand);
    expect(buildNotification({ status: 'failed', failure: resubmitted }).detail.placement).toEqual(onDemand);
    expect(buildNotification({ status: 'failed', failure: plain }).detail).not.toHaveProperty('placement');
  });

  it('names the job from the upload event when Validate failed, even for a refused key', () => {
    const ok = buildFailureRecord(parseFailureInput({ failedStep: 'Validate', error: { Error: 'InvalidImage', Cause: lambdaCause }, event: uploadEvent('cil-data', 'inputs/cat.png', { etag: 'e' }) }), NOW);
    expect(ok.jobId).toBe(spec().jobId);
    expect(ok.reason).toMatch(/1×1 is too small/);
    const bad = buildFailureRecord(parseFailureInput({ failedStep: 'Validate', error: { Error: 'InvalidKey' }, event: uploadEvent('cil-data', 'inputs/my cat.png', { etag: 'e' }) }), NOW);
    expect(bad.jobId).toBe(jobIdFor('cil-data', 'inputs/my cat.png', 'e'));
    expect(bad.input).toEqual({ key: 'inputs/my cat.png', versionId: null });
    const none = buildFailureRecord(parseFailureInput({ failedStep: 'Validate', error: { Error: 'InvalidEvent' }, event: { junk: true } }), NOW);
    expect(none.jobId).toMatch(/^j-[0-9a-f]{24}$/);
    expect(buildFailureRecord(parseFailureInput({ failedStep: 'Validate', error: { Error: 'InvalidEvent' }, event: { junk: true } }), NOW).jobId).toBe(none.jobId);
  });

  it("names the job from the workflow state's jobId (the execution name)", () => {
    const state = { jobId: 'j-0123456789abcdef01234567', bucket: 'cil-data', key: 'inputs/x.png', versionId: 'v9', etag: null, size: null, request: null, batch: null, failedStep: 'Generate', error: { Error: 'States.Timeout' } };
    expect(buildFailureRecord(parseFailureInput(state), NOW)).toMatchObject({ jobId: state.jobId, bucket: 'cil-data', input: { key: 'inputs/x.png', versionId: 'v9' }, reason: 'States.Timeout' });
  });

  it('refuses an input without failedStep or error', () => {
    expect(() => parseFailureInput({ error: { Error: 'x' } })).toThrow(expect.objectContaining({ name: 'InvalidEvent' }));
  });
});

describe('buildNotification', () => {
  it('success: keys, video, timings, URLs where given', () => {
    const r = result(spec());
    const n = buildNotification({ status: 'succeeded', result: r }, { byKey: new Map([[r.outputs[0].key, 'https://u']]), expiresAt: '2025-01-15T14:00:00.000Z' });
    expect(n.detailType).toBe('Job Succeeded');
    expect(n.subject).toBe(`CIL job ${r.jobId} succeeded`);
    expect(n.detail.outputs![0]).toEqual({ kind: 'mp4', key: r.outputs[0].key, bytes: 10, url: 'https://u' });
    expect(n.detail.outputs![1]).toEqual({ kind: 'poster', key: r.outputs[1].key, bytes: 10 });
    expect(n.detail).toMatchObject({ status: 'succeeded', timings: { totalS: 2.5 }, urlsExpireAt: '2025-01-15T14:00:00.000Z', video: r.video });
  });

  it('failure: the step and the reason', () => {
    const f = buildFailureRecord(parseFailureInput({ failedStep: 'PostProcess', error: { Error: 'EncodeFailed', Cause: '{"errorMessage":"no libx264"}' }, spec: spec() }), NOW);
    const n = buildNotification({ status: 'failed', failure: f });
    expect(n.detailType).toBe('Job Failed');
    expect(n.detail).toMatchObject({ status: 'failed', failedStep: 'PostProcess', error: 'EncodeFailed', reason: 'no libx264', failureKey: f.failureKey });
    expect(n.attributes).toEqual({ jobId: f.jobId, status: 'failed', failedStep: 'PostProcess', error: 'EncodeFailed' });
  });

  it("reads the workflow's envelope {status, executionArn, job}", () => {
    const s = spec();
    const r = result(s);
    expect(parseNotifyInput({ status: 'SUCCEEDED', executionArn: 'arn:e', job: { spec: s, result: r } })).toEqual({ status: 'succeeded', result: r });
    const state = { spec: s, failedStep: 'PostProcess', error: { Error: 'EncodeFailed', Cause: '{"errorMessage":"boom"}' } };
    const rec = buildFailureRecord(parseFailureInput(state), NOW);
    expect(parseNotifyInput({ status: 'FAILED', job: { ...state, failureRecord: rec } })).toEqual({ status: 'failed', failure: rec });
    // RecordFailure itself failed: the record is rebuilt from the state.
    expect(parseNotifyInput({ status: 'FAILED', executionArn: 'arn:e', job: state }, NOW)).toEqual({ status: 'failed', failure: { ...rec, executionArn: 'arn:e' } });
  });

  it('reads its input directly or wrapped, and refuses anything else', () => {
    const r = result(spec());
    expect(parseNotifyInput(r)).toEqual({ status: 'succeeded', result: r });
    expect(parseNotifyInput({ result: r })).toEqual({ status: 'succeeded', result: r });
    expect(() => parseNotifyInput({ status: 'succeeded' })).toThrow(/not a job result/);
    expect(() => parseNotifyInput({})).toThrow(expect.objectContaining({ name: 'InvalidEvent' }));
  });
});

describe('notify handler (SDK mocks)', () => {
  const { sns, events } = mockNotifyClients();
  const creds = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'secret' };
  let s3: LocalS3;
  beforeAll(async () => {
    s3 = await startLocalS3();
  });
  afterAll(async () => {
    await s3?.stop();
  });

  function handler(o: { topic?: string | null; bus?: string | null; presign?: boolean } = {}) {
    return createNotifyHandler({
      s3: s3.s3,
      sns: new SNSClient({ region: 'us-east-1', credentials: creds }),
      events: new EventBridgeClient({ region: 'us-east-1', credentials: creds }),
      topicArn: o.topic === undefined ? 'arn:aws:sns:us-east-1:123456789012:cil' : o.topic,
      eventBusName: o.bus === undefined ? 'cil-bus' : o.bus,
      dataBucket: s3.bucket,
      presign: { enabled: o.presign ?? false, expirySeconds: 3600 },
      now: () => NOW,
    });
  }

  it('publishes a success to SNS and EventBridge, with presigned URLs for the videos only', async () => {
    sns.on(PublishCommand).resolves({ MessageId: 'm-1' });
    events.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'e-1' }] });
    const r = result(spec());
    expect(await handler({ presign: true })(r)).toEqual({ jobId: r.jobId, status: 'succeeded', snsMessageId: 'm-1', eventId: 'e-1' });

    const pub = sns.commandCalls(PublishCommand)[0].args[0].input;
    expect(pub).toMatchObject({ TopicArn: 'arn:aws:sns:us-east-1:123456789012:cil', Subject: `CIL job ${r.jobId} succeeded`, MessageAttributes: { status: { DataType: 'String', StringValue: 'succeeded' } } });
    const msg = JSON.parse(pub.Message!) as { outputs: { kind: string; url?: string }[]; urlsExpireAt: string };
    const withUrl = msg.outputs.filter((o) => o.url !== undefined).map((o) => o.kind);
    expect(withUrl).toEqual(['mp4', 'poster', 'metadata']);
    const url = new URL(msg.outputs[0].url!);
    expect(url.pathname).toBe(`/${r.bucket}/${r.outputs[0].key}`);
    expect(url.searchParams.get('X-Amz-Expires')).toBe('3600');
    expect(msg.urlsExpireAt).toBe('2025-01-15T14:00:00.000Z');

    const put = events.commandCalls(PutEventsCommand)[0].args[0].input.Entries![0];
    expect(put).toMatchObject({ Source: 'cil.pipeline', DetailType: 'Job Succeeded', EventBusName: 'cil-bus' });
    expect(JSON.parse(put.Detail!)).toEqual(msg);
    expect(put.Detail).not.toContain('confidential');
  });

  it('publishes a failure with its step and reason; skips what is not configured', async () => {
    events.on(PutEventsCommand).resolves({ FailedEntryCount: 0, Entries: [{ EventId: 'e-2' }] });
    const f = buildFailureRecord(parseFailureInput({ failedStep: 'Validate', error: { Error: 'InvalidImage', Cause: lambdaCause }, spec: spec() }), NOW);
    expect(await handler({ topic: null })({ failure: f })).toMatchObject({ status: 'failed', snsMessageId: null, eventId: 'e-2' });
    expect(sns.commandCalls(PublishCommand)).toHaveLength(0);
    const put = events.commandCalls(PutEventsCommand)[0].args[0].input.Entries![0];
    expect(put.DetailType).toBe('Job Failed');
    expect(JSON.parse(put.Detail!)).toMatchObject({ failedStep: 'Validate', error: 'InvalidImage', reason: expect.stringMatching(/1×1 is too small/) as unknown });
  });

  it('PublishFailed when EventBridge refuses the entry (so Step Functions retries)', async () => {
    sns.on(PublishCommand).resolves({ MessageId: 'm' });
    events.on(PutEventsCommand).resolves({ FailedEntryCount: 1, Entries: [{ ErrorCode: 'ThrottlingException', ErrorMessage: 'slow down' }] });
    const e = await handler()(result(spec())).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(PipelineError);
    expect((e as PipelineError).toJSON()).toEqual({ error: 'PublishFailed', reason: 'EventBridge refused the event: ThrottlingException slow down' });
  });

  it('reads its environment: presign expiry bounded to 7 days, CIL_* names first', () => {
    expect(presignConfig({})).toEqual({ enabled: false, expirySeconds: 3600 });
    expect(presignConfig({ PRESIGN_EXPIRY_SECONDS: '604800' })).toEqual({ enabled: true, expirySeconds: 604800 });
    expect(() => presignConfig({ PRESIGN_EXPIRY_SECONDS: '604801' })).toThrow(expect.objectContaining({ name: 'ConfigurationError' }));
    expect(() => presignConfig({ PRESIGN_URLS: 'maybe' })).toThrow(/PRESIGN_URLS must be true or false/);
    // The stack's names (CIL_*) win; an expiry of 0 means keys only.
    expect(presignConfig({ CIL_PRESIGN_EXPIRY_SECONDS: '600', PRESIGN_EXPIRY_SECONDS: '900' })).toEqual({ enabled: true, expirySeconds: 600 });
    expect(presignConfig({ CIL_PRESIGN_EXPIRY_SECONDS: '0' })).toEqual({ enabled: false, expirySeconds: 3600 });
    expect(presignConfig({ PRESIGN_URLS: 'true' })).toEqual({ enabled: true, expirySeconds: 3600 });
    expect(() => presignConfig({ PRESIGN_URLS: 'true', PRESIGN_EXPIRY_SECONDS: '0' })).toThrow(/is 0/);
    expect([dataBucket({ CIL_BUCKET: 'a', DATA_BUCKET: 'b' }), dataBucket({ DATA_BUCKET: 'b' }), dataBucket({})]).toEqual(['a', 'b', null]);
    expect([topicArn({ TOPIC_ARN: 't' }), eventBusName({ CIL_EVENT_BUS_NAME: 'bus', EVENT_BUS_NAME: 'x' })]).toEqual(['t', 'bus']);
  });

  it('recordFailure writes failures/<jobId>.json (s3rver) and returns the record', async () => {
    const rec = createRecordFailureHandler({ s3: s3.s3, dataBucket: s3.bucket, now: () => NOW });
    const out = await rec({ failedStep: 'Validate', error: { Error: 'InvalidImage', Cause: lambdaCause }, event: uploadEvent(s3.bucket, 'inputs/cat.png', { etag: 'e' }) });
    expect(out.failureKey).toBe(`failures/${out.jobId}.json`);
    const stored = FailureRecord.parse(JSON.parse((await s3.get(out.failureKey))!.toString('utf8')));
    expect(stored).toEqual(out);
    expect(await s3.list('failures/')).toEqual([out.failureKey]);
    // Retried: the same key, overwritten, no duplicates.
    await rec({ failedStep: 'Validate', error: { Error: 'InvalidImage', Cause: lambdaCause }, event: uploadEvent(s3.bucket, 'inputs/cat.png', { etag: 'e' }) });
    expect(await s3.list('failures/')).toEqual([out.failureKey]);
  });
});
