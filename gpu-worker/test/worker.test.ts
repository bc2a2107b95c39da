/** The worker entrypoint's policies: exit codes for Batch's retry strategy, and S3 attempts per request. */
import { describe, expect, it } from 'vitest';
import { EXIT, exitCodeFor, recordedPlacement, workerS3MaxAttempts } from '../src/worker.ts';
import { GenerationInterrupted } from '../src/generate.ts';

describe('worker policies', () => {
  it('exit codes: 143 interrupted, 3 for refused input, 1 for anything else (S3, runtime)', () => {
    expect(exitCodeFor(new GenerationInterrupted(12, 'SIGTERM'))).toBe(EXIT.interrupted);
    expect(exitCodeFor(Object.assign(new Error('x'), { name: 'BundleError' }))).toBe(EXIT.refused);
    expect(exitCodeFor(Object.assign(new Error('x'), { name: 'InternalError' }))).toBe(EXIT.failed);
    expect(exitCodeFor('not an error')).toBe(EXIT.failed);
  });

  it('S3 attempts: 8 by default, AWS_MAX_ATTEMPTS when it is a positive integer', () => {
    expect(workerS3MaxAttempts({})).toBe(8);
    expect(workerS3MaxAttempts({ AWS_MAX_ATTEMPTS: '3' })).toBe(3);
    expect(workerS3MaxAttempts({ AWS_MAX_ATTEMPTS: '0' })).toBe(8);
    expect(workerS3MaxAttempts({ AWS_MAX_ATTEMPTS: 'lots' })).toBe(8);
  });

  it('an interruption without a checkpoint says so', () => {
    expect(new GenerationInterrupted(12, 'SIGTERM', false).message).toMatch(/no checkpoint written/);
    expect(new GenerationInterrupted(12, 'SIGTERM').checkpointWritten).toBe(true);
  });

  it('placement: the queue wait is measured from the execution start to this attempt, never negative; none without a placement', () => {
    const p = { tier: 'interactive' as const, queue: 'q', capacity: 'on-demand' as const, spotCancellations: 1, executionStartedAt: '2026-01-01T00:00:00.000Z' };
    const t0 = Date.parse(p.executionStartedAt);
    expect(recordedPlacement(p, t0 + 1_260_449)).toEqual({ ...p, queueWaitSeconds: 1260.4 });
    // A clock a little behind Step Functions' is not a negative wait.
    expect(recordedPlacement(p, t0 - 500)?.queueWaitSeconds).toBe(0);
    expect(recordedPlacement(null, t0)).toBeNull();
  });
});
