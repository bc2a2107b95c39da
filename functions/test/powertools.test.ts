/**
 * Powertools around every handler (functions/src/powertools.ts): the Tracer's handler decorator and
 * the Logger's context injection are applied when Lambda passes a context, the handlers still work
 * where tracing is off (no AWS_EXECUTION_ENV: the Tracer is a no-op), and their log lines carry
 * the Lambda context with no keys left over from an earlier invocation.
 */
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { SFNClient, StartExecutionCommand } from '@aws-sdk/client-sfn';
import type { Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { FailureRecord } from '../src/notify/core.ts';
import { createRecordFailureHandler } from '../src/notify/handler.ts';
import { lambdaEntry, traced, tracer } from '../src/powertools.ts';
import { handler as starter, prepareItemHandler } from '../src/starter/handler.ts';
import { captureLogs } from './helpers/captureLogs.ts';
import { uploadEvent } from './helpers/fixtures.ts';

const context = (requestId: string): Context =>
  ({
    functionName: 'cil-test',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:cil-test',
    memoryLimitInMB: '256',
    awsRequestId: requestId,
    logGroupName: '/aws/lambda/cil-test',
    logStreamName: 's',
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => 30_000,
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  });

/** Parsed JSON log lines (others dropped). */
function jsonLines(text: string): Record<string, unknown>[] {
  return text.split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('lambdaEntry', () => {
  /** Decorators that record what they were asked for and the order in which the wrappers run. */
  function recorder(): { calls: string[]; instruments: () => { tracer: never; logger: never } } {
    const calls: string[] = [];
    const decorator = (name: string, options: unknown) => (_t: unknown, _k: string, d: PropertyDescriptor) => {
      calls.push(`${name} ${JSON.stringify(options)}`);
      const inner = d.value as (...a: unknown[]) => Promise<unknown>;
      d.value = async (...a: unknown[]) => {
        calls.push(`enter ${name}`);
        try {
          return await inner(...a);
        } finally {
          calls.push(`leave ${name}`);
        }
      };
    };
    return {
      calls,
      instruments: () => ({
        tracer: { captureLambdaHandler: (o: unknown) => decorator('tracer', o) } as never,
        logger: { injectLambdaContext: (o: unknown) => decorator('logger', o) } as never,
      }),
    };
  }

  it('with a Lambda context: traced (outermost, responses not recorded) and the context injected (keys reset after)', async () => {
    const r = recorder();
    const entry = lambdaEntry(r.instruments, (event: { n: number }, ctx) => Promise.resolve({ doubled: event.n * 2, requestId: ctx?.awsRequestId }));
    await expect(entry({ n: 21 }, context('req-1'))).resolves.toEqual({ doubled: 42, requestId: 'req-1' });
    expect(r.calls).toEqual(['logger {"resetKeys":true}', 'tracer {"captureResponse":false}', 'enter tracer', 'enter logger', 'leave logger', 'leave tracer']);
  });

  it('errors pass through both; without a context (local mode) the handler runs bare', async () => {
    const r = recorder();
    const failing = lambdaEntry(r.instruments, () => Promise.reject(Object.assign(new Error('no'), { name: 'InvalidEvent' })));
    await expect(failing({}, context('req-2'))).rejects.toMatchObject({ name: 'InvalidEvent' });
    expect(r.calls.at(-1)).toBe('leave tracer');
    const bare = recorder();
    await expect(lambdaEntry(bare.instruments, () => Promise.resolve('ok'))({})).resolves.toBe('ok');
    expect(bare.calls).toEqual([]);
  });

  it('the Tracer is a no-op off Lambda: the SDK clients are returned as they are', () => {
    expect(tracer.isTracingEnabled()).toBe(false);
    const c = new SFNClient({ region: 'us-east-1' });
    expect(traced(c)).toBe(c);
  });
});

describe('the handlers under Powertools, with a Lambda context', () => {
  it('the starter starts the execution; its log line carries the Lambda context', async () => {
    vi.stubEnv('CIL_GENERATION_STATE_MACHINE_ARN', 'arn:aws:states:us-east-1:123456789012:stateMachine:Generation');
    const sfn = mockClient(SFNClient);
    sfn.on(StartExecutionCommand).resolves({ executionArn: 'arn:x' });
    try {
      const event = { id: 'ev-1', 'detail-type': 'Object Created', detail: { bucket: { name: 'cil-data' }, object: { key: 'inputs/cat.png', size: 1, etag: 'e', 'version-id': 'v1' } } } as never;
      const lines: Record<string, unknown>[] = [];
      const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => (lines.push(...jsonLines(String(s))), true));
      let out;
      try {
        out = await starter(event, context('req-starter'));
      } finally {
        spy.mockRestore();
      }
      expect(out.outcome).toBe('started');
      expect(out.name).toMatch(/^j-[0-9a-f]{24}$/);
      expect(sfn.commandCalls(StartExecutionCommand)).toHaveLength(1);
      expect(lines.find((l) => l.message === 'execution started')).toMatchObject({ function_request_id: 'req-starter', function_name: 'cil-test', name: out.name });
    } finally {
      sfn.restore();
    }
  });

  it('PrepareItem with a context returns the generation input', async () => {
    const input = await prepareItemHandler({ bucket: 'cil-data', manifestKey: 'batches/b.jsonl', manifestVersion: 'v1', batchName: 'b', index: 0, line: { image: 'batches/cat.png' } }, context('req-prep'));
    expect(input).toMatchObject({ bucket: 'cil-data', key: 'batches/cat.png', batch: { name: 'b' } });
  });

  it('a step handler: each invocation logs its own request id and job, nothing carried over from the one before', async () => {
    const s3 = mockClient(S3Client);
    s3.on(PutObjectCommand).resolves({});
    try {
      const rec = createRecordFailureHandler({ s3: new S3Client({ region: 'us-east-1' }), dataBucket: 'cil-data', now: () => new Date('2026-01-01T00:00:00Z') });
      const fail = (key: string) => ({ failedStep: 'Validate', error: { Error: 'InvalidImage', Cause: 'not a PNG' }, event: uploadEvent('cil-data', key, { etag: 'e' }) });
      let first: FailureRecord | undefined;
      let second: FailureRecord | undefined;
      const text = await captureLogs('INFO', async () => {
        first = await rec(fail('inputs/a.png'), context('req-a'));
        second = await rec(fail('inputs/b.png'), context('req-b'));
      });
      const recorded = jsonLines(text).filter((l) => l.message === 'failure recorded');
      expect(recorded.map((l) => [l.function_request_id, l.jobId, l.step])).toEqual([
        ['req-a', first!.jobId, 'RecordFailure'],
        ['req-b', second!.jobId, 'RecordFailure'],
      ]);
      expect(s3.commandCalls(PutObjectCommand)).toHaveLength(2);
    } finally {
      s3.restore();
    }
  });
});
