/**
 * The typed errors of the Lambda steps. Each has a stable `name` (the Lambda runtime reports it as
 * `errorType`, which is what a Step Functions Retry/Catch `ErrorEquals` matches) and a
 * human-readable `reason` (the message). `toJSON()` gives `{error, reason}`, the form the failure
 * record and `cil validate` print. Documented in docs/functions.md.
 */

/** Reasons are capped so a Step Functions payload (256 KB) or a log line never balloons. */
export const MAX_REASON_CHARS = 8000;

export interface ErrorJson {
  readonly error: string;
  readonly reason: string;
}

export class PipelineError extends Error {
  override readonly name: string = 'PipelineError';
  constructor(reason: string, options?: ErrorOptions) {
    super(reason.length > MAX_REASON_CHARS ? `${reason.slice(0, MAX_REASON_CHARS)}… (truncated)` : reason, options);
  }
  get reason(): string {
    return this.message;
  }
  toJSON(): ErrorJson {
    return { error: this.name, reason: this.message };
  }
}

/**
 * Errors a failed execution can end with that the user's input caused, not the system: a bad
 * image, key or request, a model or statistics they named that does not exist, a sidecar written
 * after its image, a bad manifest line, a statistics request refused. Alarms count every other
 * error as a system failure (infra/lib/observability.ts); these are counted, not alarmed on.
 */
export const USER_ERROR_NAMES: ReadonlySet<string> = new Set([
  'InvalidImage',
  'InvalidRequest',
  'InvalidKey',
  'InputNotFound',
  'RequestChanged',
  'ModelNotFound',
  'StatisticsNotFound',
  'InvalidManifestLine',
  'CIL.InvalidStatisticsInput',
  'CIL.InvalidFinetuneInput',
]);

/** 'user' for the errors in USER_ERROR_NAMES, else 'system'. */
export function failureKind(errorName: string | null | undefined): 'user' | 'system' {
  return errorName !== null && errorName !== undefined && USER_ERROR_NAMES.has(errorName) ? 'user' : 'system';
}

/** The step's input is not the event/document it takes (wrong shape, wrong bucket). */
export class InvalidEvent extends PipelineError {
  override readonly name = 'InvalidEvent';
}
/** The upload's key is refused: outside inputs/, path tricks, unsafe characters, not an image extension. */
export class InvalidKey extends PipelineError {
  override readonly name = 'InvalidKey';
}
/** The upload named by the event is gone, or changed since the event (ETag mismatch). */
export class InputNotFound extends PipelineError {
  override readonly name = 'InputNotFound';
}
/** The sidecar/metadata request is not JSON, too large, or does not fit the contract or the model. */
export class InvalidRequest extends PipelineError {
  override readonly name = 'InvalidRequest';
}
/**
 * The sidecar was written after the image. The image is pinned to the version the event names;
 * a later sidecar is not the request that upload was made with, so it is refused rather than used.
 */
export class RequestChanged extends PipelineError {
  override readonly name = 'RequestChanged';
}
/** No model bundle manifest for the requested model, or the manifest is invalid. */
export class ModelNotFound extends PipelineError {
  override readonly name = 'ModelNotFound';
}
/** Analytic-Init is on but the statistics file is missing (or the model names none). */
export class StatisticsNotFound extends PipelineError {
  override readonly name = 'StatisticsNotFound';
}
/** The upload is not a usable image: format, size, dimensions, corruption, animation. */
export class InvalidImage extends PipelineError {
  override readonly name = 'InvalidImage';
}
/** The worker's frames or metadata.json are missing. */
export class WorkerOutputNotFound extends PipelineError {
  override readonly name = 'WorkerOutputNotFound';
}
/** The worker's frames or metadata are malformed (not PNG, gaps, wrong count, mixed sizes, bad JSON). */
export class InvalidWorkerOutput extends PipelineError {
  override readonly name = 'InvalidWorkerOutput';
}
/** ffmpeg (or the WebP fallback) failed, is missing, or lacks a required encoder. */
export class EncodeFailed extends PipelineError {
  override readonly name = 'EncodeFailed';
}
/**
 * `outputs/<jobId>/result.json` exists but is not this job's result (unreadable, another job or
 * input): Post-process refuses to write over finished outputs it cannot account for.
 */
export class OutputConflict extends PipelineError {
  override readonly name = 'OutputConflict';
}
/** An environment variable of the function is missing or invalid. */
export class ConfigurationError extends PipelineError {
  override readonly name = 'ConfigurationError';
}
/**
 * S3 answered 403 to a GET or HEAD whose "missing" answer the step handles (sidecar, upload,
 * manifest, statistics, earlier result). Without s3:ListBucket covering the key S3 answers 403
 * instead of 404 for a missing key, so this is a permission gap, never read as "missing".
 */
export class S3AccessDenied extends PipelineError {
  override readonly name = 'S3AccessDenied';
}
/** SNS or EventBridge refused a notification (transient: worth a retry). */
export class PublishFailed extends PipelineError {
  override readonly name = 'PublishFailed';
}

/**
 * S3 could not be reached at all (connection refused or reset, a name that does not resolve)
 * after the SDK's own retries. Transient: the state machine retries it (HANDLER_TRANSIENT_ERRORS).
 * Without this name such an error would reach Step Functions as a bare `Error`, which no Retry
 * can match without also retrying real bugs.
 */
export class S3Unreachable extends Error {
  override readonly name = 'S3Unreachable';
}

/** A batch-manifest line is not `{"image": <key under inputs/ or batches/>, "request"?: {…}}` (PrepareItem). */
export class InvalidManifestLine extends Error {
  override readonly name = 'InvalidManifestLine';
}

/**
 * A variable the stack sets on the glue functions is missing (requiredVar in env.ts): one class
 * per function, so that the error type in the logs names the function.
 */
export class StarterConfigError extends Error {
  override readonly name = 'StarterConfigError';
}
export class SummaryConfigError extends Error {
  override readonly name = 'SummaryConfigError';
}
export class MetricsConfigError extends Error {
  override readonly name = 'MetricsConfigError';
}

/**
 * Errors that a retry cannot fix: the state machine should Catch them straight into the failure
 * branch instead of retrying. Everything else (SDK throttling, network, PublishFailed,
 * Lambda.ServiceException …) is worth a retry.
 */
export const PERMANENT_ERRORS: readonly string[] = [
  'InvalidEvent',
  'InvalidKey',
  'InputNotFound',
  'InvalidRequest',
  'RequestChanged',
  'ModelNotFound',
  'StatisticsNotFound',
  'InvalidImage',
  'WorkerOutputNotFound',
  'InvalidWorkerOutput',
  'EncodeFailed',
  'OutputConflict',
  'ConfigurationError',
  'S3AccessDenied',
];

/** `{error, reason}` for any thrown value (untyped errors keep their own name). */
export function errorJson(e: unknown): ErrorJson {
  if (e instanceof PipelineError) return e.toJSON();
  if (e instanceof Error) return { error: e.name || 'Error', reason: e.message.slice(0, MAX_REASON_CHARS) };
  return { error: 'Error', reason: String(e).slice(0, MAX_REASON_CHARS) };
}
