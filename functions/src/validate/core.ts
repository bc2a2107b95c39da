/**
 * The pure core of Validate (no AWS SDK): reads the upload event, the request JSON and the model
 * manifest handed to it, resolves every field of the request for the model, and builds the job
 * spec. The S3 reads and writes are the handler's (handler.ts); the image check is image.ts.
 * Documented in docs/functions.md.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { formatIssues, toSchemaIssues } from '#shared/schemas';
import { JsonSyntaxError, parseJsonText } from '#shared/formats';
import { InvalidRequestError, parseJobRequest } from '#shared/schemas';
import type { JobRequest } from '#shared/schemas';
import { inputKeyProblem, JOB_ID_PATTERN, jobIdFor, jobKeys, MAX_KEY_CHARS, modelPrefix, PREFIX } from '#shared/schemas';
import { ManifestError, parseManifest } from '#shared/schemas';
import type { Manifest } from '#shared/schemas';
import { JobSpec } from '#shared/schemas';
import type { ResolvedRequest } from '#shared/schemas';
import { resolveRequest as resolveShared, StatisticsRequiredError, FALLBACK_FPS } from '#shared/schemas';
import type { ParsedRequest } from '#shared/schemas';

import { InvalidEvent, InvalidKey, InvalidRequest, ModelNotFound, RequestChanged, StatisticsNotFound } from '../errors.ts';

export { FALLBACK_FPS };
export type { ParsedRequest };

/** A sidecar larger than this is refused before parsing (the request itself is a few hundred bytes). */
export const MAX_SIDECAR_BYTES = 1024 * 1024;
/** The S3 user-metadata key (`x-amz-meta-request`) that may carry the request when there is no sidecar. */
export const METADATA_REQUEST_KEY = 'request';
/**
 * Output frame rate when neither the request nor the manifest says (DynamiCrafter's manifests need
 * not: its conditioning is frameStride). 8 fps is what the DynamiCrafter reference saves at.
 */
/** Seeds are drawn below 2^48: exact in float64 and in every consumer's integer type. */
export const SEED_LIMIT = 2 ** 48;

// ---------------------------------------------------------------- the upload event

export interface UploadRef {
  readonly bucket: string;
  /** The decoded, checked key. */
  readonly key: string;
  readonly versionId: string | null;
  /** Without quotes. */
  readonly etag: string | null;
  readonly size: number | null;
  /** The event's time (ISO 8601), when it has one. */
  readonly time: string | null;
  readonly jobId: string;
  /** A request given inline (a batch-manifest line); null: read the sidecar or metadata. */
  readonly inlineRequest: Readonly<Record<string, unknown>> | null;
  /** Where a batch-manifest job came from (`{name, manifestKey, line}`); null for uploads. */
  readonly batch: Readonly<Record<string, unknown>> | null;
}

const EventObject = z.looseObject({
  key: z.string().min(1).max(4096),
  size: z.number().int().min(0).optional(),
  etag: z.string().max(256).optional(),
  'version-id': z.string().max(1024).optional(),
});
const EventDetail = z.looseObject({
  bucket: z.looseObject({ name: z.string().min(3).max(63) }),
  object: EventObject,
});
/** The EventBridge "Object Created" event from S3 (Step Functions passes it whole), or its detail. */
const EventBridgeEvent = z.looseObject({ detail: EventDetail, time: z.string().optional() });
/**
 * The generation workflow's input as the starter Lambda and the batch-manifest map build it
 * (functions/src/starter/core.ts `GenerationInput`): the job id is the execution name, `key` as the
 * event carried it, `request` an inline request (manifest lines) or null.
 */
const GenerationInput = z.looseObject({
  jobId: z.string().regex(JOB_ID_PATTERN),
  bucket: z.string().min(3).max(63),
  key: z.string().min(1).max(4096),
  versionId: z.string().max(1024).nullable().optional(),
  etag: z.string().max(256).nullable().optional(),
  size: z.int().min(0).nullable().optional(),
  request: z.record(z.string(), z.unknown()).nullable().optional(),
  batch: z.record(z.string(), z.unknown()).nullable().optional(),
});

/**
 * Checks an image key: inputKeyProblem, or — for a batch-manifest job only — the same rules
 * under `batches/` (manifests may name images uploaded beside them).
 */
