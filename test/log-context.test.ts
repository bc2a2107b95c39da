/**
 * Per-invocation log context (issue 19, defect 8): local mode runs the handlers concurrently in
 * one process, as Lambda's multi-concurrency runtime would, and the functions share one
 * Powertools logger. Each invocation's lines must carry its own jobId and step, never another
 * one's — checked with Validate and RecordFailure invoked at once against a real S3 server
 * (s3rver), so that every invocation awaits S3 between its log lines and the invocations
 * interleave.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { jobIdFor } from '#shared/schemas';
import { logger } from '../functions/src/logger.ts';
import { createRecordFailureHandler } from '../functions/src/notify/handler.ts';
import { buildJobSpec, parseRequest, parseUploadEvent, resolveRequest } from '../functions/src/validate/core.ts';
import { createValidateHandler } from '../functions/src/validate/handler.ts';
import { parseManifest } from '#shared/schemas';
import { tinyManifest, uploadEvent } from '../functions/test/helpers/fixtures.ts';
import type { LocalS3 } from '../functions/test/helpers/s3server.ts';
import { startLocalS3 } from '../functions/test/helpers/s3server.ts';

const ETAG = 'd41d8cd98f00b204e9800998ecf8427e';
let s3: LocalS3;

beforeAll(async () => {
  s3 = await startLocalS3();
  logger.setLogLevel('SILENT');
});
afterAll(async () => {
  await s3.stop();
});

interface LogLine {
  readonly level: string;
  readonly message: string;
  readonly step?: string;
  readonly jobId?: string;
  readonly key?: string;
  readonly reason?: string;
  readonly failureKey?: string;
  readonly function_request_id?: string;
}

/** Every JSON line the logger writes (at INFO) while `fn` runs. */
async function captureLines(fn: () => Promise<unknown>): Promise<LogLine[]> {
  const out: string[] = [];
  const capture = (s: string | Uint8Array): boolean => {
    out.push(typeof s === 'string' ? s : Buffer.from(s).toString('utf8'));
    return true;
  };
  const spies = [vi.spyOn(process.stdout, 'write').mockImplementation(capture), vi.spyOn(process.stderr, 'write').mockImplementation(capture)];
  logger.setLogLevel('INFO');
  try {
    await fn();
  } finally {
    logger.setLogLevel('SILENT');
    for (const spy of spies) spy.mockRestore();
  }
  return out
    .join('')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

/** The job spec Validate would build for `key` (tiny model), for RecordFailure's input. */
function specFor(key: string) {
  const r = resolveRequest(parseRequest({ model: 'tiny', prompt: 'a cat' }, 'x'), parseManifest(tinyManifest(), 'tiny'), () => 1, 'x');
  return buildJobSpec(parseUploadEvent(uploadEvent(s3.bucket, key, { etag: 'e' })), 10, r, '2025-01-15T12:00:00.000Z');
}

/** A Lambda context of one invocation (its request id is on each of its lines). */
function context(requestId: string) {
  return { awsRequestId: requestId, functionName: 'cil-local', functionVersion: '$LATEST', invokedFunctionArn: 'arn:aws:lambda:us-east-1:123456789012:function:cil-local', memoryLimitInMB: '1024', logGroupName: '/aws/lambda/cil-local', logStreamName: 's', callbackWaitsForEmptyEventLoop: true, getRemainingTimeInMillis: () => 60_000, done: () => undefined, fail: () => undefined, succeed: () => undefined };
}

describe('log context per invocation', () => {
  it('concurrent Validate and RecordFailure invocations: every line carries its own jobId, step and request id', async () => {
    const validate = createValidateHandler({ s3: s3.s3, dataBucket: s3.bucket });
    const record = createRecordFailureHandler({ s3: s3.s3, dataBucket: s3.bucket });
    const N = 6;
    const validateKeys = Array.from({ length: N }, (_, i) => `inputs/missing-${i}.png`);
    const failureSpecs = Array.from({ length: N }, (_, i) => specFor(`inputs/failed-${i}.png`));
    // Started in one tick: each runs to its first S3 await, so every invocation has appended its
    // keys before any of them logs its second line.
    const lines = await captureLines(() =>
      Promise.allSettled([
        ...validateKeys.map((key, i) => validate(uploadEvent(s3.bucket, key, { etag: ETAG }), context(`v-${i}`) as never)),
        ...failureSpecs.map((spec, i) => record({ failedStep: 'Validate', error: { Error: 'InvalidImage', Cause: JSON.stringify({ errorType: 'InvalidImage', errorMessage: 'x' }) }, spec }, context(`r-${i}`) as never)),
      ]),
    );

    // Validate: 'validating upload' (before the await) and 'upload refused' (after it: the object is missing).
    for (const [i, key] of validateKeys.entries()) {
      const mine = lines.filter((l) => l.key === key || (l.reason ?? '').startsWith(`${key}:`));
      expect(mine.map((l) => l.message), key).toEqual(['validating upload', 'upload refused']);
      for (const l of mine) {
        expect({ key, step: l.step, jobId: l.jobId, request: l.function_request_id }).toEqual({ key, step: 'Validate', jobId: jobIdFor(s3.bucket, key, ETAG), request: `v-${i}` });
      }
    }
    // RecordFailure: 'failure recorded' after its PutObject.
    for (const [i, spec] of failureSpecs.entries()) {
      const mine = lines.filter((l) => l.failureKey === `failures/${spec.jobId}.json`);
      expect(mine.map((l) => l.message), spec.jobId).toEqual(['failure recorded']);
      expect({ step: mine[0].step, jobId: mine[0].jobId, request: mine[0].function_request_id }).toEqual({ step: 'RecordFailure', jobId: spec.jobId, request: `r-${i}` });
    }
    expect(lines.length).toBe(3 * N);
  });

  it('keys appended in one invocation do not outlive it, and settings made outside a handler still apply inside one', async () => {
    const validate = createValidateHandler({ s3: s3.s3, dataBucket: s3.bucket });
    const lines = await captureLines(async () => {
      await validate(uploadEvent(s3.bucket, 'inputs/one.png', { etag: ETAG }), context('a') as never).catch(() => undefined);
      logger.info('outside any invocation');
    });
    expect(lines.map((l) => l.message)).toEqual(['validating upload', 'upload refused', 'outside any invocation']);
    const outside = lines[2];
    expect([outside.step, outside.jobId, outside.function_request_id]).toEqual([undefined, undefined, undefined]);
  });
});
