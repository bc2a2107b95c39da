/**
 * The pure core of Notify and of the failure recorder (no AWS SDK).
 *
 * - `buildFailureRecord`: the state machine's Catch output (which step failed, Step Functions'
 *   `{Error, Cause}`, and what is known of the job) → the `failures/<jobId>.json` record, whose
 *   reason is dug out of the Cause (Lambda error JSON, Batch job description, or plain text).
 * - `buildNotification`: a job result (success) or a failure record → the SNS message and the
 *   EventBridge event ('cil.pipeline', 'Job Succeeded' / 'Job Failed').
 *
 * Neither carries the prompt. Documented in docs/functions.md.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { formatIssues, toSchemaIssues } from '#shared/schemas';
import { jobIdFor, jobKeys, JOB_ID_PATTERN } from '#shared/schemas';
import { JobSpec, Placement } from '#shared/schemas';
import { InvalidEvent, MAX_REASON_CHARS } from '../errors.ts';
import { JobResult, jobRecordHead, resultScopeProblems } from '../postprocess/core.ts';
import type { OutputKind } from '../postprocess/core.ts';
import { decodeEventKey, versionForJobId } from '../validate/core.ts';

export const FAILURE_FORMAT = 'cil-failure/1';
export const EVENT_SOURCE = 'cil.pipeline';
export const DETAIL_TYPE = { succeeded: 'Job Succeeded', failed: 'Job Failed' } as const;
/** Outputs that get presigned URLs (per-frame PNGs would bloat the message past SNS's 256 KB). */
export const PRESIGNED_KINDS: readonly OutputKind[] = ['mp4', 'gif', 'webp', 'poster', 'metadata', 'latent-npy'];

/** What the state machine's Catch path hands to the failure recorder. */
export const FailureInput = z.looseObject({
  /** The state that failed: 'Validate', 'Generate', 'PostProcess', … */
  failedStep: z.string().min(1).max(80),
  /** Step Functions' error output (Catch with ResultPath). */
  error: z.looseObject({ Error: z.string().max(256), Cause: z.string().optional() }),
  /** The job spec, when the job got past Validate. */
  spec: z.unknown().optional(),
  /** The execution's input (the S3 event), to name the job when Validate failed. */
  event: z.unknown().optional(),
  jobId: z.string().optional(),
  executionArn: z.string().max(2048).optional(),
  /** Where Generate placed the Batch job (`$.placement`), once the job got that far. */
  placement: z.unknown().optional(),
});
export type FailureInput = z.infer<typeof FailureInput>;

export const FailureRecord = z.strictObject({
  ...jobRecordHead(FAILURE_FORMAT, 'failed'),
  failedStep: z.string().min(1).max(80),
  /** The error name (InvalidImage, States.Timeout, States.TaskFailed, …). */
  error: z.string().max(256),
  reason: z.string().max(MAX_REASON_CHARS + 20),
  bucket: z.string().nullable(),
  input: z.strictObject({ key: z.string(), versionId: z.string().nullable() }).nullable(),
  model: z.string().nullable(),
  executionArn: z.string().nullable(),
  failureKey: z.string(),
  failedAt: z.iso.datetime(),
  /** Only for a job the workflow resubmitted on-demand after a Spot capacity cancellation: its placement (the on-demand queue, the cancelled Spot job). */
  placement: Placement.optional(),
});
export type FailureRecord = z.infer<typeof FailureRecord>;

function cap(s: string): string {
  return s.length > MAX_REASON_CHARS ? `${s.slice(0, MAX_REASON_CHARS)}… (truncated)` : s;
}

/**
 * The human-readable reason in a Step Functions Cause: a Lambda error's `errorMessage`, a Batch
 * job's `StatusReason` and container reason/exit code, or the text itself.
 */
