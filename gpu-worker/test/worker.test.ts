/** The worker entrypoint's policies: exit codes for Batch's retry strategy, and S3 attempts per request. */
import { describe, expect, it } from 'vitest';
import { EXIT, exitCodeFor, workerS3MaxAttempts } from '../src/worker.ts';
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
});
