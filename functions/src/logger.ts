/**
 * The one structured logger of the functions (Powertools for AWS Lambda): JSON lines with the
 * service name, level, and the keys each handler appends (jobId, step). Level from
 * POWERTOOLS_LOG_LEVEL (default INFO). Rule: never log a prompt or a presigned URL above debug —
 * log `specSummary(spec)` instead of the spec.
 */
import { Logger } from '@aws-lambda-powertools/logger';
import type { JobSpec } from '../../shared/src/schemas/jobSpec.ts';

export const logger = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'cil-pipeline' });

/** What of a job spec may be logged at info: everything but the prompt (its length only). */
export function specSummary(spec: JobSpec): Record<string, unknown> {
  const { prompt, ...rest } = spec.request;
  return {
    jobId: spec.jobId,
    input: spec.input,
    imageKey: spec.imageKey,
    request: { ...rest, promptChars: prompt.length },
  };
}

/**
 * A typed error's reason with the prompt's quoted value removed (zod issue lines quote the first
 * 40 characters of a bad value), for logging at warn.
 */
export function redactPrompt(reason: string): string {
  return reason.replace(/^(\s*- prompt:).*$/gm, '$1 (redacted)');
}