export function imageKeyProblem(key: string, fromBatch: boolean): string | null {
  // Checked on the key itself: the batches/ → inputs/ mapping below shortens it by one character.
  if (key.length > MAX_KEY_CHARS) return `key is ${key.length} characters; S3 keys are at most ${MAX_KEY_CHARS}`;
  if (fromBatch && key.startsWith(PREFIX.batches)) {
    const problem = inputKeyProblem(PREFIX.inputs + key.slice(PREFIX.batches.length));
    return problem === null ? null : problem.replace(`'${PREFIX.inputs}'`, `'${PREFIX.inputs}' or '${PREFIX.batches}'`);
  }
  return inputKeyProblem(key);
}

/**
 * Keys arrive URL-encoded on some paths (S3 notifications encode them, '+' for space). A safe key
 * (inputKeyProblem) contains neither '%' nor '+', so a key is used as given when it has neither,
 * and otherwise decoded — a decoded key is still checked, so decoding can never admit a key the
 * rules refuse. Throws InvalidKey when the encoding itself is broken.
 */
export function decodeEventKey(raw: string): string {
  if (!/[%+]/.test(raw)) return raw;
  try {
    return decodeURIComponent(raw.replace(/\+/g, ' '));
  } catch {
    throw new InvalidKey(`key ${JSON.stringify(raw)} is not valid URL encoding`);
  }
}

/** The version used for the job id: the version id, else the ETag (unversioned buckets), else ''. */
export function versionForJobId(versionId: string | null, etag: string | null): string {
  return versionId ?? etag ?? '';
}

function validTime(t: string | undefined): string | null {
  if (t === undefined) return null;
  const d = new Date(t);
  if (Number.isNaN(d.getTime())) return null;
  const iso = d.toISOString();
  // Years outside 0000–9999 print as ±YYYYYY, which the job spec's createdAt (RFC 3339) refuses.
  return /^\d{4}-/.test(iso) ? iso : null;
}

/**
 * Reads Validate's input: the S3 object-created event (EventBridge event or its detail), or the
 * workflow's GenerationInput. Returns bucket, key (decoded, checked with inputKeyProblem), version,
 * ETag, size, the job id (the input's, else jobIdFor(bucket, key, versionId ?? etag)) and any
 * inline request. `expectBucket` (the data bucket) refuses inputs naming other buckets.
 */
export function parseUploadEvent(input: unknown, expectBucket: string | null = null): UploadRef {
  const fail = (issues: z.core.$ZodIssue[]): never => {
    throw new InvalidEvent(
      formatIssues('validate input', 'not an S3 object-created event (EventBridge event or its detail) or a generation input', toSchemaIssues(issues)),
    );
  };
  const obj: Record<string, unknown> = typeof input === 'object' && input !== null ? (input as Record<string, unknown>) : {};
  let bucket: string;
  let rawKey: string;
  let versionId: string | null;
  let etag: string | null;
  let size: number | null;
  let time: string | null = null;
  let jobId: string | null = null;
  let inlineRequest: Readonly<Record<string, unknown>> | null = null;
  let batch: Readonly<Record<string, unknown>> | null = null;
  if ('jobId' in obj && 'key' in obj && typeof obj.bucket === 'string') {
    const r = GenerationInput.safeParse(input);
    if (!r.success) return fail(r.error.issues);
    ({ bucket, key: rawKey } = r.data);
    versionId = r.data.versionId ?? null;
    etag = r.data.etag ?? null;
    size = r.data.size ?? null;
    jobId = r.data.jobId;
    inlineRequest = r.data.request ?? null;
    batch = r.data.batch ?? null;
  } else {
    let detail: z.infer<typeof EventDetail>;
    if ('detail' in obj) {
      const r = EventBridgeEvent.safeParse(input);
      if (!r.success) return fail(r.error.issues);
      detail = r.data.detail;
      time = validTime(r.data.time);
    } else {
      const r = EventDetail.safeParse(input);
      if (!r.success) return fail(r.error.issues);
      detail = r.data;
    }
    bucket = detail.bucket.name;
    rawKey = detail.object.key;
    versionId = detail.object['version-id'] ?? null;
    etag = detail.object.etag ?? null;
    size = detail.object.size ?? null;
  }
  if (expectBucket !== null && bucket !== expectBucket) {
    throw new InvalidEvent(`input names bucket '${bucket}', but this pipeline serves '${expectBucket}'`);
  }
  const key = decodeEventKey(rawKey);
  const problem = imageKeyProblem(key, batch !== null);
  if (problem !== null) throw new InvalidKey(`key ${JSON.stringify(key)} refused: ${problem}`);
  etag = etag?.replace(/^"|"$/g, '') ?? null;
  jobId ??= jobIdFor(bucket, key, versionForJobId(versionId, etag));
  return { bucket, key, versionId, etag, size, time, jobId, inlineRequest, batch };
}

