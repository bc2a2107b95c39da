/**
 * Remote mode (`cil submit | status | fetch`) against the local pipeline's S3 server (real
 * uploads that really run, real outputs) with Step Functions and Batch mocked by
 * aws-sdk-client-mock, and stack discovery from stubs of CloudFormation and from a
 * `cdk deploy --outputs-file` file. The job id `submit` computes must be the execution name the
 * pipeline's own starter gives the upload.
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BatchClient, DescribeJobsCommand } from '@aws-sdk/client-batch';
import { CloudFormationClient, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import { DescribeExecutionCommand, ExecutionDoesNotExist, GetExecutionHistoryCommand, SFNClient } from '@aws-sdk/client-sfn';
import type { HistoryEvent } from '@aws-sdk/client-sfn';
import { mockClient } from 'aws-sdk-client-mock';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_STACK_NAME } from '../infra/lib/app.ts';
import { OUTPUTS } from '../infra/lib/names.ts';
import { jobIdFor, jobKeys, sidecarKey } from '#shared/schemas';
import { testCardPng } from '../local/src/testCard.ts';
import type { StackInfo } from '../cli/remote/ops.ts';
import { batchJobIdOf, cloudFormationSource, DEFAULT_STACK, discoverStack, fetchOutputs, followRemote, jobStatus, outputsFileSource, RemoteError, submitImage } from '../cli/remote/ops.ts';
import { printStatus } from '../cli/remote/commands.ts';
import type { TestPipeline } from './helpers/local.ts';
import { startTestPipeline } from './helpers/local.ts';

const sfnMock = mockClient(SFNClient);
const batchMock = mockClient(BatchClient);
let t: TestPipeline;
let stack: StackInfo;
let clients: { s3: S3Client; sfn: SFNClient; batch: BatchClient };
let tmp: string;

beforeAll(async () => {
  t = await startTestPipeline();
  tmp = mkdtempSync(join(tmpdir(), 'cil-remote-'));
  const outputs = { [OUTPUTS.bucket]: t.pipeline.bucket, [OUTPUTS.generationStateMachine]: t.pipeline.definitions.stateMachineArns.generation, [OUTPUTS.jobQueue]: 'arn:aws:batch:us-east-1:000000000000:job-queue/q' };
  stack = await discoverStack({ describe: 'test', outputs: () => Promise.resolve(outputs) }, 'CilVideo');
  clients = { s3: t.pipeline.s3, sfn: new SFNClient({ region: 'us-east-1' }), batch: new BatchClient({ region: 'us-east-1' }) };
}, 90_000);
afterAll(async () => {
  await t?.close();
  rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  sfnMock.reset();
  batchMock.reset();
});

const at = (s: number): Date => new Date(Date.UTC(2025, 0, 1, 0, 0, s));
function entered(id: number, name: string, type = 'TaskStateEntered'): HistoryEvent {
  return { id, timestamp: at(id), type: type as HistoryEvent['type'], stateEnteredEventDetails: { name } };
}
const SUCCESS_HISTORY: HistoryEvent[] = [
  { id: 1, timestamp: at(1), type: 'ExecutionStarted' },
  entered(2, 'Validate'),
  { id: 3, timestamp: at(3), type: 'TaskSucceeded', taskSucceededEventDetails: { resourceType: 'lambda', resource: 'invoke', output: '{}' } },
  entered(4, 'SizeForModel', 'ChoiceStateEntered'),
  entered(5, 'Generate'),
  { id: 6, timestamp: at(6), type: 'TaskSubmitted', taskSubmittedEventDetails: { resourceType: 'batch', resource: 'submitJob.sync', output: JSON.stringify({ JobArn: 'arn:aws:batch:us-east-1:1:job/b-1', JobId: 'b-1', JobName: 'x' }) } },
  entered(7, 'PostProcess'),
  entered(8, 'NotifySuccess'),
  entered(9, 'Succeeded', 'SucceedStateEntered'),
];

describe('cil submit / status / fetch against the local S3 server', () => {
  it('submit uploads the sidecar then the image, and names the job as the starter does; --wait follows it', async () => {
    const card = await testCardPng(192, 128);
    const request = { prompt: 'pan up', seed: 3 };
    const s = await submitImage(clients, stack, card, 'my card.png', request);
    expect(s.key).toMatch(/^inputs\/my-card-[0-9a-f]{8}\.png$/);
    expect(s.jobId).toBe(jobIdFor(stack.bucket, s.key, createHash('md5').update(card).digest('hex')));
    expect(s.executionArn).toBe(`${stack.generationStateMachineArn.replace(':stateMachine:', ':execution:')}:${s.jobId}`);
    expect(JSON.parse((await t.get(sidecarKey(s.key)))!.toString('utf8'))).toEqual(request);
    // The pipeline's own starter took the upload event and named the execution the same.
    const local = await t.pipeline.waitForJob(s.jobId, 60_000);
    expect(local.status).toBe('SUCCEEDED');

    sfnMock
      .on(DescribeExecutionCommand, { executionArn: s.executionArn })
      .rejectsOnce(new ExecutionDoesNotExist({ message: 'not yet', $metadata: {} }))
      .resolvesOnce({ status: 'RUNNING', startDate: at(1) })
      .resolves({ status: 'SUCCEEDED', startDate: at(1), stopDate: at(10) });
    sfnMock.on(GetExecutionHistoryCommand, { executionArn: s.executionArn }).resolves({ events: SUCCESS_HISTORY });
    batchMock.on(DescribeJobsCommand, { jobs: ['b-1'] }).resolves({ jobs: [{ jobId: 'b-1', jobName: 'x', jobQueue: 'q', jobDefinition: 'd', startedAt: 1, status: 'SUCCEEDED', attempts: [{ container: { exitCode: 0, logStreamName: 'generate/default/abc' } }] }] });
    const seen: string[] = [];
    const st = await followRemote(clients, stack, s.jobId, {
      pollMs: 5,
      observer: { state: (n) => seen.push(n), batch: (b) => seen.push(`batch ${b}`), progress: () => undefined, end: () => seen.push('end') },
    });
    expect(seen).toEqual(['Validate', 'SizeForModel', 'Generate', 'PostProcess', 'NotifySuccess', 'Succeeded', 'batch SUCCEEDED', 'end']);
    expect(st.execution?.status).toBe('SUCCEEDED');
    expect(st.step).toBe('Succeeded');
    expect(st.batchJob).toEqual({ jobId: 'b-1', status: 'SUCCEEDED', statusReason: null, attempts: 1, exitCode: 0, logStreamName: 'generate/default/abc' });
    // The outputs are listed from the bucket itself.
    expect(st.outputs.map((o) => o.key)).toEqual(expect.arrayContaining([`outputs/${s.jobId}/video.mp4`, `outputs/${s.jobId}/video.gif`, `outputs/${s.jobId}/result.json`]));
    expect(st.failure).toBeNull();
    expect(batchMock.commandCalls(DescribeJobsCommand).every((c) => c.args[0].input.jobs?.[0] === 'b-1')).toBe(true);

    // fetch: every output, byte for byte as result.json's SHA-256 says.
    const files = await fetchOutputs(clients, stack, s.jobId, tmp);
    const result = JSON.parse(readFileSync(join(tmp, s.jobId, 'result.json'), 'utf8')) as { outputs: { key: string; sha256: string }[] };
    for (const o of result.outputs) {
      const f = join(tmp, s.jobId, o.key.slice(`outputs/${s.jobId}/`.length));
      expect(files).toContain(f);
      expect(createHash('sha256').update(readFileSync(f)).digest('hex'), o.key).toBe(o.sha256);
    }
  }, 90_000);

  it('status of a failed job: the step, the error, and the failure record from the bucket', async () => {
    const s = await submitImage(clients, stack, Buffer.from('GIF89a but not really'), 'bad.png', {});
    const local = await t.pipeline.waitForJob(s.jobId, 60_000);
    expect(local.status).toBe('FAILED');
    sfnMock.on(DescribeExecutionCommand).resolves({ status: 'FAILED', startDate: at(1), stopDate: at(5), error: 'InvalidImage', cause: '{"errorMessage":"bad"}' });
    sfnMock.on(GetExecutionHistoryCommand).resolves({ events: [entered(2, 'Validate'), entered(3, 'ValidateFailed', 'PassStateEntered'), entered(4, 'RecordFailure'), entered(5, 'NotifyFailure'), entered(6, 'JobFailed', 'FailStateEntered')] });
    const st = await jobStatus(clients, stack, s.jobId);
    expect(st.step).toBe('JobFailed');
    expect(st.batchJob).toBeNull();
    expect(st.outputs).toEqual([]);
    expect(st.failure).toMatchObject({ jobId: s.jobId, failedStep: 'Validate', error: 'InvalidImage' });
    const out: string[] = [];
    const code = printStatus(st, false, { write: (x: string) => out.push(x) } as unknown as NodeJS.WritableStream);
    expect(code).toBe(1);
    expect(out.join('')).toContain('failed    in Validate');
    await expect(fetchOutputs(clients, stack, s.jobId, tmp)).rejects.toThrow(/failed in Validate/);
    expect(batchMock.commandCalls(DescribeJobsCommand)).toHaveLength(0);
  }, 60_000);

  it('status of a job with no execution yet, and of something that is not a job id', async () => {
    sfnMock.on(DescribeExecutionCommand).rejects(new ExecutionDoesNotExist({ message: 'no', $metadata: {} }));
    const st = await jobStatus(clients, stack, 'j-000000000000000000000000');
    expect(st.execution).toBeNull();
    expect(st.steps).toEqual([]);
    await expect(jobStatus(clients, stack, '../etc')).rejects.toBeInstanceOf(RemoteError);
  });

  it('uses the S3 version id, when the bucket is versioned, for the job id', async () => {
    const s3 = { send: (c: unknown) => Promise.resolve(c instanceof PutObjectCommand ? { ETag: '"abc"', VersionId: 'v-42' } : {}) } as unknown as S3Client;
    const s = await submitImage({ s3 }, stack, Buffer.from('x'), 'a.png', {}, 'inputs/a.png');
    expect(s.jobId).toBe(jobIdFor(stack.bucket, 'inputs/a.png', 'v-42'));
  });
});

describe('stack discovery', () => {
  it('reads the outputs named in infra/lib/names.ts from DescribeStacks (the real client, mocked)', async () => {
    const cfn = mockClient(CloudFormationClient);
    try {
      cfn.on(DescribeStacksCommand).resolves({
        Stacks: [{ StackName: 'MyStack', CreationTime: new Date(), StackStatus: 'CREATE_COMPLETE', Outputs: [{ OutputKey: OUTPUTS.bucket, OutputValue: 'data-bucket' }, { OutputKey: OUTPUTS.generationStateMachine, OutputValue: 'arn:aws:states:eu-west-1:1:stateMachine:Gen' }] }],
      });
      const info = await discoverStack(cloudFormationSource('eu-west-1'), 'MyStack');
      expect(cfn.commandCalls(DescribeStacksCommand).map((c) => c.args[0].input)).toEqual([{ StackName: 'MyStack' }]);
      expect(info).toEqual({ stackName: 'MyStack', bucket: 'data-bucket', generationStateMachineArn: 'arn:aws:states:eu-west-1:1:stateMachine:Gen', batchStateMachineArn: null, jobQueueArn: null });
      // A stack that does not exist: CloudFormation answers ValidationError.
      cfn.on(DescribeStacksCommand).rejects(Object.assign(new Error('Stack with id Nope does not exist'), { name: 'ValidationError' }));
      await expect(discoverStack(cloudFormationSource('eu-west-1'), 'Nope')).rejects.toThrow(/stack 'Nope' not found in eu-west-1/);
    } finally {
      cfn.restore();
    }
  });

  it('says how to fix a broken install of @aws-sdk/client-cloudformation, and names a missing output', async () => {
    await expect(cloudFormationSource(undefined, () => Promise.reject(new Error('Cannot find package'))).outputs('S')).rejects.toThrow(/@aws-sdk\/client-cloudformation.*--outputs-file/);
    await expect(discoverStack({ describe: 'x', outputs: () => Promise.resolve({ [OUTPUTS.bucket]: 'b' }) }, 'S')).rejects.toThrow(OUTPUTS.generationStateMachine);
  });

  it('reads `cdk deploy --outputs-file` output', async () => {
    const f = join(tmp, 'outputs.json');
    writeFileSync(f, JSON.stringify({ CilVideo: { [OUTPUTS.bucket]: 'b', [OUTPUTS.generationStateMachine]: 'arn:g', [OUTPUTS.batchStateMachine]: 'arn:b' } }));
    expect(await discoverStack(outputsFileSource(f), 'CilVideo')).toMatchObject({ bucket: 'b', generationStateMachineArn: 'arn:g', batchStateMachineArn: 'arn:b' });
    await expect(discoverStack(outputsFileSource(join(tmp, 'missing.json')), 'CilVideo')).rejects.toBeInstanceOf(RemoteError);
  });

  it('defaults to the stack name the CDK app uses', () => {
    expect(DEFAULT_STACK).toBe(DEFAULT_STACK_NAME);
  });

  it('finds the Batch job id in the Generate step events', () => {
    expect(batchJobIdOf(SUCCESS_HISTORY)).toBe('b-1');
    expect(batchJobIdOf([entered(1, 'Validate')])).toBeNull();
    expect(jobKeys('j-000000000000000000000000').output).toBe('outputs/j-000000000000000000000000/');
  });
});