export function reasonFromCause(errorName: string, cause: string | undefined): string {
  if (cause === undefined || cause.trim() === '') return errorName;
  let j: unknown;
  try {
    j = JSON.parse(cause);
  } catch {
    return cap(cause);
  }
  if (typeof j !== 'object' || j === null) return cap(cause);
  const o = j as Record<string, unknown>;
  if (typeof o.errorMessage === 'string') return cap(o.errorMessage);
  if (typeof o.reason === 'string') return cap(o.reason);
  if (typeof o.StatusReason === 'string') {
    const c = (typeof o.Container === 'object' && o.Container !== null ? o.Container : {}) as Record<string, unknown>;
    const parts = [o.StatusReason];
    if (typeof c.Reason === 'string') parts.push(c.Reason);
    if (typeof c.ExitCode === 'number') parts.push(`exit code ${c.ExitCode}`);
    if (typeof c.LogStreamName === 'string') parts.push(`log stream ${c.LogStreamName}`);
    return cap(parts.join('; '));
  }
  return cap(cause);
}

interface Identity {
  jobId: string;
  bucket: string | null;
  input: { key: string; versionId: string | null } | null;
  model: string | null;
}

/**
 * The job a failure belongs to: the spec's, else the workflow input's `jobId`, else the one the
 * upload event names (computed as Validate does, even when Validate refused the key), else a hash
 * of the event (so even a malformed input gets exactly one record).
 */
export function failureIdentity(f: FailureInput): Identity {
  const spec = JobSpec.safeParse(f.spec);
  if (spec.success) {
    const s = spec.data;
    return { jobId: s.jobId, bucket: s.bucket, input: { key: s.input.key, versionId: s.input.versionId }, model: s.request.model };
  }
  // The workflow's state: GenerationInput fields at the top level (functions/src/starter/core.ts).
  const top = z
    .looseObject({ jobId: z.string().regex(JOB_ID_PATTERN), bucket: z.string().min(1).max(255).optional(), key: z.string().min(1).max(4096).optional(), versionId: z.string().nullable().optional() })
    .safeParse(f);
  if (top.success) {
    const t = top.data;
    return { jobId: t.jobId, bucket: t.bucket ?? null, input: t.key !== undefined ? { key: t.key, versionId: t.versionId ?? null } : null, model: null };
  }
  const ev = z
    .looseObject({
      detail: z.looseObject({
        bucket: z.looseObject({ name: z.string().min(1).max(255) }),
        object: z.looseObject({ key: z.string().min(1).max(4096), etag: z.string().optional(), 'version-id': z.string().optional() }),
      }),
    })
    .safeParse(f.event ?? f);
  if (ev.success) {
    const d = ev.data.detail;
    let key = d.object.key;
    try {
      key = decodeEventKey(key);
    } catch {
      // keep the raw key: the record must still be written
    }
    const versionId = d.object['version-id'] ?? null;
    const etag = d.object.etag?.replace(/^"|"$/g, '') ?? null;
    return { jobId: jobIdFor(d.bucket.name, key, versionForJobId(versionId, etag)), bucket: d.bucket.name, input: { key, versionId }, model: null };
  }
  const h = createHash('sha256').update(JSON.stringify(f.event ?? null)).digest('hex').slice(0, 24);
  return { jobId: `j-${h}`, bucket: null, input: null, model: null };
}

export function parseFailureInput(input: unknown): FailureInput {
  const r = FailureInput.safeParse(input);
  if (!r.success) throw new InvalidEvent(formatIssues('record-failure input', 'expected {failedStep, error: {Error, Cause}, spec?, event?}', toSchemaIssues(r.error.issues)));
  return r.data;
}

/**
 * Worker exit codes that name their error (gpu-worker/src/worker.ts): a Batch job's failure
 * reaches Step Functions as States.TaskFailed with the job description as Cause, so the record
 * names the worker's typed error from the last attempt's exit code.
 */
export const WORKER_EXIT_ERRORS: Readonly<Record<number, { readonly error: string; readonly what: string }>> = Object.freeze({
  78: { error: 'GpuUnavailable', what: 'the worker required CUDA and could not get it (no GPU, or a driver, CUDA or cuDNN mismatch); it did not fall back to the CPU' },
});

/** The worker's error named by a Batch job description's exit code, if it names one. */
export function workerErrorFromCause(cause: string | undefined): { error: string; what: string } | null {
  if (cause === undefined) return null;
  try {
    const j = JSON.parse(cause) as { Container?: { ExitCode?: unknown } };
    const code = j.Container?.ExitCode;
    return typeof code === 'number' ? (WORKER_EXIT_ERRORS[code] ?? null) : null;
  } catch {
    return null;
  }
}

