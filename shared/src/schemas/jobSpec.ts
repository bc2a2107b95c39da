/**
 * The job spec: what Validate hands to Generate (the Batch worker) and Post-process, through Step
 * Functions. Small on purpose — S3 keys and scalars, never tensors (Step Functions payloads are
 * limited to 256 KB).
 */
import { z } from 'zod';
import { ModelId, SafeRelativeKey, formatIssues, parseOrThrow } from './common.ts';
import { Family } from './family.ts';
import { JOB_ID_PATTERN } from './layout.ts';
import { Compat, OutputFormat } from './jobRequest.ts';

const S3Key = z.string().min(1).max(1024);

/** A job request with every field resolved for its model (no nulls left). */
export const ResolvedRequest = z.strictObject({
  model: ModelId,
  family: Family,
  prompt: z.string().max(2000),
  steps: z.int().min(1).max(1000),
  start: z.number().gt(0).max(1000),
  analyticInit: z.boolean(),
  /** Key of the statistics file, null when analyticInit is false. */
  statistics: S3Key.nullable(),
  guidanceScale: z.number().min(0).max(50).nullable(),
  imageGuidanceScale: z.number().min(0).max(50).nullable(),
  guidanceRescale: z.number().min(0).max(1).nullable(),
  eta: z.number().min(0).max(1).nullable(),
  seed: z.int().min(0).max(Number.MAX_SAFE_INTEGER),
  frames: z.int().min(1).max(64),
  fps: z.int().min(1).max(60),
  frameStride: z.int().min(1).max(64).nullable(),
  motionBucketId: z.int().min(0).max(255).nullable(),
  noiseAugStrength: z.number().min(0).max(1).nullable(),
  minGuidanceScale: z.number().min(0).max(50).nullable(),
  maxGuidanceScale: z.number().min(0).max(50).nullable(),
  outputs: z.array(OutputFormat).min(1),
  compat: Compat,
});
export type ResolvedRequest = z.infer<typeof ResolvedRequest>;

export const JobSpec = z.strictObject({
  jobId: z.string().regex(JOB_ID_PATTERN),
  bucket: z.string().min(3).max(63),
  /** The original upload (never modified or deleted by the pipeline). */
  input: z.strictObject({ key: S3Key, versionId: z.string().max(1024).nullable(), etag: z.string().max(256).nullable(), size: z.int().min(0) }),
  /** Validate's normalised RGB PNG at the model resolution. */
  imageKey: S3Key,
  /** Key prefix of the model bundle, without a trailing '/': `models/<id>` (so `${modelPrefix}/manifest.json`). */
  modelPrefix: SafeRelativeKey,
  request: ResolvedRequest,
  /**
   * The model's resolution (its manifest's): with the family it picks the GPU fleet the job runs
   * on (the generation workflow's SizeForModel). Optional only so that specs written before it
   * still parse; Validate always sets it.
   */
  resolution: z.strictObject({ height: z.int().min(8).max(8192), width: z.int().min(8).max(8192) }).optional(),
  /** Where the worker writes frames, metadata and checkpoints (`jobs/<jobId>/`). */
  workPrefix: S3Key,
  /** Where post-process writes the finished outputs (`outputs/<jobId>/`). */
  outputPrefix: S3Key,
  createdAt: z.iso.datetime(),
});
export type JobSpec = z.infer<typeof JobSpec>;

export class JobSpecError extends Error {
  override readonly name = 'JobSpecError';
}

export function parseJobSpec(json: unknown, where: string): JobSpec {
  return parseOrThrow(JobSpec, json, (issues) => new JobSpecError(formatIssues(where, 'invalid job spec', issues)));
}
