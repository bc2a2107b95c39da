/**
 * Resolving a job request against its model: every null field takes the manifest's default
 * (`frames` from manifest.frames, `fps` and `analyticInit` falling back to REQUEST_FALLBACKS of the
 * defaults table in `#shared/sampler`), fields that do not apply to
 * the family stay null, `statistics` becomes the statistics file's key (null when Analytic-Init is
 * off), and a null seed is drawn with `chooseSeed`. One implementation for Validate (Lambda),
 * `cil validate` and `cil generate`, so all resolve alike.
 */
import { randomInt } from 'node:crypto';
import { formatIssues, toSchemaIssues } from './common.ts';
import type { SchemaIssue } from './common.ts';
import { FIELD_FAMILIES, familyIssues, InvalidRequestError } from './jobRequest.ts';
import type { JobRequest } from './jobRequest.ts';
import type { Manifest } from './manifest.ts';
import { ResolvedRequest } from './jobSpec.ts';
import { statisticsKey } from './layout.ts';
import type { Family } from './family.ts';
import { REQUEST_FALLBACKS } from '#shared/sampler';

/** fps when neither the request nor the model sets one (REQUEST_FALLBACKS.fps, named for Validate). */
export const FALLBACK_FPS: number = REQUEST_FALLBACKS.fps;

/** A request after zod, with the fields its JSON actually set (to tell an explicit value from a default). */
export interface ParsedRequest {
  readonly request: JobRequest;
  readonly explicit: ReadonlySet<string>;
}

/** Analytic-Init is on but neither the request nor the model names statistics. */
export class StatisticsRequiredError extends Error {
  override readonly name = 'StatisticsRequiredError';
}

/** A fresh seed in [0, 2^48) from the OS CSPRNG. */
export function chooseSeed(): number {
  return randomInt(0, 2 ** 48 - 1);
}

function applies(field: string, family: Family): boolean {
  const fams = FIELD_FAMILIES[field];
  return fams === undefined || fams.includes(family);
}

/**
 * Throws InvalidRequestError (message "<where>: invalid job request for model '<id>' (<family>)…")
 * for family mismatches, before and after filling defaults (`steps` may exceed a default M), and
 * StatisticsRequiredError when Analytic-Init is on without statistics. `analyticInit` left out of
 * the request follows the manifest's `defaults.analyticInit` (true when absent).
 */
export function resolveRequest(parsed: ParsedRequest, manifest: Manifest, seed: () => number, where: string): ResolvedRequest {
  const { request: req, explicit } = parsed;
  const family = manifest.family;
  const fail = (issues: readonly SchemaIssue[], note = ''): never => {
    const e = new InvalidRequestError(where, issues);
    e.message = formatIssues(where, `invalid job request for model '${manifest.id}' (${family})${note}`, issues);
    throw e;
  };
  if (req.model !== manifest.id) fail([{ path: 'model', message: `names '${req.model}', but the manifest is '${manifest.id}'` }]);
  const given = familyIssues(req, family);
  if (given.length > 0) fail(given);

  const d = manifest.defaults;
  const analyticInit = explicit.has('analyticInit') ? req.analyticInit : (d.analyticInit ?? REQUEST_FALLBACKS.analyticInit);
  const statisticsId = req.statistics ?? d.statistics ?? null;
  if (analyticInit && statisticsId === null) {
    throw new StatisticsRequiredError(
      `${where}: Analytic-Init is on but model '${manifest.id}' names no default statistics; set "statistics" or "analyticInit": false`,
    );
  }
  const pick = <K extends keyof typeof d & keyof JobRequest>(field: K): number | null => {
    if (!applies(field, family)) return null;
    const v = req[field] ?? d[field] ?? null;
    return typeof v === 'number' ? v : null;
  };
  const resolved = {
    model: manifest.id,
    family,
    prompt: req.prompt,
    steps: req.steps ?? d.steps,
    start: req.start ?? d.start,
    analyticInit,
    statistics: analyticInit && statisticsId !== null ? statisticsKey(statisticsId) : null,
    guidanceScale: pick('guidanceScale'),
    imageGuidanceScale: pick('imageGuidanceScale'),
    guidanceRescale: pick('guidanceRescale'),
    eta: pick('eta'),
    seed: req.seed ?? seed(),
    frames: req.frames ?? manifest.frames,
    fps: req.fps ?? d.fps ?? REQUEST_FALLBACKS.fps,
    frameStride: pick('frameStride'),
    motionBucketId: pick('motionBucketId'),
    noiseAugStrength: pick('noiseAugStrength'),
    minGuidanceScale: pick('minGuidanceScale'),
    maxGuidanceScale: pick('maxGuidanceScale'),
    outputs: [...req.outputs],
    compat: req.compat,
  };

  // Checks that only make sense once the defaults are in.
  const issues = familyIssues(resolved, family).map((i) => ({ ...i, message: `${i.message} (after filling model defaults)` }));
  const s = manifest.schedule;
  if (s.kind === 'vp-ddim' && resolved.start > s.timesteps) {
    issues.push({ path: 'start', message: `must not exceed the model's schedule.timesteps (${s.timesteps}) (got ${resolved.start})` });
  }
  if (s.kind === 'edm-euler' && resolved.start <= s.sigmaMin) {
    issues.push({ path: 'start', message: `σ_max must exceed the model's schedule.sigmaMin (${s.sigmaMin}) (got ${resolved.start})` });
  }
  if (resolved.minGuidanceScale !== null && resolved.maxGuidanceScale !== null && resolved.minGuidanceScale > resolved.maxGuidanceScale) {
    issues.push({ path: 'minGuidanceScale', message: `must not exceed maxGuidanceScale (${resolved.maxGuidanceScale}) (after filling model defaults)` });
  }
  if (issues.length > 0) fail(issues);
  const r = ResolvedRequest.safeParse(resolved, { reportInput: true });
  if (!r.success) return fail(toSchemaIssues(r.error.issues));
  return r.data;
}
