/**
 * The job-request flags shared by `cil local run` and `cil submit`: a few common fields as flags,
 * anything else from a JSON file (the sidecar contract, docs/contracts.md). The request is checked
 * here with the same schema Validate uses, so a typo fails before anything is uploaded.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseJsonText } from '#shared/formats';
import { parseJobRequest } from '#shared/schemas';
import type { JobRequest } from '#shared/schemas';
import { intArg } from './args.ts';
import { UsageError } from './errors.ts';

/** The job-request flags of `cil local run`, `cil submit` and `cil generate` (each offers some of them). */
export interface RequestFlags {
  /** A job request (sidecar JSON) file: its fields, then the flags over them. */
  readonly request?: string;
  readonly model?: string;
  readonly prompt?: string;
  readonly steps?: number;
  readonly start?: number;
  /** Only false (an explicit --no-analytic-init) is a request: true leaves the model's default. */
  readonly analyticInit?: boolean;
  readonly guidance?: number;
  readonly imageGuidance?: number;
  readonly guidanceRescale?: number;
  readonly eta?: number;
  readonly seed?: number;
  readonly frames?: number;
  readonly fps?: number;
  readonly frameStride?: number;
  readonly motionBucket?: number;
  readonly noiseAug?: number;
  readonly minGuidance?: number;
  readonly maxGuidance?: number;
  readonly compat?: 'paper' | 'reference';
}

/** Which job-request field each flag sets (docs/contracts.md names the fields), in the order a request lists them. */
const FLAG_FIELDS: readonly (readonly [Exclude<keyof RequestFlags, 'request' | 'analyticInit'>, keyof JobRequest])[] = [
  ['prompt', 'prompt'],
  ['model', 'model'],
  ['steps', 'steps'],
  ['start', 'start'],
  ['guidance', 'guidanceScale'],
  ['imageGuidance', 'imageGuidanceScale'],
  ['guidanceRescale', 'guidanceRescale'],
  ['eta', 'eta'],
  ['seed', 'seed'],
  ['frames', 'frames'],
  ['fps', 'fps'],
  ['frameStride', 'frameStride'],
  ['motionBucket', 'motionBucketId'],
  ['noiseAug', 'noiseAugStrength'],
  ['minGuidance', 'minGuidanceScale'],
  ['maxGuidance', 'maxGuidanceScale'],
  ['compat', 'compat'],
];

export function addRequestOptions(cmd: Command): Command {
  return cmd
    .option('--prompt <text>', 'text prompt')
    .option('--model <id>', 'model id (models/<id>/ in the bucket; default: demo)')
    .option('--steps <n>', 'sampling steps', intArg('--steps', 1, 1000))
    .option('--seed <n>', 'seed (default: derived from the job id)', intArg('--seed', 0))
    .option('--request <file.json>', 'a job request (sidecar JSON); the flags above override its fields');
}

/**
 * The request the flags ask for: the --request file's fields, then each flag given over them (only
 * those: the rest are the model's defaults). Not validated: `requestFromFlags` also checks it.
 */
export function requestFields(o: RequestFlags): Record<string, unknown> {
  let r: Record<string, unknown> = {};
  if (o.request !== undefined) {
    let j: unknown;
    try {
      j = parseJsonText(readFileSync(o.request, 'utf8'));
    } catch (e) {
      throw new UsageError(`--request ${o.request}: not a readable JSON file (${(e as Error).message})`);
    }
    if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new UsageError(`--request ${o.request}: must hold a JSON object`);
    r = { ...(j as Record<string, unknown>) };
  }
  for (const [flag, field] of FLAG_FIELDS) {
    if (o[flag] !== undefined) r[field] = o[flag];
  }
  if (o.analyticInit === false) r.analyticInit = false;
  return r;
}

/** `requestFields`, checked with the schema Validate uses: a typo fails here (UsageError), before anything is uploaded. */
export function requestFromFlags(o: RequestFlags): Record<string, unknown> {
  const r = requestFields(o);
  try {
    parseJobRequest(r, 'request');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  return r;
}
