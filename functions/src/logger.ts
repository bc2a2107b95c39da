/**
 * The one structured logger of the functions (Powertools for AWS Lambda): JSON lines with the
 * service name, level, and the keys each handler appends (jobId, step). Level from
 * POWERTOOLS_LOG_LEVEL (default INFO). Rule: never log a prompt or a presigned URL above debug —
 * log `specSummary(spec)` instead of the spec.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Console } from 'node:console';
import { Logger } from '@aws-lambda-powertools/logger';
import type { Context } from 'aws-lambda';
import type { JobSpec } from '#shared/schemas';
import { PipelineError } from './errors.ts';
import { lambdaEntry, tracer } from './powertools.ts';

const root = new Logger({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'cil-pipeline' });
/** The logger of the invocation whose code is running (see `perInvocation`). */
const invocation = new AsyncLocalStorage<Logger>();

/**
 * The functions' logger. Inside a handler wrapped in `perInvocation` it is that invocation's own
 * child logger (its keys — step, jobId — and Lambda context are its own); elsewhere, and for
 * settings made outside a handler (the level, where lines go), it is the one root logger.
 *
 * Why: Powertools keeps appended keys on the logger object, which is one per process. Lambda runs
 * one invocation at a time per process, but local mode runs every handler in one process at once
 * (as Lambda's multi-concurrency runtime would): one invocation's keys then landed on another's
 * lines (5 of 20 checked carried another job's jobId or step).
 */
export const logger: Logger = new Proxy(root, {
  get(target, prop) {
    const l = invocation.getStore() ?? target;
    const v = Reflect.get(l, prop, l) as unknown;
    // Methods run on the real logger (Powertools uses private fields, which a Proxy cannot reach).
    return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(l) : v;
  },
  set(target, prop, value) {
    return Reflect.set(invocation.getStore() ?? target, prop, value);
  },
});

/**
 * Wraps a handler so that each invocation logs through a child of the root logger: same service,
 * level and destination, keys and context of its own, discarded when the invocation ends. In AWS
 * (one invocation at a time) the log lines are the same as before.
 */
export function perInvocation<A extends unknown[], R>(handler: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  return (...args) => {
    const child = root.createChild();
    // createChild makes a Console on process.stdout; write where the root writes (local mode
    // points the root at logs/lambda.jsonl).
    (child as unknown as { console: Console }).console = (root as unknown as { console: Console }).console;
    return invocation.run(child, () => handler(...args));
  };
}

/** How a step logs its end when it does not return. */
export interface StepLogging {
  /** The `step` key of every line of the invocation (the state name). */
  readonly step: string;
  /** Message of a typed refusal (a PipelineError: a warning, with its name and reason); omitted: refusals log as failures. */
  readonly refused?: string;
  /** Message of any other error (logged as an error, with the stack). */
  readonly failed: string;
  /** Rewrites a refusal's reason before it is logged (Validate cuts the prompt out). */
  readonly reason?: (reason: string) => string;
}

/**
 * A step's handler: `perInvocation`, the Lambda context (Powertools' injectLambdaContext), the
 * invocation traced (Powertools Tracer), the `step` key added first, the end logged as StepLogging
 * says when `work` throws (the error still propagates), the keys reset after (injectLambdaContext's
 * resetKeys).
 */
export function stepHandler<R>(o: StepLogging, work: (input: unknown) => Promise<R>): (input: unknown, context?: Context) => Promise<R> {
  const run = async (input: unknown): Promise<R> => {
    logger.appendKeys({ step: o.step });
    try {
      return await work(input);
    } catch (e) {
      if (o.refused !== undefined && e instanceof PipelineError) logger.warn(o.refused, { error: e.name, reason: o.reason ? o.reason(e.reason) : e.reason });
      else logger.error(o.failed, e as Error);
      throw e;
    }
  };
  // Powertools' context injection and tracing (powertools.ts); local mode invokes without a Lambda
  // context, and its per-invocation logger is dropped afterwards.
  return perInvocation(lambdaEntry(() => ({ tracer, logger }), run));
}

/** A Lambda entry point whose handler (and its clients) is built from the environment on first use. */
export function lazyHandler<R>(make: () => (input: unknown, context?: Context) => Promise<R>): (input: unknown, context?: Context) => Promise<R> {
  let cached: ((input: unknown, context?: Context) => Promise<R>) | null = null;
  return (input, context) => {
    cached ??= make();
    return cached(input, context);
  };
}

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