// ---------------------------------------------------------------- the request

export type RequestSource = 'inline' | 'sidecar' | 'metadata' | 'none';

/**
 * The request JSON of an upload: the sidecar if there is one (it wins), else the `request` user
 * metadata, else `{}` (all defaults). Throws InvalidRequest for empty, oversized, non-UTF-8 or
 * non-JSON text.
 */
export function readRequestJson(
  sidecar: Uint8Array | null,
  metadata: Readonly<Record<string, string>>,
  where: { readonly sidecar: string; readonly metadata: string },
): { json: unknown; source: RequestSource; where: string } {
  let text: string;
  let source: RequestSource;
  let at: string;
  if (sidecar !== null) {
    source = 'sidecar';
    at = where.sidecar;
    if (sidecar.length > MAX_SIDECAR_BYTES) throw new InvalidRequest(`${at}: ${sidecar.length} bytes is over the limit of ${MAX_SIDECAR_BYTES} bytes`);
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(sidecar);
    } catch {
      throw new InvalidRequest(`${at}: not valid UTF-8 text`);
    }
  } else if (metadata[METADATA_REQUEST_KEY] !== undefined) {
    source = 'metadata';
    at = where.metadata;
    text = metadata[METADATA_REQUEST_KEY];
  } else {
    return { json: {}, source: 'none', where: where.sidecar };
  }
  if (text.trim() === '') throw new InvalidRequest(`${at}: empty; expected a JSON object (use {} for all defaults)`);
  try {
    return { json: parseJsonText(text), source, where: at };
  } catch (e) {
    // Kind and position only: V8's own message quotes the text, often the prompt (docs/security.md).
    if (e instanceof JsonSyntaxError) throw new InvalidRequest(`${at}: not valid JSON (${e.message})`);
    throw e;
  }
}


/**
 * zod's issue lines quote the first 40 characters of a bad string. For the prompt that is the
 * user's text, and the reason travels on: the Lambda runtime logs a thrown error's message, and
 * the failure record and its notification carry it. So the prompt's value is cut from its line
 * (what was wrong with it stays).
 */
