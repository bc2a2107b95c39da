/**
 * Powertools for AWS Lambda around every handler of functions/: Tracer (an X-Ray subsegment per
 * invocation with the ColdStart and Service annotations; the AWS SDK clients captured, so each S3,
 * Step Functions, SNS, EventBridge and Batch call is a subsegment) and the Logger's Lambda context
 * injection (the context on every line, the appended keys reset when the invocation ends).
 *
 * The Tracer is a no-op outside Lambda (no AWS_EXECUTION_ENV: local mode, tests) and where
 * POWERTOOLS_TRACE_ENABLED=false. Responses are never recorded as trace metadata: job specs and
 * results carry the prompt (docs/security.md), and so may a refusal's reason, so the functions
 * that read a prompt (Validate) also turn error capture off in the stack (POWERTOOLS_TRACER_CAPTURE_ERROR).
 */
import type { Logger } from '@aws-lambda-powertools/logger';
import { Tracer } from '@aws-lambda-powertools/tracer';
import type { Context } from 'aws-lambda';

/** The functions' one tracer (service: POWERTOOLS_SERVICE_NAME, which the stack sets per function). */
export const tracer = new Tracer({ serviceName: process.env.POWERTOOLS_SERVICE_NAME ?? 'cil-pipeline' });

/** An AWS SDK v3 client whose calls are traced (returned as is when tracing is off). */
export function traced<C>(client: C): C {
  return tracer.captureAWSv3Client(client);
}

type Entry<E, R> = (event: E, context: Context) => Promise<R>;
type MethodDecorator = (target: unknown, key: string, descriptor: TypedPropertyDescriptor<Entry<never, unknown>>) => unknown;

/** What `lambdaEntry` decorates with (the tests pass their own tracer). */
export interface Instruments {
  readonly tracer: Pick<Tracer, 'captureLambdaHandler'>;
  /** Omitted: the handler logs nothing of its own (the metrics function). */
  readonly logger?: Pick<Logger, 'injectLambdaContext'>;
}

/**
 * A Lambda entry point with Powertools' decorators applied, the tracer outermost — what
 * `@tracer.captureLambdaHandler()` and `@logger.injectLambdaContext()` do on a class method,
 * here on a function. Without a Lambda context (local mode calls handlers in-process) the handler
 * runs bare. `instruments` is read per invocation (the logger may be that invocation's own).
 */
export function lambdaEntry<E, R>(instruments: () => Instruments, handler: (event: E, context?: Context) => Promise<R>): (event: E, context?: Context) => Promise<R> {
  return (event, context) => {
    if (!context) return handler(event);
    const { tracer: t, logger } = instruments();
    const d: TypedPropertyDescriptor<Entry<E, R>> = { value: (e, c) => handler(e, c) };
    const decorators = [logger?.injectLambdaContext({ resetKeys: true }), t.captureLambdaHandler({ captureResponse: false })];
    for (const decorate of decorators) if (decorate) (decorate as unknown as MethodDecorator)(undefined, 'handler', d as never);
    return d.value!(event, context);
  };
}
