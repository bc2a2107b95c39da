/**
 * The job request (docs/design.md §5.1): what an upload asks for. Every field is optional in the input.
 * A field either has a fixed default, or defaults to null, meaning "the model's default from its
 * manifest" (resolved by whoever knows the model). Documented in docs/contracts.md.
 */
import { z } from 'zod';
import type { SchemaIssue } from './common.ts';
import { arrayOf, ContractError, ModelId, parseOrThrow, SafeRelativeKey } from './common.ts';
import { FAMILY_FIELDS, FAMILY_NAMES, FAMILY_TABLE } from '#shared/sampler';
import type { Family } from './family.ts';

export const OUTPUT_FORMATS = ['mp4', 'gif', 'webp', 'png-frames', 'latent-npy'] as const;
export const OutputFormat = z.enum(OUTPUT_FORMATS);
export type OutputFormat = z.infer<typeof OutputFormat>;

/** 'paper' implements the paper; 'reference' reproduces the authors' code's quirks (docs/design.md §4). */
export const Compat = z.enum(['paper', 'reference']);
export type Compat = z.infer<typeof Compat>;

export const DEFAULT_MODEL = 'demo';
export const DEFAULT_OUTPUTS: readonly OutputFormat[] = ['mp4', 'gif'];
export const MAX_PROMPT_CHARS = 2000;

/**
 * The value ranges of the model-tunable fields, without defaults; the manifest's `defaults`
 * reuse them so a model cannot default to a value a request could not ask for.
 */
export const TunableFields = {
  steps: z.int().min(1).max(1000),
  /** M (integer 1–1000) for VP models, σ_max (> 0) for SVD; the family check tells them apart. */
  start: z.number().gt(0).max(1000),
  analyticInit: z.boolean(),
  /** A statistics id (one key segment) or a key relative to the statistics prefix. */
  statistics: SafeRelativeKey,
  guidanceScale: z.number().min(0).max(50),
  imageGuidanceScale: z.number().min(0).max(50),
  guidanceRescale: z.number().min(0).max(1),
  eta: z.number().min(0).max(1),
  fps: z.int().min(1).max(60),
  frameStride: z.int().min(1).max(64),
  motionBucketId: z.int().min(0).max(255),
  noiseAugStrength: z.number().min(0).max(1),
  minGuidanceScale: z.number().min(0).max(50),
  maxGuidanceScale: z.number().min(0).max(50),
};

export const Outputs = arrayOf(OutputFormat, 1)
  .refine((a) => new Set(a).size === a.length, { error: 'must not list a format twice' });

const t = TunableFields;

export const JobRequest = z
  .strictObject({
    model: ModelId.default(DEFAULT_MODEL),
    prompt: z.string().max(MAX_PROMPT_CHARS).default(''),
    steps: t.steps.nullable().default(null),
    start: t.start.nullable().default(null),
    analyticInit: t.analyticInit.default(true),
    statistics: t.statistics.nullable().default(null),
    guidanceScale: t.guidanceScale.nullable().default(null),
    imageGuidanceScale: t.imageGuidanceScale.nullable().default(null),
    guidanceRescale: t.guidanceRescale.nullable().default(null),
    eta: t.eta.nullable().default(null),
    /** Null: chosen when the request is validated, and recorded with the job. */
    seed: z.int().min(0).nullable().default(null), // z.int() stops at 2^53 − 1
    frames: z.int().min(1).max(64).nullable().default(null),
    fps: t.fps.nullable().default(null),
    frameStride: t.frameStride.nullable().default(null),
    motionBucketId: t.motionBucketId.nullable().default(null),
    noiseAugStrength: t.noiseAugStrength.nullable().default(null),
    minGuidanceScale: t.minGuidanceScale.nullable().default(null),
    maxGuidanceScale: t.maxGuidanceScale.nullable().default(null),
    // A function, so each parse gets its own array.
    outputs: Outputs.default(() => [...DEFAULT_OUTPUTS]),
    compat: Compat.default('paper'),
  })
  .superRefine((r, ctx) => {
    if (r.minGuidanceScale !== null && r.maxGuidanceScale !== null && r.minGuidanceScale > r.maxGuidanceScale) {
      ctx.addIssue({
        code: 'custom',
        path: ['minGuidanceScale'],
        message: `must not exceed maxGuidanceScale (${r.maxGuidanceScale})`,
        input: r.minGuidanceScale,
      });
    }
  });

export type JobRequestInput = z.input<typeof JobRequest>;
export type JobRequest = z.output<typeof JobRequest>;

export const JOB_REQUEST_FIELDS: readonly string[] = Object.keys(JobRequest.shape);

/** Thrown for a request that does not fit the contract; lists every issue with its field. */
export class InvalidRequestError extends ContractError {
  override readonly name = 'InvalidRequestError';
  constructor(where: string, issues: readonly SchemaIssue[]) {
    super(where, 'invalid job request', issues);
  }
}

/** Validates a parsed JSON request and fills defaults; `where` names the upload in errors. */
export function parseJobRequest(json: unknown, where: string): JobRequest {
  return parseOrThrow(JobRequest, json, (issues) => new InvalidRequestError(where, issues), JOB_REQUEST_FIELDS);
}

/**
 * Which families each family-specific field applies to (from the `fields` of the defaults table). A
 * field set (non-null) for a family it does not apply to is an error rather than silently ignored.
 */
export const FIELD_FAMILIES: Readonly<Record<string, readonly Family[]>> = Object.freeze(
  Object.fromEntries(FAMILY_FIELDS.map((field) => [field, FAMILY_NAMES.filter((f) => FAMILY_TABLE[f].fields.includes(field))])),
);

/**
 * Family-dependent checks on the given (non-null) fields of a request or of manifest defaults:
 * fields that do not apply to the family, M not an integer for VP models, more steps than M,
 * and a text prompt for SVD (it has no text conditioning). Returns the issues; empty if fine.
 */
export function familyIssues(fields: Readonly<Record<string, unknown>>, family: Family): SchemaIssue[] {
  const issues: SchemaIssue[] = [];
  for (const [field, families] of Object.entries(FIELD_FAMILIES)) {
    const v = fields[field];
    if (v !== null && v !== undefined && !families.includes(family)) {
      issues.push({ path: field, message: `does not apply to ${family} models (only ${families.join(', ')})` });
    }
  }
  const { start, steps, prompt } = fields;
  if (FAMILY_TABLE[family].kind === 'vp-ddim' && typeof start === 'number') {
    if (!Number.isInteger(start)) {
      issues.push({ path: 'start', message: `must be an integer step M (1–1000) for ${family} models (got ${start})` });
    } else if (typeof steps === 'number' && steps > start) {
      issues.push({ path: 'steps', message: `must not exceed start M = ${start} for ${family} models (got ${steps})` });
    }
  }
  if (!FAMILY_TABLE[family].textPrompt && typeof prompt === 'string' && prompt !== '') {
    issues.push({ path: 'prompt', message: `${family} models take no text prompt; leave it empty` });
  }
  return issues;
}

/** Throws InvalidRequestError if the request does not fit the model's family (see familyIssues). */
export function checkJobRequestForFamily(req: JobRequest, family: Family, where: string): void {
  const issues = familyIssues(req, family);
  if (issues.length > 0) throw new InvalidRequestError(where, issues);
}