/** The failure record for `failures/<jobId>.json`. */
export function buildFailureRecord(f: FailureInput, failedAt: Date): FailureRecord {
  const id = failureIdentity(f);
  const worker = workerErrorFromCause(f.error.Cause);
  const reason = reasonFromCause(f.error.Error, f.error.Cause);
  return FailureRecord.parse({
    format: FAILURE_FORMAT,
    status: 'failed',
    jobId: id.jobId,
    failedStep: f.failedStep,
    error: worker?.error ?? f.error.Error,
    reason: worker ? cap(`${worker.error}: ${worker.what}; ${reason}`) : reason,
    bucket: id.bucket,
    input: id.input,
    model: id.model,
    executionArn: f.executionArn ?? null,
    failureKey: jobKeys(id.jobId).failure,
    failedAt: failedAt.toISOString(),
    ...resubmission(f.placement),
  });
}

/** The state's placement when it records a resubmission (records of other failures stay as they were). */
function resubmission(placement: unknown): { placement?: Placement } {
  const p = Placement.safeParse(placement);
  return p.success && p.data.spotCancellations > 0 ? { placement: p.data } : {};
}

export type NotifyInput = { readonly status: 'succeeded'; readonly result: JobResult } | { readonly status: 'failed'; readonly failure: FailureRecord };

/** The envelope the workflow's Notify states send: `{status: 'SUCCEEDED'|'FAILED', executionArn, job: <state>}`. */
const Envelope = z.looseObject({
  status: z.enum(['SUCCEEDED', 'FAILED']),
  executionArn: z.string().max(2048).optional(),
  job: z.record(z.string(), z.unknown()),
});

/**
 * Reads the Notify input: a JobResult or a FailureRecord (told apart by `status`), given directly
 * or under `result` / `failure`; or the workflow's envelope `{status: 'SUCCEEDED'|'FAILED',
 * executionArn, job}`, whose state holds the result (`job.result`) or the failure record
 * (`job.failureRecord`; when recording failed, the record is rebuilt from the state at `now`).
 * A job result must name only the job's own outputs, in `expectBucket` (the data bucket) when
 * given: Notify presigns what it lists (checkResultScope).
 */
export function parseNotifyInput(input: unknown, now: Date = new Date(), expectBucket: string | null = null): NotifyInput {
  const env = Envelope.safeParse(input);
  if (env.success) {
    const { job } = env.data;
    if (env.data.status === 'SUCCEEDED') return parseNotifyInput(job.result, now, expectBucket);
    const rec = FailureRecord.safeParse(job.failureRecord);
    if (rec.success) return { status: 'failed', failure: rec.data };
    return { status: 'failed', failure: buildFailureRecord(parseFailureInput({ executionArn: env.data.executionArn, ...job }), now) };
  }
  let doc = input;
  if (typeof input === 'object' && input !== null && !('status' in input)) {
    if ('result' in input) doc = input.result;
    else if ('failure' in input) doc = input.failure;
  }
  const status = typeof doc === 'object' && doc !== null ? (doc as { status?: unknown }).status : undefined;
  if (status === 'succeeded') {
    const r = JobResult.safeParse(doc);
    if (r.success) return { status, result: checkResultScope(r.data, expectBucket) };
    throw new InvalidEvent(formatIssues('notify input', 'not a job result', toSchemaIssues(r.error.issues)));
  }
  if (status === 'failed') {
    const r = FailureRecord.safeParse(doc);
    if (r.success) return { status, failure: r.data };
    throw new InvalidEvent(formatIssues('notify input', 'not a failure record', toSchemaIssues(r.error.issues)));
  }
  throw new InvalidEvent("notify input: expected a job result (status 'succeeded'), a failure record (status 'failed'), or {status: 'SUCCEEDED'|'FAILED', job}");
}

/**
 * Refuses (InvalidEvent) a job result that names another bucket than the data bucket, or any key
 * outside its own `outputs/<jobId>/` (resultScopeProblems): Notify signs URLs for the keys it
 * lists with a role that may read every job's outputs and failure records, so a forged result
 * would otherwise get links to other jobs' outputs, failures/, uploads or other buckets. The
 * reason says what was expected, never the forged text (it is logged and may be another user's).
 */
