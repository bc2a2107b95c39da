/** Errors of the local pipeline (its executions' among them), and the two shapes in which it reports a task failure as AWS does. */

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

/** StartExecution with a name an execution of the state machine already has (as Step Functions answers). */
export class ExecutionAlreadyExists extends Error {
  override readonly name = 'ExecutionAlreadyExists';
}

/** An execution name Step Functions would refuse (its error is InvalidName). */
export class InvalidExecutionName extends Error {
  override readonly name = 'InvalidName';
}

/** Waiting for an execution to end took longer than the caller allowed. */
export class ExecutionWaitTimeout extends Error {
  override readonly name = 'ExecutionWaitTimeout';
}
