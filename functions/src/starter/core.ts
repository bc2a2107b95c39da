/**
 * The starter's logic, pure but for the Step Functions client it is handed (handler.ts is the
 * Lambda adapter).
 *
 * The starter: target of the EventBridge rules on object-created events. EventBridge
 * cannot hash, and a Step Functions execution name is the only thing AWS guarantees unique, so the
 * starter derives the name from the object (`jobIdFor(bucket, key, version)`) and starts the
 * workflow under it. A duplicate delivery of the same event gets ExecutionAlreadyExists, which is
 * the desired outcome (one upload → one run), so it counts as success.
 *
 * `prepareItem`: first state of each batch-production item. It checks one manifest line
 * and turns it into the generation workflow's input, with a job id derived from the manifest's
 * key, version and line number (so a re-driven map run cannot start a second run for a line).
 */
import { StartExecutionCommand } from '@aws-sdk/client-sfn';
import type { SFNClient } from '@aws-sdk/client-sfn';
import { z } from 'zod';
import { isSafeRelativeKey } from '#shared/schemas';
import { IMAGE_EXTENSIONS, PREFIX, jobIdFor } from '#shared/schemas';
import { InvalidManifestLine } from '../errors.ts';

/** The `detail` of an S3 "Object Created" event delivered by EventBridge (the fields used here). */
export interface ObjectCreatedDetail {
  readonly bucket: { readonly name: string };
  readonly object: {
    readonly key: string;
    readonly size?: number;
    readonly etag?: string;
    readonly 'version-id'?: string;
    readonly sequencer?: string;
  };
}

/** Where a job came from when a batch manifest started it. */
export interface BatchOrigin {
  readonly name: string;
  readonly manifestKey: string;
  /** 1-based line number in the manifest. */
  readonly line: number;
}

/**
 * Input of the generation workflow (and so of Validate). `key` is the object key exactly as the
 * event carried it (Validate URL-decodes and checks it). `request` is an inline job request
 * (batch manifests), null for uploads (Validate then reads the sidecar or object metadata).
 */
export interface GenerationInput {
  readonly jobId: string;
  readonly bucket: string;
  readonly key: string;
  readonly versionId: string | null;
  readonly etag: string | null;
  readonly size: number | null;
  readonly request: Readonly<Record<string, unknown>> | null;
  readonly batch: BatchOrigin | null;
}

/** Input of the batch-production workflow. */
export interface BatchInput {
  readonly batchId: string;
  readonly batchName: string;
  readonly bucket: string;
  readonly key: string;
  readonly versionId: string | null;
  readonly etag: string | null;
  /** `reports/<batchName>/`: the map run's results and summary.json go here. */
  readonly reportPrefix: string;
}

export type StartPlan =
  | { readonly kind: 'generation'; readonly name: string; readonly input: GenerationInput }
  | { readonly kind: 'batch'; readonly name: string; readonly input: BatchInput }
  | { readonly kind: 'ignored'; readonly reason: string };

function hasImageExtension(key: string): boolean {
  const lower = key.toLowerCase();
  return IMAGE_EXTENSIONS.some((e) => lower.endsWith(e));
}

/**
 * Decides what an object-created event starts. The version that makes the name unique is the
 * S3 version id (the bucket is versioned); without one (versioning suspended) the ETag, so that a
 * re-upload of identical bytes is treated as the same job.
 */
export function planStart(detail: ObjectCreatedDetail): StartPlan {
  const bucket = detail.bucket.name;
  const { key } = detail.object;
  const versionId = detail.object['version-id'] ?? null;
  const etag = detail.object.etag ?? null;
  const version = versionId ?? etag ?? detail.object.sequencer ?? '';
  const name = jobIdFor(bucket, key, version);
  if (key.startsWith(PREFIX.inputs) && hasImageExtension(key)) {
    const input: GenerationInput = { jobId: name, bucket, key, versionId, etag, size: detail.object.size ?? null, request: null, batch: null };
    return { kind: 'generation', name, input };
  }
  if (key.startsWith(PREFIX.batches) && key.toLowerCase().endsWith('.jsonl')) {
    const stem = key.slice(PREFIX.batches.length, key.length - '.jsonl'.length);
    // The report prefix must be a safe key; an odd manifest name falls back to the batch id.
    const batchName = isSafeRelativeKey(stem) ? stem : name;
    const input: BatchInput = { batchId: name, batchName, bucket, key, versionId, etag, reportPrefix: `${PREFIX.reports}${batchName}/` };
    return { kind: 'batch', name, input };
  }
  return { kind: 'ignored', reason: `key '${key}' is neither an image under ${PREFIX.inputs} nor a .jsonl manifest under ${PREFIX.batches}` };
}

export type StartOutcome = 'started' | 'duplicate';

/** Starts an execution; an execution of that name already existing means this event was a duplicate. */
export async function startNamedExecution(sfn: Pick<SFNClient, 'send'>, stateMachineArn: string, name: string, input: unknown): Promise<StartOutcome> {
  try {
    await sfn.send(new StartExecutionCommand({ stateMachineArn, name, input: JSON.stringify(input) }));
    return 'started';
  } catch (e) {
    if (e instanceof Error && e.name === 'ExecutionAlreadyExists') return 'duplicate';
    throw e;
  }
}

/** What the batch-production map hands each item (see infra/lib/workflows/batch.ts). */
export interface ManifestItem {
  readonly bucket: string;
  readonly manifestKey: string;
  readonly manifestVersion: string | null;
  readonly batchName: string;
  /** 0-based position in the manifest ($$.Map.Item.Index). */
  readonly index: number;
  /** The parsed JSON line. */
  readonly line: unknown;
}

/** One manifest line: an image already in the bucket and an optional job request for it. */
export const ManifestLine = z.strictObject({
  image: z.string().min(1).max(1024),
  request: z.record(z.string(), z.unknown()).optional(),
});

/**
 * Checks one manifest line and builds the generation input for it. The image must be under
 * inputs/ or batches/ (where Validate may read) and be a safe key; the request itself is checked
 * by Validate like any sidecar, so that both paths report request errors the same way.
 */
export function prepareItem(item: ManifestItem): GenerationInput {
  const where = `${item.manifestKey} line ${item.index + 1}`;
  const r = ManifestLine.safeParse(item.line);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new InvalidManifestLine(`${where}: ${issues} (expected {"image": "<key under ${PREFIX.inputs} or ${PREFIX.batches}>", "request": {…}})`);
  }
  const { image, request } = r.data;
  const underAllowed = image.startsWith(PREFIX.inputs) || image.startsWith(PREFIX.batches);
  if (!underAllowed || !isSafeRelativeKey(image)) {
    throw new InvalidManifestLine(
      `${where}: image '${image}' must be a key under ${PREFIX.inputs} or ${PREFIX.batches} made of '/'-separated segments of A-Z a-z 0-9 . _ - (each starting with a letter or digit)`,
    );
  }
  const jobId = jobIdFor(item.bucket, `${item.manifestKey}#${item.index}`, item.manifestVersion ?? '');
  return {
    jobId,
    bucket: item.bucket,
    key: image,
    versionId: null,
    etag: null,
    size: null,
    request: request ?? null,
    batch: { name: item.batchName, manifestKey: item.manifestKey, line: item.index + 1 },
  };
}