export function checkResultScope(r: JobResult, expectBucket: string | null): JobResult {
  const problems = resultScopeProblems(r);
  if (expectBucket !== null && r.bucket !== expectBucket) problems.unshift(`bucket is not the data bucket '${expectBucket}'`);
  if (problems.length > 0) {
    throw new InvalidEvent(`job result ${r.jobId}: Notify presigns and announces only the job's own outputs (${jobKeys(r.jobId).output}…) in the data bucket: ${problems.join('; ')}`);
  }
  return r;
}

export interface NotifiedOutput {
  readonly kind: OutputKind;
  readonly key: string;
  readonly bytes: number;
  readonly url?: string;
}

/** The notification body, the same for SNS (as the message) and EventBridge (as the detail). */
export interface NotificationDetail {
  readonly jobId: string;
  readonly status: 'succeeded' | 'failed';
  readonly bucket: string | null;
  readonly model: string | null;
  readonly input: { readonly key: string; readonly versionId: string | null } | null;
  readonly resultKey?: string;
  readonly outputs?: readonly NotifiedOutput[];
  readonly video?: JobResult['video'];
  readonly timings?: Readonly<Record<string, number>> | null;
  /** Where the Batch job ran (result.json `placement`, when the worker recorded it; a failure record's, after a resubmission). */
  readonly placement?: JobResult['placement'] | Placement;
  readonly urlsExpireAt?: string;
  readonly failedStep?: string;
  readonly error?: string;
  readonly reason?: string;
  readonly failureKey?: string;
}

export interface Notification {
  readonly subject: string;
  readonly detailType: string;
  readonly detail: NotificationDetail;
  /** SNS message attributes, for subscription filter policies. */
  readonly attributes: Readonly<Record<string, string>>;
}

/** `urls` maps output keys to presigned URLs (from the handler), with their expiry. */
export function buildNotification(n: NotifyInput, urls: { readonly byKey: ReadonlyMap<string, string>; readonly expiresAt: string } | null = null): Notification {
  if (n.status === 'succeeded') {
    const r = n.result;
    const outputs = r.outputs.map((o): NotifiedOutput => {
      const url = urls?.byKey.get(o.key);
      return url === undefined ? { kind: o.kind, key: o.key, bytes: o.bytes } : { kind: o.kind, key: o.key, bytes: o.bytes, url };
    });
    const detail: NotificationDetail = {
      jobId: r.jobId,
      status: 'succeeded',
      bucket: r.bucket,
      model: r.model,
      input: r.input,
      resultKey: r.resultKey,
      outputs,
      video: r.video,
      timings: r.timings,
      ...(r.placement ? { placement: r.placement } : {}),
      ...(urls !== null && urls.byKey.size > 0 ? { urlsExpireAt: urls.expiresAt } : {}),
    };
    // capacity as an attribute: subscribers can filter the jobs that ran on-demand after a Spot cancellation.
    const attributes: Record<string, string> = { jobId: r.jobId, status: 'succeeded', ...(r.placement ? { capacity: r.placement.capacity } : {}) };
    return { subject: `CIL job ${r.jobId} succeeded`, detailType: DETAIL_TYPE.succeeded, detail, attributes };
  }
  const f = n.failure;
  const detail: NotificationDetail = {
    jobId: f.jobId,
    status: 'failed',
    bucket: f.bucket,
    model: f.model,
    input: f.input,
    failedStep: f.failedStep,
    error: f.error,
    reason: f.reason,
    failureKey: f.failureKey,
    ...(f.placement ? { placement: f.placement } : {}),
  };
  return {
    // SNS subjects: printable ASCII, one line, at most 100 characters.
    subject: `CIL job ${f.jobId} failed in ${f.failedStep}`.replace(/[^\x20-\x7e]/g, '?').slice(0, 100),
    detailType: DETAIL_TYPE.failed,
    detail,
    attributes: { jobId: f.jobId, status: 'failed', failedStep: f.failedStep, error: f.error },
  };
}