export function withoutPromptValue(reason: string): string {
  return reason.replace(/^(\s*- prompt: .*?) \(got ".*$/gm, '$1 (value not shown)');
}

function toInvalidRequest(e: unknown): never {
  // No `cause`: it would carry the unredacted message into error serialisers.
  if (e instanceof InvalidRequestError) throw new InvalidRequest(withoutPromptValue(e.message));
  throw e;
}

/** parseJobRequest, with its error as InvalidRequest. */
export function parseRequest(json: unknown, where: string): ParsedRequest {
  let request: JobRequest;
  try {
    request = parseJobRequest(json, where);
  } catch (e) {
    toInvalidRequest(e);
  }
  const explicit = new Set(typeof json === 'object' && json !== null ? Object.keys(json) : []);
  return { request, explicit };
}

// ---------------------------------------------------------------- the model

/** The manifest key of a model: `models/<id>/manifest.json`. */
export function manifestKey(modelId: string): string {
  return `${modelPrefix(modelId)}manifest.json`;
}

/**
 * Checks a model's manifest text: JSON, the bundle contract, and that it is the model asked for.
 * `text` null means there is none. Every problem is ModelNotFound (the model is not usable).
 */
export function checkManifest(text: string | null, modelId: string, where: string): Manifest {
  if (text === null) throw new ModelNotFound(`model '${modelId}': no manifest at ${where}`);
  let json: unknown;
  try {
    json = parseJsonText(text);
  } catch (e) {
    if (e instanceof JsonSyntaxError) throw new ModelNotFound(`model '${modelId}': ${where} is not valid JSON (${e.message})`);
    throw e;
  }
  let m: Manifest;
  try {
    m = parseManifest(json, where);
  } catch (e) {
    if (e instanceof ManifestError) throw new ModelNotFound(`model '${modelId}': ${e.message}`, { cause: e });
    throw e;
  }
  if (m.id !== modelId) throw new ModelNotFound(`model '${modelId}': ${where} is the manifest of '${m.id}'`);
  return m;
}

// ---------------------------------------------------------------- resolution

/** A seed in [0, 2^48) that depends only on the job id: a retried Validate records the same seed. */
export function seedForJob(jobId: string): number {
  return createHash('sha256').update(`seed\u0000${jobId}`).digest().readUIntBE(0, 6);
}

/** shared/src/schemas/resolve.ts, with its errors as Validate's typed errors. */
export function resolveRequest(parsed: ParsedRequest, manifest: Manifest, chooseSeed: () => number, where: string): ResolvedRequest {
  try {
    return resolveShared(parsed, manifest, chooseSeed, where);
  } catch (e) {
    if (e instanceof InvalidRequestError) throw new InvalidRequest(e.message, { cause: e });
    if (e instanceof StatisticsRequiredError) throw new StatisticsNotFound(e.message, { cause: e });
    throw e;
  }
}

// ---------------------------------------------------------------- the job spec

/** The job spec Validate returns (and writes as `jobs/<jobId>/request.json`). */
export function buildJobSpec(upload: UploadRef, size: number, resolved: ResolvedRequest, createdAt: string, resolution?: { readonly height: number; readonly width: number }): JobSpec {
  const keys = jobKeys(upload.jobId);
  return JobSpec.parse({
    jobId: upload.jobId,
    bucket: upload.bucket,
    input: { key: upload.key, versionId: upload.versionId, etag: upload.etag, size },
    imageKey: keys.normalisedImage,
    // The schema's SafeRelativeKey has no trailing '/': `models/<id>`.
    modelPrefix: modelPrefix(resolved.model).replace(/\/$/, ''),
    request: resolved,
    // The workflow places the job on a GPU fleet by family and resolution.
    ...(resolution ? { resolution: { height: resolution.height, width: resolution.width } } : {}),
    workPrefix: keys.work,
    outputPrefix: keys.output,
    createdAt,
  });
}

/** Where an inline request came from, for error messages: the manifest line, else the image key. */
export function inlineWhere(u: UploadRef): string {
  const b = u.batch;
  if (b !== null && typeof b.manifestKey === 'string' && typeof b.line === 'number') return `${b.manifestKey} line ${b.line}`;
  return `${u.key} (inline request)`;
}

/** Where a request came from, for error messages: the sidecar key or the upload's metadata. */
export function requestWhere(key: string, sidecar: string): { sidecar: string; metadata: string } {
  return { sidecar, metadata: `${key} (x-amz-meta-${METADATA_REQUEST_KEY})` };
}

/**
 * Refuses a sidecar written after the image (RequestChanged). The image is read at the version or
 * ETag its event names, but the sidecar cannot be pinned that way: neither the S3 event nor the
 * workflow input names a version of it. A sidecar newer than the image (a second request written
 * over the first, or one that arrived only after the upload) is not the request the upload was
 * made with, so it is refused rather than silently becoming this job's request. S3's
 * Last-Modified has one-second resolution: a sidecar rewritten within the image's own second
 * cannot be told apart and is used. Times a server does not send are not compared.
 */
export function checkSidecarNotNewer(sidecar: string, sidecarTime: Date | null, image: string, imageTime: Date | null): void {
  if (sidecarTime === null || imageTime === null || sidecarTime.getTime() <= imageTime.getTime()) return;
  throw new RequestChanged(
    `${sidecar}: written at ${sidecarTime.toISOString()}, after the image ${image} (${imageTime.toISOString()}); ` +
      'a job uses the request as it was when its image was uploaded. Upload the sidecar first, then upload the image again (a new job)',
  );
}
