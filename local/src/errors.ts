/** Errors of the local pipeline, and the two shapes in which it reports a task failure as AWS does. */

export class LocalPipelineError extends Error {
  override readonly name = 'LocalPipelineError';
}

/**
 * A Lambda function's error as Step Functions sees it: Error is the handler's error type, Cause
 * the runtime's JSON `{errorType, errorMessage, trace}` (RecordFailure reads errorMessage from it).
 */
export class LambdaFunctionError extends Error {
  constructor(errorType: string, errorMessage: string, trace: string[]) {
    super(JSON.stringify({ errorType, errorMessage, trace }));
    // The name is the handler's own error type: that is what Retry and Catch match.
    this.name = errorType;
  }
}

/** A task failure as Step Functions reports a failed Batch job or child execution. */
export class TaskFailed extends Error {
  override readonly name = 'States.TaskFailed';
}
