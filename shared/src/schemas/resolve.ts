/**
 * Resolving a job request against its model: every null field takes the manifest's default (or
 * the family's reference default), the seed is chosen once when absent, and family rules are
 * checked. Used by Validate (Lambda), `cil validate` and `cil generate`, so all three resolve alike.
 */
import { randomInt } from 'node:crypto';
import { FAMILIES } from '../families.ts';
import type { JobRequest } from './jobRequest.ts';
import { checkJobRequestForFamily, InvalidRequestError } from './jobRequest.ts';
import type { Manifest } from './manifest.ts';
import type { ResolvedRequest } from './jobSpec.ts';
import { statisticsKey } from './layout.ts';

/** A fresh seed in [0, 2^48) (uniform, from the OS CSPRNG). */
export function chooseSeed(): number {
  return randomInt(0, 2 ** 48 - 1);
}

export function resolveRequest(req: JobRequest, m: Manifest, where: string, seed: () => number = chooseSeed): ResolvedRequest {
  checkJobRequestForFamily(req, m.family, where);
  if (req.model !== m.id) throw new InvalidRequestError(where, [{ path: 'model', message: `names '${req.model}' but the bundle is '${m.id}'` }]);
  const d = m.defaults;
  const fam = FAMILIES[m.family];
  const vp = fam.kind === 'vp-ddim';
  const pick = <T>(r: T | null, md: T | undefined, fallback: T | null): T | null => r ?? md ?? fallback;
  const steps = req.steps ?? d.steps;
  const start = req.start ?? d.start;
  const analyticInit = req.analyticInit && d.analyticInit !== false ? req.analyticInit : false;
  const statsId = analyticInit ? (req.statistics ?? d.statistics ?? null) : null;
  if (analyticInit && statsId === null) {
    throw new InvalidRequestError(where, [{ path: 'statistics', message: `Analytic-Init is on but model '${m.id}' names no default statistics; give 'statistics' or set analyticInit false` }]);
  }
  if (vp && (!Number.isInteger(start) || steps > start)) {
    throw new InvalidRequestError(where, [{ path: 'steps', message: `must not exceed start M = ${start} (and M must be an integer) for ${m.family} models` }]);
  }
  if (!vp && m.schedule.kind === 'edm-euler' && start <= m.schedule.sigmaMin) {
    throw new InvalidRequestError(where, [{ path: 'start', message: `σ_max must exceed the model's σ_min (${m.schedule.sigmaMin}), got ${start}` }]);
  }
  return {
    model: m.id,
    family: m.family,
    prompt: req.prompt,
    steps,
    start,
    analyticInit,
    statistics: statsId === null ? null : statisticsKey(statsId),
    guidanceScale: vp ? pick(req.guidanceScale, d.guidanceScale, fam.kind === 'vp-ddim' ? fam.guidanceScale : null) : null,
    imageGuidanceScale: m.family === 'dynamicrafter' ? pick(req.imageGuidanceScale, d.imageGuidanceScale, null) : null,
    guidanceRescale: vp ? pick(req.guidanceRescale, d.guidanceRescale, fam.kind === 'vp-ddim' ? fam.guidanceRescale : null) : null,
    eta: vp ? pick(req.eta, d.eta, fam.kind === 'vp-ddim' ? fam.eta : null) : null,
    seed: req.seed ?? seed(),
    frames: req.frames ?? m.frames,
    fps: req.fps ?? d.fps ?? (m.family === 'svd' ? 7 : 8),
    frameStride: m.family === 'dynamicrafter' ? pick(req.frameStride, d.frameStride, 24) : null,
    motionBucketId: m.family === 'svd' ? pick(req.motionBucketId, d.motionBucketId, 127) : null,
    noiseAugStrength: m.family === 'svd' ? pick(req.noiseAugStrength, d.noiseAugStrength, 0.02) : null,
    minGuidanceScale: m.family === 'svd' ? pick(req.minGuidanceScale, d.minGuidanceScale, fam.kind === 'edm-euler' ? fam.minGuidanceScale : null) : null,
    maxGuidanceScale: m.family === 'svd' ? pick(req.maxGuidanceScale, d.maxGuidanceScale, fam.kind === 'edm-euler' ? fam.maxGuidanceScale : null) : null,
    outputs: [...req.outputs],
    compat: req.compat,
  };
}
